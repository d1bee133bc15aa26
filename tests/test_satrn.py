"""SATRN: two-pass and token-by-token scheduled sampling, stem width, the competition preset."""
import torch

from ocrlib.config import load_config
from ocrlib.models import create_model

from helpers import glyph_batch as _glyph_batch

VOCAB = 24
TINY = dict(hidden=32, filter=64, encoder_layers=1, decoder_layers=1, heads=4, dropout=0.0)


def glyph_batch(n: int = 16, seed: int = 0):
    """n short random formulas (3-8 tokens), each token a fixed 16x8 random glyph, left to right in 16x64."""
    return _glyph_batch(n, seed, vocab=VOCAB)


def test_two_pass_at_full_teacher_forcing_equals_teacher_forcing():
    torch.manual_seed(0)
    model = create_model("satrn", VOCAB, max_len=10, **TINY).eval()
    images, targets = glyph_batch(4)
    memory_kv = model.decoder.memory_kv(model.encode(images)[0])
    teacher = model(images, targets, tf_ratio=1.0)
    assert torch.equal(model.decoder.two_pass(memory_kv, targets, 1.0), teacher)
    # tf_ratio 0: the second pass reads the first pass' argmax, i.e. teacher forcing on the predictions
    predictions = teacher.argmax(-1)
    assert torch.allclose(model.decoder.two_pass(memory_kv, targets, 0.0),
                          model.decoder.teacher_forced(memory_kv, predictions), atol=1e-6)
    assert not torch.allclose(model(images, targets, tf_ratio=0.0), teacher)


def test_the_token_by_token_loop_at_full_teacher_forcing_equals_teacher_forcing():
    torch.manual_seed(0)
    model = create_model("satrn", VOCAB, max_len=10, **TINY).eval()
    images, targets = glyph_batch(4)
    memory_kv = model.decoder.memory_kv(model.encode(images)[0])
    teacher = model.decoder.teacher_forced(memory_kv, targets)
    assert torch.allclose(model.decoder.loop(memory_kv, targets, 1.0), teacher, atol=1e-5)  # cache vs one pass
    # tf_ratio 0 feeds back its own argmax: the logits of teacher forcing on its own predictions
    free = model.decoder.loop(memory_kv, targets, 0.0)
    assert torch.allclose(free, model.decoder.teacher_forced(memory_kv, free.argmax(-1)), atol=1e-5)
    assert not torch.allclose(free, teacher, atol=1e-3)


def test_satrn_stem_width_is_configurable():
    config = load_config("satrn")
    model = create_model("satrn", 50, config=config.model)
    widths = [m.out_channels for m in model.stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [config.model.stem_channels] * 2 + [config.model.hidden]
    paper = create_model("satrn", 50, hidden=64, stem_channels=None)
    assert [m.out_channels for m in paper.stem.modules() if isinstance(m, torch.nn.Conv2d)] == [32, 32, 64]


def test_competition_satrn_uses_37_dim_heads_projected_to_300():
    config = load_config("satrn", preset="competition")
    assert config.model.hidden == 300 and config.data.height == 128
    model = create_model("satrn", 245, config=config.model)
    attn = model.encoder[0].attn
    assert attn.q_proj.out_features == 8 * 37 and attn.out_proj.out_features == 300
    assert len(model.encoder) == 6 and len(model.decoder.layers) == 3


def test_competition_satrn_is_the_teams_architecture():
    """The 2021 baseline: DenseNet stem to 1/8 (16x16 positions at 128x128), plain feed-forward, a decoder of width
    128 whose cross-attention reads the 300-wide memory; 6.86 M parameters in the team's code, which also has a
    45,300-parameter positional encoding and no final norms (600 + 128 here)."""
    config = load_config("satrn", preset="competition")
    model = create_model("satrn", 245, config=config.model)
    memory, hw = model.encode(torch.rand(1, 1, 128, 128))
    assert hw == (16, 16) and memory.shape == (1, 256, 300)
    cross = model.decoder.layers[0].cross_attn
    assert cross.k_proj.in_features == 300 and cross.q_proj.in_features == 128 and cross.head_dim == 16
    team = model.num_parameters() - 600 - 128 + 45_300 + 128  # their 246-row embedding has one row more
    assert abs(team - 6_860_000) < 10_000
