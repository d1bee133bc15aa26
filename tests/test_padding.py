"""Keep-aspect batches: padding never changes a prediction (layers.ColumnPadding and the masks of every model)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from helpers import MAX_LEN, TINY, VOCAB, glyph_formulas
from ocrlib.models import create_model
from ocrlib.models.deform_conv import DeformConv2d
from ocrlib.models.layers import ColumnPadding

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTHS = (40, 96, 64)  # pixels of image in each row; the batch is padded to 96, each alone to a multiple of 16


def tiny_eval(name: str, **overrides):
    """A tiny model in eval mode with random BatchNorm statistics, so padded columns are not zero after BN."""
    torch.manual_seed(0)
    model = create_model(name, VOCAB, max_len=MAX_LEN, **{**TINY[name], **overrides}).eval()
    g = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5, generator=g)
            module.running_var.uniform_(0.5, 2.0, generator=g)
            module.bias.data.normal_(0, 0.5, generator=g)
        if isinstance(module, DeformConv2d):  # offsets that reach across columns, into the padding too
            module.offset_conv.weight.data.normal_(0, 0.3, generator=g)
    if getattr(model, "rectifier", None) is not None:  # control points that depend on the image, as once trained
        model.rectifier.fc2.weight.data.normal_(0, 0.05, generator=g)
    return model


def padded_batch():
    """Three glyph formulas cut to WIDTHS, zero-padded on the right to the widest; and the targets."""
    images, targets = glyph_formulas(n=3)
    for row, width in enumerate(WIDTHS):
        images[row, :, :, width:] = 0
    return images[..., :max(WIDTHS)], targets


def alone(images: torch.Tensor, row: int) -> torch.Tensor:
    width = math.ceil(WIDTHS[row] / 16) * 16
    return images[row:row + 1, :, :, :width]


def test_column_padding_geometry():
    pad = ColumnPadding.of(torch.tensor([40, 96]), 96)
    assert pad.columns(12).tolist() == [[True] * 5 + [False] * 7, [True] * 12]  # 40 px at stride 8: ceil(5.0)
    assert pad.columns(24)[0].sum() == 10 and pad.columns(6)[0].sum() == 3  # ceil(2.5): a half-image column counts
    assert pad.keys((2, 12)).shape == (2, 24) and pad.keys((2, 12))[0].sum() == 10
    assert ColumnPadding.of(torch.tensor([96, 96]), 96) is None and ColumnPadding.of(None, 96) is None


@pytest.mark.parametrize("name,overrides", [
    ("satrn", {}), ("satrn", {"stem": "densenet"}), ("satrn", {"stem_deformable": True}), ("attention", {}),
    ("aster", {}), ("aster", {"rectify_keep_aspect": True}), ("aster", {"rectify": False}),
    ("aster", {"rectify": False, "deformable": True, "modulated": True}), ("srn", {}), ("cstr", {})])
def test_an_image_reads_the_same_alone_and_padded_in_a_batch(name, overrides):
    model = tiny_eval(name, **overrides)
    images, targets = padded_batch()
    widths = torch.tensor(WIDTHS)
    with torch.no_grad():
        batch_logits = model(images, targets, widths=widths)
        batch_out = model.decode(images, widths=widths, beam=2)
        unmasked = model(images, targets)  # the same batch without widths: padding read as image
    for row in range(3):
        image = alone(images, row)
        with torch.no_grad():
            logits = model(image, targets[row:row + 1], widths=widths[row:row + 1])
            out = model.decode(image, widths=widths[row:row + 1], beam=2)
        torch.testing.assert_close(batch_logits[row], logits[0], atol=1e-4, rtol=1e-4)
        length = out.tokens.size(1)
        assert batch_out.tokens[row, :length].tolist() == out.tokens[0].tolist()
        torch.testing.assert_close(batch_out.scores[row], out.scores[0], atol=1e-4, rtol=1e-4)
    # the check can fail: without the widths the short image's logits change
    assert not torch.allclose(unmasked[0], batch_logits[0], atol=1e-4)
