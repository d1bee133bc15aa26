"""gt.txt folders, formula lists and InkML: every bad case from a small file in tmp_path, plus real CROHME files."""
import numpy as np
import pytest

from helpers import write_ink
from ocrlib import paths
from ocrlib.data.sources import InkExpression, Sample, iter_inkml, read_formula_list, read_gt, read_inkml
from ocrlib.errors import BadInput

# ---------------------------------------------------------------- read_gt


def make_folder(tmp_path, gt: bytes, images=("a.png", "b.png", "c.png"), **extra: str):
    folder = tmp_path / "set"
    (folder / "images").mkdir(parents=True)
    for name in images:
        (folder / "images" / name).write_bytes(b"png")
    (folder / "gt.txt").write_bytes(gt)
    for name, text in extra.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return folder


def test_read_gt_good_lines(tmp_path):
    folder = make_folder(tmp_path, "a.png\tx ^ { 2 }\nb.png\t\\frac { 1 } { 2 }\n\n".encode(),
                         source="b.png\thandwritten\n")
    samples, problems = read_gt(folder)
    assert problems == []
    assert samples == [Sample(folder / "images" / "a.png", ["x", "^", "{", "2", "}"], "printed"),
                       Sample(folder / "images" / "b.png", ["\\frac", "{", "1", "}", "{", "2", "}"], "handwritten")]


def test_read_gt_tolerates_bom_and_crlf(tmp_path):
    folder = make_folder(tmp_path, "\ufeffa.png\tx + 1\r\nb.png\ty\r\n".encode())
    samples, problems = read_gt(folder)
    assert problems == []
    assert [(s.image.name, s.tokens) for s in samples] == [("a.png", ["x", "+", "1"]), ("b.png", ["y"])]


@pytest.mark.parametrize("line, reason", [
    (b"c.png x + 1", "missing tab"),
    (b"c.png\t   ", "empty label"),
    (b"\tx", "empty image name"),
    (b"a.png\tz", "duplicate image (first on line 1)"),
    (b"missing.png\tx", "image file missing"),
    (b"../../etc/passwd\tx", "image path escapes the images folder"),
    (b"../gt.txt\tx", "image path escapes the images folder"),
    (b"/etc/passwd\tx", "absolute image path refused"),
    (b"C:\\images\\a.png\tx", "absolute image path refused"),
    (b"c.png\tx \xff", "not UTF-8"),
])
def test_read_gt_skips_and_reports_bad_lines(tmp_path, line, reason):
    folder = make_folder(tmp_path, b"a.png\tx\n" + line + b"\nb.png\ty\n")
    samples, problems = read_gt(folder)
    assert problems == [("gt.txt:2", reason)]
    assert [s.image.name for s in samples] == ["a.png", "b.png"]


def test_read_gt_refuses_symlink_out_of_folder(tmp_path):
    folder = make_folder(tmp_path, b"link.png\tx\n")
    (tmp_path / "outside.png").write_bytes(b"png")
    (folder / "images" / "link.png").symlink_to(tmp_path / "outside.png")
    assert read_gt(folder) == ([], [("gt.txt:1", "image path escapes the images folder")])


def test_read_gt_checks_tokens_txt_and_source_txt(tmp_path):
    folder = make_folder(tmp_path, b"a.png\tx + q\nb.png\tx\n",
                         tokens="<pad>\n<sos>\n<eos>\n<unk>\nx\n+\n", source="a.png\tmathtext\nbad line\n")
    samples, problems = read_gt(folder)
    assert [s.source for s in samples] == ["mathtext", "printed"]
    assert problems == [("source.txt:2", "missing tab"), ("tokens.txt", "1 tokens of gt.txt missing: q")]


def test_read_gt_without_gt_txt_raises(tmp_path):
    with pytest.raises(BadInput, match="no gt.txt"):
        read_gt(tmp_path)


# ---------------------------------------------------------------- read_formula_list


