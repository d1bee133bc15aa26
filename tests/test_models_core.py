"""Models: shared layers, SATRN and Show-Attend-Tell, registry and YAML configs."""
from __future__ import annotations

import pytest
import torch

from ocrlib.errors import BadInput
from ocrlib.models import MODELS, cli_models, create_model, load_config, parameter_table
from ocrlib.models.layers import Adaptive2DPositionalEncoding, MultiHeadAttention, ResNetBackbone, sinusoid_table

from helpers import glyph_batch as _glyph_batch, overfit

VOCAB = 24
TINY = {
    "satrn": dict(hidden=32, filter=64, encoder_layers=1, decoder_layers=1, heads=4, dropout=0.0),
    "attention": dict(channels=(8, 16, 16, 32), blocks=(1, 1, 1, 1), stem_channels=8, hidden=64, embed_dim=16,
                      attn_dim=32, dropout=0.0),
}


def glyph_batch(n: int = 16, seed: int = 0):
    """n short random formulas (3-8 tokens), each token a fixed 16x8 random glyph, left to right in 16x64."""
    return _glyph_batch(n, seed, vocab=VOCAB)


@pytest.mark.parametrize("name", ["satrn", "attention"])
def test_forward_and_decode_shapes(name):
    torch.manual_seed(0)
    model = create_model(name, VOCAB, max_len=10, **TINY[name])
    images, targets = glyph_batch(3)
    logits = model(images, targets)
    assert logits.shape == (3, targets.size(1), VOCAB)
    loss = model.loss(logits, targets)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.decoder.parameters() if p.requires_grad)
    assert model(images, targets, tf_ratio=0.5).shape == logits.shape
    result = model.decode(images, max_len=7)
    assert result.tokens.shape[0] == 3 and result.tokens.shape[1] <= 7
    assert result.scores.shape == (3,) and (result.scores <= 0).all()
    assert result.attention.shape[:2] == result.tokens.shape
    assert model.training, "decode restores the training mode"
    beams = model.decode(images, max_len=7, beam=3)
    assert beams.tokens.shape[0] == 3 and beams.attention.shape[:2] == beams.tokens.shape


def test_two_pass_at_full_teacher_forcing_equals_teacher_forcing():
    torch.manual_seed(0)
    model = create_model("satrn", VOCAB, max_len=10, **TINY["satrn"]).eval()
    images, targets = glyph_batch(4)
    memory_kv = model.decoder.memory_kv(model.encode(images)[0])
    teacher = model(images, targets, tf_ratio=1.0)
    assert torch.equal(model.decoder.two_pass(memory_kv, targets, 1.0), teacher)
    # tf_ratio 0: the second pass reads the first pass' argmax, i.e. teacher forcing on the predictions
    predictions = teacher.argmax(-1)
    assert torch.allclose(model.decoder.two_pass(memory_kv, targets, 0.0),
                          model.decoder.teacher_forced(memory_kv, predictions), atol=1e-6)
    assert not torch.allclose(model(images, targets, tf_ratio=0.0), teacher)


@pytest.mark.parametrize("name, lr", [("satrn", 3e-3), ("attention", 3e-3)])
def test_overfits_a_batch(name, lr, one_thread):
    torch.manual_seed(0)
    images, targets = glyph_batch(16)
    model = create_model(name, VOCAB, max_len=12, **TINY[name])
    accuracy, step, loss = overfit(model, images, targets, lr=lr, max_steps=400, check_every=10, clip=1.0)
    assert accuracy == 1.0, f"{name}: sentence accuracy {accuracy} after {step} steps (loss {loss:.3f})"


def test_decoder_token_embeddings_start_at_the_scale_of_the_positions():
    # With nn.Embedding's N(0, 1) start, embed * sqrt(192) was ~14x louder than the sinusoids: the decoder
    # could not tell its position, and SATRN stayed at val SA 0.01 after 2,000 steps (0.21 after 900 once fixed).
    torch.manual_seed(0)
    decoder = create_model("satrn", 250, max_len=20).decoder
    token_rms = (decoder.embed(torch.arange(3, 250)) * decoder.scale).pow(2).mean().sqrt()
    position_rms = decoder.pos.table.pow(2).mean().sqrt()
    assert 0.5 < (token_rms / position_rms).item() < 2.0
    assert not decoder.embed.weight[0].any(), "the padding row starts at zero"


