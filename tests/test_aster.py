"""ASTER: the deformable option, and the TPS rectifier (ocrlib.models.tps)."""
import pytest
import torch
import torch.nn.functional as F

from ocrlib.models import create_model
from ocrlib.models.deform_conv import DeformConv2d
from ocrlib.models.layers import ColumnPadding
from ocrlib.models.tps import TPSRectifier, fiducial_points

from helpers import TINY, glyph_batch, glyph_formulas

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides):
    torch.manual_seed(0)
    return create_model("aster", 14, max_len=8, **{**TINY["aster"], **overrides})


def test_deformable_option_swaps_last_stage_convs():
    model = tiny(deformable=True, deformable_stages=1)
    assert sum(isinstance(m, DeformConv2d) for m in model.modules()) == 1  # last stage has one block
    assert not any(isinstance(m, DeformConv2d) for m in tiny().modules())


def test_tps_identity_control_points_give_identity_warp():
    torch.manual_seed(0)
    images = torch.rand(2, 1, 24, 40)
    same = TPSRectifier(1, (24, 40), num_fiducial=10).eval()
    assert torch.allclose(same(images), images, atol=1e-4)
    smaller = TPSRectifier(1, (12, 20), num_fiducial=10).eval()
    resized = F.interpolate(images, size=(12, 20), mode="bilinear", align_corners=False)
    assert torch.allclose(smaller(images), resized, atol=1e-4)
    # A TPS reproduces affine maps: control points shifted by one pixel to the right shift the image.
    shift = fiducial_points(10) + torch.tensor([2 / 40, 0.0])
    grid = same.grid(shift[None])  # (1, H, W, 2)
    warped = F.grid_sample(images, grid.expand(2, -1, -1, -1), align_corners=False)
    assert torch.allclose(warped[..., :-1], images[..., 1:], atol=1e-4)


def test_keep_aspect_tps_keeps_each_image_width_and_its_padding():
    """The identity warp of a keep-aspect rectifier returns a padded batch as it is (each image over its own
    columns, the padding zero); at half the height, each image is its own columns resized by half."""
    torch.manual_seed(0)
    images = torch.rand(2, 1, 24, 80)
    images[1, ..., 48:] = 0
    pad = ColumnPadding.of(torch.tensor([80, 48]), 80)
    same = TPSRectifier(1, (24, 40), num_fiducial=10, keep_aspect=True).eval()
    assert torch.allclose(same(images, pad), images, atol=1e-4)
    half = TPSRectifier(1, (12, 40), num_fiducial=10, keep_aspect=True).eval()(images, pad)
    assert half.shape == (2, 1, 12, 40) and half[1, ..., 24:].abs().max() == 0
    own = F.interpolate(images[1:, ..., :48], size=(12, 24), mode="bilinear", align_corners=False)
    assert torch.allclose(half[1:, ..., :24], own, atol=1e-4)
    fixed = TPSRectifier(1, (24, 40), num_fiducial=10).eval()(images, pad)
    assert fixed.shape == (2, 1, 24, 40)  # the word-sized output squeezes an 80-px image to 40


def test_gradient_reaches_the_tps_localisation_net():
    model = tiny()
    images, targets = glyph_formulas(n=4)
    optimizer = torch.optim.SGD(model.rectifier.parameters(), lr=0.1)
    for _ in range(2):  # the regression layer starts at zero weights: its input gets gradient from step 2
        optimizer.zero_grad()
        model.loss(model(images, targets), targets).backward()
        optimizer.step()
    for name, param in model.rectifier.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name,overrides", [("aster", {}), ("aster", {"rectify": False}), ("attention", {})])
def test_the_image_is_not_drowned_by_the_token_embedding_at_initialisation(name, overrides):
    """The attention decoder's step input is [token embedding; attention context]. Un-normalised BiLSTM
    outputs made ASTER's context 18x quieter than the embedding (norm 0.6 vs 11), and ASTER never left the
    language-model plateau; the Attention model's CNN context is as loud as the embedding. Default sizes."""
    images, targets = glyph_batch(4, vocab=245, glyph_size=(24, 16), image_size=(64, 256), lengths=(4, 10),
                                  left=8, pitch=20, top=20)
    torch.manual_seed(0)
    model = create_model(name, 245, **overrides).eval()
    with torch.no_grad():
        state = model.init_state(images)
        _, state = model.step(state, targets[:, 0])
        context = torch.bmm(state["attn"][:, None], state["per_image"]["memory"]).squeeze(1)  # (B, C)
        embedding = model.decoder.embed(targets[:, 0])  # (B, E)
    ratio = (context.norm(dim=-1) / embedding.norm(dim=-1)).mean().item()
    assert ratio > 0.5, f"{name}: attention context / token embedding norm = {ratio:.3f}"


def test_the_tps_output_follows_the_input_geometry_unless_the_config_says():
    from ocrlib.config import load_config
    from ocrlib.models import model_from_config
    from ocrlib.tokens import Vocab

    vocab = Vocab.build([["x", "y"]])
    built = {width: model_from_config(load_config("aster", preset="smoke", overrides={"data.width": width}), vocab)
             for width in (None, 128)}
    assert built[None].rectifier.keep_aspect and not built[128].rectifier.keep_aspect
    forced = load_config("aster", preset="smoke", overrides={"data.width": None, "model.rectify_keep_aspect": False})
    assert not model_from_config(forced, vocab).rectifier.keep_aspect
    assert load_config("aster", preset="full").data.width is None  # the default since the 60-minute comparison