def test_read_formula_list(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes("\ufeffx^2\r\n\n  \\frac{1}{2}  \n\n".encode())
    assert read_formula_list(path) == ["x^2", "\\frac{1}{2}"]


@pytest.mark.parametrize("content, problem", [(None, "no such file"), (b"x\n\xff\n", "not UTF-8")])
def test_read_formula_list_bad_files(tmp_path, content, problem):
    path = tmp_path / "f.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadInput, match=problem):
        read_formula_list(path)


# ---------------------------------------------------------------- InkML

def test_read_inkml_fields(tmp_path):
    ink = read_inkml(write_ink(tmp_path))
    assert isinstance(ink, InkExpression)
    assert ink.truth == "x \\lt 1" and ink.writer == "w7" and ink.source == "KAIST"
    assert [s.shape for s in ink.strokes] == [(3, 2), (2, 2)]
    assert all(s.dtype == np.float32 for s in ink.strokes)
    np.testing.assert_allclose(ink.strokes[0], [[10, 20], [11.5, 21], [12, 22]])
    assert ink.trace_groups == [("x", [0]), ("\\lt", [1, 0])]


def test_read_inkml_third_channel_and_ints(tmp_path):
    path = write_ink(tmp_path, t0="10 20 100, 11 21 116", t1="1 2 0, 3 4 16", extra_channel='<channel name="T"/>')
    ink = read_inkml(path)
    np.testing.assert_array_equal(ink.strokes[0], [[10, 20], [11, 21]])


def test_read_inkml_channel_order_from_trace_format(tmp_path):
    path = tmp_path / "yx.inkml"
    path.write_text('<ink><traceFormat><channel name="T"/><channel name="Y"/><channel name="X"/></traceFormat>'
                    '<annotation type="truth">a</annotation><trace>0 5 7, 1 6 8</trace></ink>', encoding="utf-8")
    ink = read_inkml(path)  # no namespace, no trace ids, no $...$, no writer
    assert ink.truth == "a" and ink.writer is None and ink.trace_groups == []
    np.testing.assert_array_equal(ink.strokes[0], [[7, 5], [8, 6]])


@pytest.mark.parametrize("kwargs, problem", [
    (dict(t0="10 20, abc 21"), "trace 0: non-numeric point"),
    (dict(t0="10 20, nan 21"), "trace 0: NaN or infinite point"),
    (dict(t1="1 2, 3"), "trace 1: points must all have the same 2+ channels"),
    (dict(t1=" "), "trace 1: no points"),
    (dict(ref="5"), "traceGroup 11 refers to missing trace 5"),
    (dict(truth=""), "no truth annotation"),
    (dict(truth='<annotation type="truth">$ $</annotation>'), "no truth annotation"),
    (dict(truth="<annotation"), "malformed XML"),
])
def test_read_inkml_bad_files(tmp_path, kwargs, problem):
    path = write_ink(tmp_path, **kwargs)
    with pytest.raises(BadInput) as err:
        read_inkml(path)
    assert str(err.value).startswith(f"{path}: {problem}")


def test_read_inkml_without_traces_or_content(tmp_path):
    no_traces = tmp_path / "a.inkml"
    no_traces.write_text('<ink><annotation type="truth">x</annotation></ink>', encoding="utf-8")
    empty = tmp_path / "b.inkml"
    empty.write_bytes(b"")
    with pytest.raises(BadInput, match="no traces"):
        read_inkml(no_traces)
    with pytest.raises(BadInput, match="empty file"):
        read_inkml(empty)


def test_read_inkml_truth_optional(tmp_path):
    assert read_inkml(write_ink(tmp_path, truth=""), require_truth=False).truth is None


def test_read_inkml_latin1_bytes_in_utf8_document(tmp_path):
    path = write_ink(tmp_path)
    path.write_bytes(path.read_bytes().replace(b"w7", b"w\xb77"))  # a CROHME file holds such a byte
    assert read_inkml(path).writer == "w\u00b77"


def test_iter_inkml_yields_errors_in_order(tmp_path):
    write_ink(tmp_path, "A/1.inkml")
    write_ink(tmp_path, "A/2.inkml", t0="x y")
    write_ink(tmp_path, "B/3.inkml")
    items = list(iter_inkml(tmp_path))
    assert [type(i).__name__ for i in items] == ["InkExpression", "BadInput", "InkExpression"]
    assert items[1].path.endswith("2.inkml") and [i.source for i in (items[0], items[2])] == ["A", "B"]


def test_real_crohme_files():
    root = paths.crohme_inkml_dir()
    if root is None:
        pytest.skip("CROHME InkML absent (../shared/data)")
    for source in ("HAMEX", "KAIST", "MathBrush", "MfrDB", "expressmatch", "extension"):
        files = sorted((root / source).glob("*.inkml"))[:3]
        assert files, source
        for path in files:
            ink = read_inkml(path)
            assert ink.source == source and ink.truth and not ink.truth.startswith("$")
            assert ink.strokes and all(s.ndim == 2 and s.shape[1] == 2 and len(s) for s in ink.strokes)
            used = sorted(i for _, idx in ink.trace_groups for i in idx)
            assert used and set(used) <= set(range(len(ink.strokes)))
    first = read_inkml(root / "HAMEX" / "formulaire001-equation001.inkml")
    assert (first.truth, first.writer) == ("\\phi(x)", "depart001")
    assert [label for label, _ in first.trace_groups][:3] == ["\\phi", "(", "x"]
    with pytest.raises(BadInput, match="empty file"):  # the corpus' one file without truth is empty
        read_inkml(root / "MfrDB" / "MfrDB3088.inkml")
