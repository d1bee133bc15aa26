"""EDA statistics: frequencies, coverage, lengths, Jensen-Shannon distance, corpus comparison, image stats."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from ocrlib.data import eda

SEQS = [["a"], ["a", "b"], ["a", "b", "c"], ["a", "b", "c", "d"]]


def test_token_frequencies_counts_most_frequent_first():
    freqs = eda.token_frequencies(SEQS)
    assert freqs.to_dict() == {"a": 4, "b": 3, "c": 2, "d": 1}
    assert list(freqs.index) == ["a", "b", "c", "d"]
    assert eda.token_frequencies([["y", "x"], ["x", "y"]]).index.tolist() == ["x", "y"]  # ties: by token


def test_coverage_curve_monotone_and_ends_at_one():
    curve = eda.coverage_curve(eda.token_frequencies(SEQS))
    assert curve["k"].tolist() == [1, 2, 3, 4]
    assert curve["token"].tolist() == ["a", "b", "c", "d"]
    assert np.allclose(curve["share"], [0.4, 0.7, 0.9, 1.0])
    assert (np.diff(curve["share"]) > 0).all()
    assert curve["share"].iloc[-1] == pytest.approx(1.0)


def test_length_stats_known_example():
    stats = eda.length_stats(SEQS)
    assert stats == {"n": 4, "mean": 2.5, "median": 2.5, "p95": pytest.approx(3.85), "max": 4}
    with pytest.raises(ValueError):
        eda.length_stats([])


def test_js_distance_properties():
    a = {"x": 3, "y": 1}
    b = {"x": 1, "z": 5}
    assert eda.js_distance(a, a) == pytest.approx(0.0, abs=1e-7)
    assert eda.js_distance(a, {"x": 0.75, "y": 0.25}) == pytest.approx(0.0, abs=1e-7)  # counts or shares
    assert eda.js_distance(a, b) == pytest.approx(eda.js_distance(b, a))
    assert eda.js_distance({"x": 1}, {"y": 7}) == pytest.approx(1.0)
    # JSD = H(mixture) - mean H = H(3/4, 1/4) - 1/2 = 0.75 log2(4/3)
    assert eda.js_distance({"x": 1}, {"x": 1, "y": 1}) == pytest.approx(math.sqrt(0.75 * math.log2(4 / 3)))
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = dict(enumerate(rng.random(10) * (rng.random(10) > 0.3)))
        q = dict(enumerate(rng.random(10)))
        assert 0.0 <= eda.js_distance(p, q) <= 1.0
    with pytest.raises(ValueError):
        eda.js_distance({"x": 0}, {"x": 1})


def test_compare_corpora_oov_shares_each_way():
    real = [["a", "b"], ["a", "c"]]
    synth = [["a", "b", "z"], ["a"]]
    cmp = eda.compare_corpora(real, synth)
    assert cmp["oov_synth"] == pytest.approx(1 / 4)  # z: one of 4 synthetic occurrences
    assert cmp["oov_real"] == pytest.approx(1 / 4)  # c: one of 4 real occurrences
    assert (cmp["vocab_real"], cmp["vocab_synth"], cmp["vocab_shared"]) == (3, 3, 2)
    assert cmp["js_lengths"] > 0 and cmp["js_tokens"] > 0
    same = eda.compare_corpora(real, real)
    assert same["js_tokens"] == pytest.approx(0, abs=1e-7) and same["oov_real"] == 0


def _write_layout(root, with_sources: bool):
    (root / "images").mkdir(parents=True)
    white = np.full((10, 40), 255, np.uint8)  # (H, W)
    inked = white.copy()
    inked[:, :10] = 0  # a quarter of the pixels are ink
    Image.fromarray(white).save(root / "images" / "a.png")
    Image.fromarray(inked).save(root / "images" / "b.png")
    (root / "gt.txt").write_text("a.png\tx\nb.png\t\\frac { 1 } { 2 }\n", encoding="utf-8")
    if with_sources:
        (root / "source.txt").write_text("a.png\tmathtext\nb.png\ttex\n", encoding="utf-8")


def test_image_stats_reads_competition_layout(tmp_path):
    _write_layout(tmp_path, with_sources=True)
    df = eda.image_stats(tmp_path).set_index("image")
    assert df.loc["a.png", ["width", "height"]].tolist() == [40, 10]
    assert df.loc["a.png", "aspect"] == pytest.approx(4.0)
    assert df.loc["a.png", "ink_density"] == 0.0
    assert df.loc["b.png", "ink_density"] == pytest.approx(0.25)
    assert df["n_tokens"].tolist() == [1, 7]
    assert df["source"].tolist() == ["mathtext", "tex"]


def test_image_stats_without_source_file(tmp_path):
    _write_layout(tmp_path, with_sources=False)
    assert set(eda.image_stats(tmp_path)["source"]) == {"printed"}
