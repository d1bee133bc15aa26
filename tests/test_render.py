"""Renderers (mathtext, TeX, ink, pseudo-ink) and the data-set writer."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from matplotlib import font_manager

from ocrlib.cli import main
from ocrlib.data import render_ink, render_mathtext, render_tex
from ocrlib.data.render import cli_render, render_dataset, render_one
from ocrlib.data.sources import read_gt
from ocrlib.data.splits import split_of
from ocrlib.errors import FontsUnavailable
from ocrlib.paths import crohme_inkml_dir
from ocrlib.tokens import Vocab, normalize_latex

FORMULAS = [r"\frac{a+b}{2}", r"x^{2}+y^{2}=1", r"\sqrt{3}<k<2", r"\sin \alpha", r"\left(\frac{1}{2},+\infty\right)",
            r"\vec{a}\cdot\vec{b}=0", r"f'(x)=3x^{2}-1", r"\{a_{n}\}"]
needs_tex = pytest.mark.skipif(shutil.which("latex") is None or shutil.which("dvipng") is None,
                               reason="latex/dvipng not installed (apt-get install texlive-latex-base dvipng ...)")


def _crohme_file() -> Path:
    folder = crohme_inkml_dir()
    if folder is None:
        pytest.skip("CROHME InkML not beside the project (../shared/data/crohme/inkml)")
    return sorted(folder.rglob("*.inkml"))[0]


def assert_ink_image(image: np.ndarray) -> None:
    assert image.dtype == np.uint8 and image.ndim == 2 and min(image.shape) >= 5
    assert image.min() < 80, "some dark ink"
    assert (image > 200).mean() > 0.4, "mostly white background"
    assert (image[0] > 200).all() and (image[:, -1] > 200).all(), "a white margin around the ink"


@pytest.mark.parametrize("renderer, item", [
    ("mathtext", FORMULAS[0]),
    pytest.param("tex", FORMULAS[0], marks=needs_tex),
    ("ink", FORMULAS[0]),  # pseudo-ink
])
def test_renderer_draws_ink_deterministically(renderer, item):
    image = render_one(item, renderer, seed=3, index=5)
    assert_ink_image(image)
    assert render_one(item, renderer, seed=3, index=5).tobytes() == image.tobytes()


def test_random_parameters_follow_seed_and_index():
    # mathtext draws font, size and dpi per item: some of five seeds must differ from seed 0
    first = render_one(FORMULAS[1], "mathtext", seed=0, index=0)
    others = [render_one(FORMULAS[1], "mathtext", seed=s, index=0) for s in range(1, 6)]
    assert any(o.shape != first.shape or o.tobytes() != first.tobytes() for o in others)


def test_ink_from_real_crohme_file():
    image = render_one(_crohme_file(), "ink", seed=0)
    assert_ink_image(image)
    assert image.shape[0] >= render_ink.HEIGHTS[0], "drawn at least at the smallest target height"


def test_pen_strokes_are_drawn_at_target_height():
    strokes = [np.array([[0, 0], [10, 40]], np.float32), np.array([[20, 0], [20, 40], [30, 20]], np.float32)]
    rng = np.random.default_rng(0)
    image = render_ink.render_strokes(strokes, rng, heights=(60, 60), slant=(0, 0), jitter=(0, 0))
    assert_ink_image(image)
    ink_rows = np.flatnonzero((image < 128).any(axis=1))
    assert 55 <= ink_rows[-1] - ink_rows[0] <= 75  # 60 px of strokes plus the pen width


def test_single_point_stroke_is_a_dot():
    strokes = [np.array([[0, 0]], np.float32), np.array([[0, 20], [0, 40]], np.float32)]  # an "i"
    image = render_ink.render_strokes(strokes, np.random.default_rng(0), heights=(80, 80), slant=(0, 0), jitter=(0, 0))
    dark_rows = (image < 128).any(axis=1)
    runs = np.flatnonzero(np.diff(dark_rows.astype(int)) == 1)  # starts of dark row runs
    assert len(runs) + dark_rows[0] == 2, "the dot and the stem, with a gap between them"


def test_pseudo_strokes_follow_the_glyph_skeleton():
    strokes = render_ink.pseudo_strokes("x=1")
    assert 2 <= len(strokes) <= 12  # x: 2-4 pieces, =: 2, 1: 1-2
    assert all(s.ndim == 2 and s.shape[1] == 2 for s in strokes)


@needs_tex
def test_tex_batch_isolates_a_broken_formula():
    items = list(enumerate(FORMULAS[:3] + [r"\frac{1}{", r"\undefinedmacro x"] + FORMULAS[3:6]))
    results = render_tex.render_batch(items, seed=0, fonts=("cm",))
    failed = {r.index: r.error for r in results if r.error}
    assert set(failed) == {3, 4}
    assert "Undefined control sequence" in failed[4]
    for r in results:
        if r.index not in failed:
            assert_ink_image(r.image)


@needs_tex
def test_tex_blocks_in_one_latex_run_read_as_each_block_alone(monkeypatch):
    # dvipng draws the first page of a range in the document's first page's box: every block after the first is
    # drawn from a range, so each must come out as it does alone; a failure in a later block must not shift any
    monkeypatch.setattr(render_tex, "RUN_BLOCK", 3)
    items = list(enumerate(FORMULAS + [r"\frac{1}{"]))  # blocks 0-2, 3-5, 6-8; index 8 fails
    together = render_tex.render_batch(items, seed=0, fonts=("cm",))
    alone = [r for start in range(0, len(items), 3) for r in render_tex.render_batch(items[start:start + 3], seed=0,
                                                                                       fonts=("cm",))]
    assert [r.error is None for r in together] == [True] * 8 + [False]
    for a, b in zip(together[:8], alone[:8]):
        assert a.image.shape == b.image.shape and np.array_equal(a.image, b.image)
    assert len({r.image.shape for r in together[:8]}) > 4  # the formulas differ: a shifted image would show


@needs_tex
def test_tex_refuses_to_label_images_after_a_formula_that_made_two_pages(monkeypatch):
    page = render_tex._page
    monkeypatch.setattr(render_tex, "_page", lambda latex, size: page(latex, size) * (2 if latex == "y" else 1))
    results = render_tex.render_batch([(0, "x"), (1, "y"), (2, "z")], seed=0, fonts=("cm",))
    assert {r.error for r in results} == {"latex wrote 5 pages for 4 formulas"}  # 4: the block's first page too


@needs_tex
def test_tex_refuses_document_breaking_input():
    results = render_tex.render_batch([(0, r"x \end{document}"), (1, r"\input{/etc/hostname}"), (2, "y")], seed=0)
    assert [r.error is None for r in results] == [False, False, True]
    assert results[1].error.startswith("refused")


def test_render_dataset_writes_the_competition_layout(tmp_path):
    bad = r"\frac{1}{2"  # mathtext cannot parse an unclosed group
    formulas = FORMULAS[:4] + [bad] + FORMULAS[4:]
    manifest = render_dataset(formulas, tmp_path, "mathtext", seed=1, workers=2, progress=False)
    samples, problems = read_gt(tmp_path)
    assert problems == []
    assert len(samples) == manifest["n_written"] == len(FORMULAS)
    assert manifest["n_failed"] == 1 and manifest["failures"][0]["item"] == bad
    assert manifest["failures"][0]["id"] == "000004"
    assert json.loads((tmp_path / "manifest.json").read_text())["n_written"] == len(FORMULAS)
    # labels are the normalised tokens, in formula order; vocabulary covers them all
    expected = [normalize_latex(f) for f in FORMULAS]
    assert [s.tokens for s in samples] == expected
    vocab = Vocab.load(tmp_path / "tokens.txt")
    assert all(t in vocab for tokens in expected for t in tokens)
    assert all(s.source.startswith("mathtext:") for s in samples)
    assert sum(manifest["fonts"].values()) == len(FORMULAS)


def test_render_dataset_does_not_depend_on_workers(tmp_path):
    one = render_dataset(FORMULAS, tmp_path / "one", "ink", seed=2, workers=1, progress=False)
    two = render_dataset(FORMULAS, tmp_path / "two", "ink", seed=2, workers=2, progress=False)
    assert one["n_written"] == two["n_written"] == len(FORMULAS)
    for name in ("gt.txt", "source.txt", "tokens.txt"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text()
    for png in (tmp_path / "one" / "images").iterdir():
        assert png.read_bytes() == (tmp_path / "two" / "images" / png.name).read_bytes()


def test_render_dataset_sample_of_n(tmp_path):
    manifest = render_dataset(FORMULAS, tmp_path, "mathtext", seed=0, workers=1, n=3, progress=False)
    samples, _ = read_gt(tmp_path)
    assert manifest["n_written"] == len(samples) == 3
    assert all(s.tokens in [normalize_latex(f) for f in FORMULAS] for s in samples)


def test_bad_inkml_is_counted_not_fatal(tmp_path):
    broken = tmp_path / "broken.inkml"
    broken.write_text("<ink><trace>1 2, 3</trace>")
    items = [broken, FORMULAS[0]] + ([_crohme_file()] if crohme_inkml_dir() else [])
    manifest = render_dataset(items, tmp_path / "out", "ink", workers=1, progress=False)
    assert manifest["n_failed"] == 1 and "broken.inkml" in manifest["failures"][0]["item"]
    assert manifest["n_written"] == len(items) - 1


@needs_tex
def test_tex_dataset_with_a_broken_formula(tmp_path):
    formulas = FORMULAS[:2] + [r"\badcommand{x}"] + FORMULAS[2:5]
    manifest = render_dataset(formulas, tmp_path, "tex", workers=1, progress=False)
    assert manifest["n_written"] == 5 and manifest["failures"][0]["id"] == "000002"
    samples, problems = read_gt(tmp_path)
    assert len(samples) == 5 and problems == []


def test_tex_unavailable_says_how_to_install(monkeypatch):
    monkeypatch.setattr(render_tex.shutil, "which", lambda tool: None)
    with pytest.raises(render_tex.TexUnavailable, match="apt-get install texlive-latex-base"):
        render_dataset(FORMULAS, "/nonexistent/never-written", "tex", progress=False)


def _render_args(tmp_path, **overrides):
    args = dict(corpus="synth", renderer="mathtext", out=str(tmp_path / "out"), n=6, workers=1, seed=0, split=None)
    return argparse.Namespace(**{**args, **overrides})


def test_cli_falls_back_to_mathtext_without_tex(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(render_tex.shutil, "which", lambda tool: None)
    assert cli_render(_render_args(tmp_path, renderer="tex")) == 0
    assert "rendering with mathtext instead" in capsys.readouterr().err
    samples, _ = read_gt(tmp_path / "out")
    assert len(samples) == 6 and all(s.source.startswith("mathtext:") for s in samples)


def test_cli_split_keeps_only_that_split(tmp_path):
    assert cli_render(_render_args(tmp_path, split="val", n=5)) == 0
    samples, _ = read_gt(tmp_path / "out")
    assert len(samples) == 5 and all(split_of(s.tokens) == "val" for s in samples)


def test_cli_fails_when_nothing_renders(tmp_path, capsys):
    corpus = tmp_path / "bad.txt"
    corpus.write_text("\\frac{1}{\n\\left( x\n")
    assert cli_render(_render_args(tmp_path, corpus=str(corpus), n=None)) == 1
    assert "nothing could be rendered" in capsys.readouterr().err


@needs_tex
def test_tex_bisects_when_the_log_does_not_name_the_page(monkeypatch):
    run_latex = render_tex._run_latex

    def without_page_count(*args):  # as after a timeout or a crash: no "Output written" line to go by
        ok, _, reason = run_latex(*args)
        return ok, None, reason

    monkeypatch.setattr(render_tex, "_run_latex", without_page_count)
    items = list(enumerate(FORMULAS[:5] + [r"\nosuchmacro"] + FORMULAS[5:]))
    results = render_tex.render_batch(items, seed=0, fonts=("cm",))
    assert [r.index for r in results if r.error] == [5]
    assert all(r.image is not None for r in results if r.index != 5)


@needs_tex
def test_tex_refuses_macro_definitions():
    result = render_tex.render_batch([(0, r"\def\a{\a}\a")], seed=0)[0]
    assert result.error == r"refused: contains \def"


def test_every_mathtext_fontset_finds_its_own_fonts():
    assert {f: render_mathtext.missing_fonts(f) for f in render_mathtext.FONTSETS} == {
        f: [] for f in render_mathtext.FONTSETS}


class StaleFontCache:
    """A font manager as after its cache outlived an environment: STIX listed at deleted paths, cmr10 gone."""

    def findfont(self, prop, fallback_to_default=True):
        family = prop.get_family()[0]
        if family.startswith("STIX"):
            return f"/deleted/.venv/matplotlib/mpl-data/fonts/ttf/{family}.ttf"
        if family == "cmr10":
            raise ValueError("Failed to find font, and fallback to the default font was disabled")
        return font_manager.fontManager.findfont(prop, fallback_to_default=fallback_to_default)


def test_a_stale_font_cache_is_refused_not_drawn_in_fallback_fonts(tmp_path):
    """The real case: matplotlib's cached font list no longer holds the STIX fonts (it was written for another
    environment), so mathtext would draw the stix fontset in DejaVu Sans."""
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], env=env, check=True)
    cache = next(tmp_path.glob("fontlist-*.json"))
    fonts = json.loads(cache.read_text())
    fonts["ttflist"] = [f for f in fonts["ttflist"] if not f["name"].startswith("STIX")]
    cache.write_text(json.dumps(fonts))
    code = "from ocrlib.data.render_mathtext import render_mathtext; render_mathtext('x', '{}')"
    assert subprocess.run([sys.executable, "-c", code.format("cm")], env=env).returncode == 0
    stix = subprocess.run([sys.executable, "-c", code.format("stix")], env=env, capture_output=True, text=True)
    assert stix.returncode != 0
    assert "FontsUnavailable: mathtext fontset 'stix': matplotlib finds no font file for STIXGeneral" in stix.stderr


def test_missing_fonts_names_the_families_without_a_file():
    stale = StaleFontCache()
    assert render_mathtext.missing_fonts("stix", stale) == ["STIXGeneral", "STIXSizeOneSym"]
    assert render_mathtext.missing_fonts("cm", stale) == ["cmr10"]
    assert render_mathtext.missing_fonts("dejavusans", stale) == []


@pytest.fixture
def fonts_missing(monkeypatch):
    """Every fontset's first family missing, as with a stale font cache; the per-process check asked afresh."""
    monkeypatch.setattr(render_mathtext, "missing_fonts",
                        lambda fontset, manager=None: [render_mathtext.FONTSET_FAMILIES[fontset][0]])
    render_mathtext.check_fontset.cache_clear()
    yield
    render_mathtext.check_fontset.cache_clear()


def test_missing_fonts_stop_a_data_set_instead_of_drawing_fallback_glyphs(tmp_path, fonts_missing):
    with pytest.raises(FontsUnavailable, match=r"fontset 'stix'.* STIXGeneral .*fontlist-\*\.json"):
        render_dataset(FORMULAS, tmp_path / "out", "mathtext", workers=1, progress=False, fonts=("stix",))
    with pytest.raises(FontsUnavailable, match="mathtext fontset '"):  # pseudo-ink typesets through mathtext too
        render_one(FORMULAS[0], "ink")


def test_cli_render_reports_missing_fonts_in_one_line(tmp_path, fonts_missing, capsys):
    assert main(["render", "--n", "4", "--workers", "1", "--out", str(tmp_path / "out")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("error: mathtext fontset '") and last.endswith("and retry)")