def test_satrn_stem_width_is_configurable():
    config = load_config("satrn")
    model = create_model("satrn", 50, **{k: v for k, v in config["model"].items() if k != "name"})
    widths = [m.out_channels for m in model.stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [config["model"]["stem_channels"]] * 2 + [config["model"]["hidden"]]
    paper = create_model("satrn", 50, hidden=64, stem_channels=None)
    assert [m.out_channels for m in paper.stem.modules() if isinstance(m, torch.nn.Conv2d)] == [32, 32, 64]


def test_competition_satrn_uses_37_dim_heads_projected_to_300():
    config = load_config("satrn", profile="competition")
    assert config["model"]["hidden"] == 300 and config["data"]["height"] == 128
    model = create_model("satrn", 245, **{k: v for k, v in config["model"].items() if k != "name"})
    attn = model.encoder[0].attn
    assert attn.q_proj.out_features == 8 * 37 and attn.out_proj.out_features == 300
    assert len(model.encoder) == 6 and len(model.decoder.layers) == 3


def test_layers_handle_any_grid_and_head_layout():
    x = torch.randn(2, 30, 5, 7)
    plain = Adaptive2DPositionalEncoding(30, adaptive=False)(x)
    expected = x + sinusoid_table(5, 30).t()[None, :, :, None] + sinusoid_table(7, 30).t()[None, :, None, :]
    assert torch.allclose(plain, expected)
    adaptive = Adaptive2DPositionalEncoding(30)
    assert adaptive(x).shape == x.shape and not torch.allclose(adaptive(x), plain)
    mha = MultiHeadAttention(30, 4, head_dim=7)  # 4 * 7 = 28 != 30
    assert mha(torch.randn(2, 6, 30)).shape == (2, 6, 30)
    backbone = ResNetBackbone(1, (8, 16), (1, 1), ((2, 2), (2, 1)), stem_channels=8)
    assert backbone(torch.randn(1, 1, 32, 64)).shape == (1, 16, 8, 32)


def test_registry_lists_known_names():
    assert {"satrn", "aster", "attention", "srn", "cstr"} <= set(MODELS)
    with pytest.raises(ValueError, match="known models: aster, attention, cstr, satrn, srn"):
        create_model("satrnn", VOCAB)
    with pytest.raises(ValueError, match="unknown field.*hiden.*valid: in_channels, hidden"):
        create_model("satrn", VOCAB, hiden=32)


def test_load_config_profiles_and_overrides():
    default = load_config("satrn")
    assert set(default) == {"model", "data", "training", "decoding"}
    smoke = load_config("satrn", profile="smoke", overrides=["training.lr=3e-4", "data.width=null"])
    assert smoke["model"]["hidden"] == 32 and smoke["training"]["lr"] == 3e-4 and smoke["data"]["width"] is None
    assert smoke["model"]["decoder_layers"] == 1 and default["model"]["decoder_layers"] == 2


@pytest.mark.parametrize("text, problem", [
    ("model: {name: satrn, hiddn: 8}\n", "unknown key 'model.hiddn'"),
    ("model: {name: satrn}\ntraining: {lrate: 0.1}\n", "unknown key 'training.lrate'"),
    ("model: {name: satrn, hidden: wide}\n", "'model.hidden' = 'wide'"),
    ("model: {name: satrn}\ndecoding: {beam: 2.5}\n", "'decoding.beam' = 2.5"),
    ("model: {name: nope}\n", "model.name 'nope' is not a known model"),
    ("model: {name: satrn}\nextras: {}\n", "unknown section(s) extras"),
    ("model: [satrn\n", "invalid YAML"),
])
def test_load_config_rejects_bad_files(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BadInput) as err:
        load_config(path)
    assert str(err.value).startswith(str(path)) and problem in str(err.value)


def test_load_config_rejects_bad_overrides_and_profiles():
    with pytest.raises(BadInput, match="--set training.lrr=1: unknown key 'training.lrr'"):
        load_config("attention", overrides=["training.lrr=1"])
    with pytest.raises(BadInput, match="'model.cell' = 3"):
        load_config("attention", overrides=["model.cell=3"])
    with pytest.raises(BadInput, match="unknown profile 'tiny'; known: smoke, quick, full"):
        load_config("attention", profile="tiny")


def test_keys_the_trainer_or_dataclass_know_are_accepted(tmp_path):
    overrides = ["training.optimizer=adam", "data.synth_n=50", "training.betas=[0.9, 0.98]"]
    config = load_config("satrn", overrides=overrides)
    assert config["training"]["optimizer"] == "adam" and config["data"]["synth_n"] == 50
    path = tmp_path / "lean.yaml"
    path.write_text("model: {name: attention, cell: gru}\n")
    assert load_config(path, overrides=["model.embed_dim=8"])["model"]["embed_dim"] == 8
    with pytest.raises(BadInput, match="'data.synth_n' = 'many'"):
        load_config("satrn", overrides=["data.synth_n=many"])


def test_user_yaml_merges_over_model_defaults(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {name: attention, cell: gru}\ntraining: {lr: 0.01}\n")
    config = load_config(path, profile="smoke")
    assert config["model"]["cell"] == "gru" and config["model"]["hidden"] == 32 and config["training"]["lr"] == 0.01


def test_parameter_table_and_cli(capsys):
    table = parameter_table(245)
    counts = {(r.model, r.profile): r.params for r in table.itertuples()}
    assert counts[("satrn", "competition")] > counts[("satrn", "default")] > counts[("satrn", "smoke")] > 0
    assert counts[("attention", "default")] > 0
    assert cli_models(None) == 0
    out = capsys.readouterr().out
    assert "| model | profile | params |" in out and "| satrn | competition |" in out
