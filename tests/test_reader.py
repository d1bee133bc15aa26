"""FormulaReader: the one reading function behind predict, serve and the demo, on the shipped model."""
import math

import numpy as np
import pytest

from ocrlib.data.render import render_one
from ocrlib.pretrained import WEIGHTS
from ocrlib.reader import FormulaReader
from ocrlib.tokens import normalize_latex

pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="no shipped model in ocrlib/pretrained/")

# typed here, read exactly by the shipped model (tests/test_pretrained.py); different widths on purpose
FORMULAS = {2: r"\frac{1}{2}", 1: r"f(x)=2x+1", 8: r"a+b=c"}


@pytest.fixture(scope="module")
def reader():
    return FormulaReader(beam=1)


@pytest.fixture(scope="module")
def images():
    return [render_one(latex, "mathtext", seed=0, index=index) for index, latex in FORMULAS.items()]


def test_a_batch_reads_as_each_image_alone(reader, images):
    assert len({image.shape[1] for image in images}) == len(images)  # the batch really is padded
    batch = reader.read(images)
    for image, latex, together in zip(images, FORMULAS.values(), batch):
        alone = reader.read([image])[0]
        assert together.tokens == alone.tokens == normalize_latex(latex)
        assert together.confidence == pytest.approx(alone.confidence, abs=1e-4)
        assert together.attention.shape == alone.attention.shape  # cropped to the image's own columns
        assert np.allclose(together.attention, alone.attention, atol=1e-4)


def test_confidence_score_and_attention_describe_the_same_reading(reader, images):
    for reading in reader.read(images):
        assert reading.complete and len(reading.confidence) == len(reading.tokens) + 1  # eos last
        assert all(0 < p <= 1 for p in reading.confidence)
        assert reading.score == pytest.approx(np.mean(np.log(reading.confidence)), abs=1e-3)
        assert reading.attention.shape[0] == len(reading.confidence)  # one map per emitted token (SATRN)
        assert np.allclose(reading.attention.sum(axis=(1, 2)), 1.0, atol=1e-3)  # each map is a distribution
        assert reading.alternatives == []  # greedy


def test_beam_search_gives_ranked_alternatives(reader, images):
    readings = reader.read(images, beam=4)
    for reading, latex in zip(readings, FORMULAS.values()):
        assert reading.tokens == normalize_latex(latex)
        assert 1 <= len(reading.alternatives) <= 3
        ranks = [alt["score"] for alt in reading.alternatives]
        assert ranks == sorted(ranks, reverse=True) and ranks[0] <= reading.score + 1e-3
        assert all(alt["latex"] != reading.latex for alt in reading.alternatives)
        assert all(math.isfinite(r) for r in ranks)


def test_width_groups_keep_similar_widths_together_and_cover_every_image():
    from ocrlib.reader import width_groups

    widths = [900, 64, 70, 1000, 80, 65, 300, 66, 320]
    groups = width_groups(widths, ratio=1.3, max_size=3)
    assert sorted(i for g in groups for i in g) == list(range(len(widths)))  # each image once
    for group in groups:
        assert len(group) <= 3 and max(widths[i] for i in group) <= 1.3 * min(widths[i] for i in group)
    assert [sorted(widths[i] for i in g) for g in groups] == [[64, 65, 66], [70, 80], [300, 320], [900, 1000]]


def test_the_cross_attention_of_any_decoder_layer_can_be_shown(images):
    from ocrlib.errors import BadInput

    reader = FormulaReader(beam=1)
    last = reader.read(images[:1])[0]
    reader.show_attention_of_layer(0)
    first = reader.read(images[:1])[0]
    assert first.tokens == last.tokens and first.attention.shape == last.attention.shape  # the same reading
    assert not np.allclose(first.attention, last.attention, atol=1e-3)  # another layer's maps
    assert np.allclose(first.attention.sum(axis=(1, 2)), 1.0, atol=1e-3)
    reader.show_attention_of_layer(-1)
    assert np.allclose(reader.read(images[:1])[0].attention, last.attention)
    with pytest.raises(BadInput, match="attention layer 5 out of range"):
        reader.show_attention_of_layer(5)
