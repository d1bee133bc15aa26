"""Data sets of a profile: built from the real corpus when present, from the generator and pseudo-ink without it."""
import pytest

from ocrlib.data.build import build_datasets
from ocrlib.data.render import available_renderer
from ocrlib.data.sources import read_gt
from ocrlib.paths import exam_formulas_file
from ocrlib.tokens import Vocab

SETS = {"printed/train", "printed/val", "printed/test", "tex/train", "tex/test", "tex_heldout/test",
        "handwritten/train", "handwritten/val", "handwritten/test"}
# screen captures have no stand-in renderer: the set exists only where Chromium and selenium do
SCREEN = {"screen/test"} if available_renderer("screen")[0] else set()


def test_a_fresh_clone_without_shared_data_builds_from_the_generator_and_pseudo_ink(tmp_path, monkeypatch):
    monkeypatch.setenv("OCRLIB_SHARED_DATA", str(tmp_path / "absent"))
    built = build_datasets("smoke", seed=0, root=tmp_path / "data", progress=False)
    assert "generator" in built.printed_source and "pseudo-ink" in built.handwritten_source
    assert set(built.sets) == SETS | SCREEN
    summary = built.summary().set_index("set")
    assert summary.loc["printed/train", "images"] > 100
    train = {" ".join(s.tokens) for s in read_gt(built.sets["printed/train"])[0]}
    held_out = {" ".join(s.tokens) for key in ("printed/val", "printed/test") for s in read_gt(built.sets[key])[0]}
    assert train and held_out and not train & held_out, "a formula never sits in two splits"
    assert len(Vocab.load(built.vocab_path)) > 20
    sources = {s.source.split(":")[1].split("-")[0] for s in read_gt(built.sets["handwritten/train"])[0]}
    assert sources == {"pseudo"}


def test_training_sees_tex_in_every_font_but_the_held_out_one(tmp_path, monkeypatch):
    from ocrlib.data.build import HELD_OUT_FONT
    from ocrlib.data.render_tex import available_fonts

    if available_renderer("tex")[0] != "tex" or HELD_OUT_FONT not in available_fonts():
        pytest.skip(f"real TeX with the {HELD_OUT_FONT} font is not installed (make setup installs it)")
    monkeypatch.setenv("OCRLIB_SHARED_DATA", str(tmp_path / "absent"))
    built = build_datasets("smoke", seed=0, root=tmp_path, progress=False)
    fonts = {key: {s.source for s in read_gt(built.sets[key])[0]} for key in ("tex/train", "tex_heldout/test")}
    assert fonts["tex_heldout/test"] == {f"tex:{HELD_OUT_FONT}"}
    assert len(fonts["tex/train"]) >= 2 and f"tex:{HELD_OUT_FONT}" not in fonts["tex/train"]
    assert all(source.startswith("tex:") for source in fonts["tex/train"])
    train = {" ".join(s.tokens) for s in read_gt(built.sets["tex/train"])[0]}
    held_out = {" ".join(s.tokens) for key in ("printed/val", "printed/test") for s in read_gt(built.sets[key])[0]}
    assert train and not train & held_out, "TeX training images are of training formulas only"


def test_a_second_build_reuses_the_rendered_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("OCRLIB_SHARED_DATA", str(tmp_path / "absent"))
    first = build_datasets("smoke", seed=0, root=tmp_path, progress=False)
    stamp = (first.sets["printed/train"] / "manifest.json").stat().st_mtime_ns
    second = build_datasets("smoke", seed=0, root=tmp_path, progress=False)
    assert (second.sets["printed/train"] / "manifest.json").stat().st_mtime_ns == stamp


def test_the_real_corpus_is_used_when_present(tmp_path):
    if exam_formulas_file() is None:
        pytest.skip("../shared/data is absent: the real corpus cannot be checked")
    built = build_datasets("smoke", seed=0, root=tmp_path, progress=False)
    assert "exam corpus" in built.printed_source and "CROHME" in built.handwritten_source


def test_a_build_waits_for_one_in_progress_on_the_same_folder(tmp_path, monkeypatch):
    """Two notebooks side by side once rebuilt one folder at the same time (one deleting images the other read)."""
    import threading
    import time

    import ocrlib.data.build as build
    from ocrlib.locking import folder_lock

    order, held = [], threading.Event()
    monkeypatch.setattr(build, "_build", lambda *args: order.append("built"))

    def other_build():
        with folder_lock(tmp_path / "data"):
            held.set()
            time.sleep(0.3)
            order.append("other done")

    thread = threading.Thread(target=other_build)
    thread.start()
    held.wait()
    build_datasets("smoke", seed=0, root=tmp_path / "data", progress=False)
    thread.join()
    assert order == ["other done", "built"]
