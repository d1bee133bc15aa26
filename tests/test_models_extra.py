"""ASTER, SRN, CSTR and the TPS rectifier: shapes, the decode contract, losses, tiny overfits."""
import pytest
import torch
import torch.nn.functional as F

from ocrlib.decoding import BracketConstraint
from ocrlib.models import load_config, model_from_config
from ocrlib.models.aster import ASTER
from ocrlib.models.cstr import CSTR
from ocrlib.models.deform_conv import DeformConv2d
from ocrlib.models.srn import SRN
from ocrlib.models.tps import TPSRectifier, fiducial_points

from helpers import glyph_batch, overfit

VOCAB, MAX_LEN, H, W = 14, 8, 32, 96  # ids 0-3 are pad, sos, eos, unk; glyph tokens 4..13
TINY = {
    "aster": (ASTER, dict(rectified_size=(H, W), loc_size=(16, 32), channels=(16, 32, 32), blocks=(1, 1, 1),
                          strides=((2, 2), (2, 2), (2, 1)), stem_channels=8, feature_height=1, lstm_hidden=32,
                          lstm_layers=1, dec_hidden=64, embed_dim=16, attn_dim=32, dropout=0.0)),
    "srn": (SRN, dict(channels=(16, 32, 32), blocks=(1, 1, 1), strides=((2, 2), (2, 2), (2, 2)), stem_channels=8,
                      hidden=32, heads=4, filter=64, encoder_layers=1, gsrm_layers=1, dropout=0.0)),
    "cstr": (CSTR, dict(channels=(16, 32, 32), blocks=(1, 1, 1), strides=((2, 2), (2, 2), (2, 2)), stem_channels=8,
                        head_channels=32, dropout=0.0)),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # one intra-op thread (conftest): busy machines contend


def tiny(name: str, **overrides):
    torch.manual_seed(0)
    cls, config = TINY[name]
    return cls(VOCAB, MAX_LEN, **{**config, **overrides})


def glyph_formulas(n: int = 16, max_tokens: int = 5, seed: int = 0):
    """n images of 2..max_tokens random glyphs (one fixed random 12x10 bitmap per token) in reading order,
    each glyph jittered vertically; targets = ids + eos + pad, as `Vocab.encode_batch` makes them."""
    return glyph_batch(n, seed, vocab=VOCAB, glyph_size=(12, 10), image_size=(H, W), lengths=(2, max_tokens),
                       left=4, pitch=18, top=10, jitter=6, lengths_first=False)


@pytest.mark.parametrize("name,overrides", [("aster", {}), ("aster", {"deformable": True, "modulated": True}),
                                            ("aster", {"rectify": False}), ("srn", {}), ("cstr", {}),
                                            ("cstr", {"shared_classifier": True})])
def test_forward_and_decode_shapes(name, overrides):
    model = tiny(name, **overrides)
    images, targets = glyph_formulas(n=3)
    logits = model(images, targets, tf_ratio=0.5)
    assert logits.shape == (3, targets.size(1), VOCAB)
    for beam in (1, 2):
        result = model.decode(images, beam=beam)
        B, L = result.tokens.shape
        assert B == 3 and 1 <= L <= MAX_LEN and result.scores.shape == (3,)
        assert result.attention is not None and result.attention.shape[:2] == (3, L)
        assert torch.all(result.scores <= 0)
        for row in result.tokens.tolist():  # eos, then only pad
            if 2 in row:
                assert all(tok == 0 for tok in row[row.index(2) + 1:])
    assert model.training  # decode restores the mode


def test_deformable_option_swaps_last_stage_convs():
    model = tiny("aster", deformable=True, deformable_stages=1)
    assert sum(isinstance(m, DeformConv2d) for m in model.modules()) == 1  # last stage has one block
    assert not any(isinstance(m, DeformConv2d) for m in tiny("aster").modules())


@pytest.mark.parametrize("name", ["srn", "cstr"])
def test_parallel_greedy_is_per_position_argmax(name):
    model = tiny(name).eval()
    images, _ = glyph_formulas(n=4)
    with torch.no_grad():
        logits = model.predict(images)[0]  # (B, P, V)
    logits[..., [0, 1]] = float("-inf")  # decoding never emits pad or sos
    tokens = model.decode(images).tokens
    argmax = logits.argmax(-1)[:, :tokens.size(1)]
    for row, best in zip(tokens.tolist(), argmax.tolist()):
        end = row.index(2) + 1 if 2 in row else len(row)
        assert row[:end] == best[:end]
    with pytest.raises(ValueError, match="max_len"):
        model(images, torch.zeros(4, MAX_LEN + 1, dtype=torch.long))


@pytest.mark.parametrize("name", ["srn", "cstr", "aster"])
def test_bracket_constraint_balances_every_output(name):
    tokens = ["<pad>", "<sos>", "<eos>", "<unk>", "{", "}", "(", ")", "x", "y", "1", "2", "+", "="]
    model = tiny(name)
    images, _ = glyph_formulas(n=6)
    result = model.decode(images, constraints=BracketConstraint(tokens, eos_id=2))
    for row in result.tokens.tolist():
        depth = {"{": 0, "(": 0}
        for tok in (tokens[i] for i in row if i > 2):
            if tok in ("{", "("):
                depth[tok] += 1
            elif tok in ("}", ")"):
                depth["{" if tok == "}" else "("] -= 1
                assert min(depth.values()) >= 0
        assert set(depth.values()) == {0} and 2 in row


def test_srn_three_losses():
    model = tiny("srn", visual_weight=1.0, semantic_weight=0.15, fused_weight=2.0)
    images, targets = glyph_formulas(n=4)
    out = model.forward_all(images)
    T = targets.size(1)
    assert all(out[k].shape == (4, MAX_LEN, VOCAB) for k in ("visual", "semantic", "fused"))
    logits = model(images, targets)
    assert torch.allclose(logits, out["fused"][:, :T], atol=1e-6)

    def ce(x):
        return F.cross_entropy(x[:, :T].flatten(0, 1), targets.flatten(), ignore_index=0)

    expected = 1.0 * ce(out["visual"]) + 0.15 * ce(out["semantic"]) + 2.0 * ce(out["fused"])
    assert torch.allclose(model.loss(logits.clone(), targets), expected, atol=1e-5)  # DDP returns a clone
    other = logits.detach() + 1.0  # not the latest forward's output: plain cross-entropy
    model(images, targets)
    assert torch.allclose(model.loss(other, targets), ce(out["fused"] + 1.0), atol=1e-5)


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


def test_gradient_reaches_the_tps_localisation_net():
    model = tiny("aster")
    images, targets = glyph_formulas(n=4)
    optimizer = torch.optim.SGD(model.rectifier.parameters(), lr=0.1)
    for _ in range(2):  # the regression layer starts at zero weights: its input gets gradient from step 2
        optimizer.zero_grad()
        model.loss(model(images, targets), targets).backward()
        optimizer.step()
    for name, param in model.rectifier.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_smoke_configs_build_and_run():
    images = torch.rand(2, 1, 32, 128)
    targets = torch.tensor([[5, 6, 2, 0], [7, 2, 0, 0]])
    for name in ("aster", "srn", "cstr"):
        config = load_config(name, profile="smoke")
        assert (config["data"]["height"], config["data"]["width"]) == (32, 128)
        model = model_from_config(config, vocab_size=20)
        assert model(images, targets).shape == (2, 4, 20)


@pytest.mark.parametrize("name,max_steps", [("aster", 300), ("srn", 300), ("cstr", 300)])
def test_overfits_sixteen_formulas(name, max_steps):
    """A tiny model must learn 16 short glyph formulas exactly (greedy SA 1.0); measured: 60-120 steps."""
    model = tiny(name)
    images, targets = glyph_formulas()
    accuracy, _, loss = overfit(model, images, targets, lr=3e-3, max_steps=max_steps, check_every=20)
    assert accuracy == 1.0, f"{name}: SA {accuracy} after {max_steps} steps (loss {loss:.3f})"
