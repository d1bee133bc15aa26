"""The recogniser interface for all five models: registry, one constructor with a build hook, shapes,
forward_logits_loss, decoding, overfitting a batch, the parameter table; and a sixth model in a few lines."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from ocrlib.config import ModelConfig, load_config
from ocrlib.decoding import BracketConstraint
from ocrlib.errors import BadInput
from ocrlib.models import MODELS, create_model, model_from_config
from ocrlib.models.base import Recognizer
from ocrlib.models.catalog import cli_models, parameter_table
from ocrlib.models.layers import AttentionRNNDecoder, zero_padding
from ocrlib.tokens import Vocab

from helpers import MAX_LEN, TINY, VOCAB, glyph_formulas, overfit

pytestmark = pytest.mark.usefixtures("one_thread")  # one intra-op thread (conftest): busy machines contend


def tiny(name: str, max_len: int = MAX_LEN, **overrides):
    torch.manual_seed(0)
    return create_model(name, VOCAB, max_len=max_len, **{**TINY[name], **overrides})


@pytest.mark.parametrize("name,overrides", [
    ("satrn", {}), ("satrn", {"stem_deformable": True}), ("attention", {}), ("attention", {"cell": "gru"}), ("aster", {}),
    ("aster", {"deformable": True, "modulated": True}), ("aster", {"rectify": False}), ("srn", {}), ("cstr", {}),
    ("cstr", {"shared_classifier": True})])
def test_forward_loss_and_decode_shapes(name, overrides):
    model = tiny(name, **overrides)
    images, targets = glyph_formulas(n=3)
    logits, loss = model.forward_logits_loss(images, targets, tf_ratio=0.5)
    assert logits.shape == (3, targets.size(1), VOCAB) and loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert model(images, targets, tf_ratio=1.0).shape == logits.shape
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


def test_registry_and_one_constructor():
    assert {"satrn", "aster", "attention", "srn", "cstr"} <= set(MODELS)
    with pytest.raises(ValueError, match="known models: aster, attention, cstr, satrn, srn"):
        create_model("satrnn", VOCAB)
    with pytest.raises(BadInput, match="SATRN: unknown key 'hiden'; known: max_len, in_channels, hidden"):
        create_model("satrn", VOCAB, hiden=32)
    with pytest.raises(BadInput, match="SATRN: 'heads' = 2.5 does not match int"):
        create_model("satrn", VOCAB, heads=2.5)
    config = load_config("satrn", "smoke")
    model = create_model("satrn", VOCAB, config=config.model, max_len=5)  # keywords override the config
    assert model.max_len == 5 and model.config.hidden == config.model.hidden and model.vocab_size == VOCAB
    vocab = Vocab.build([["x"]])
    assert model_from_config(config, vocab).vocab_size == len(vocab)


@dataclass
class ToyConfig(ModelConfig):
    width: int = 16  # conv channels


class Toy(Recognizer):
    """A sixth model: a config dataclass, `build` and `encode`; the shared attention decoder does the rest."""
    Config = ToyConfig

    def build(self, c: ToyConfig) -> None:
        self.conv = nn.Conv2d(c.in_channels, c.width, 3, stride=4, padding=1)
        self.decoder = AttentionRNNDecoder(self.vocab_size, c.width, 32, 8, 16, "gru", 0.0, self.pad_id, self.sos_id)

    def encode(self, images, pad=None):
        features = zero_padding(self.conv(images), pad)  # (B, C, h, w); padded columns zero, as the image alone
        return features.flatten(2).transpose(1, 2), tuple(features.shape[-2:])


def test_a_sixth_model_is_one_class_one_registry_line_and_one_yaml(tmp_path, monkeypatch):
    import ocrlib.config

    (tmp_path / "toy.yaml").write_text("model: {name: toy, width: 8}\ntraining: {lr: 0.01}\n"
                                       "presets: {wide: {model: {width: 24}}}\n")
    monkeypatch.setitem(MODELS, "toy", f"{__name__}:Toy")
    monkeypatch.setattr(ocrlib.config, "CONFIGS_DIR", tmp_path)
    config = load_config("toy", preset="wide", overrides=["model.max_len=6"])
    assert config.model == ToyConfig(max_len=6, width=24) and config.training.lr == 0.01
    model = model_from_config(config, Vocab.build([["x", "y"]]))
    images, targets = glyph_formulas(n=2)
    logits, loss = model.forward_logits_loss(images, targets.clamp(max=5))
    assert logits.shape[:2] == targets.shape and model.decode(images).tokens.shape[0] == 2
    with pytest.raises(BadInput, match="unknown key 'model.depth'"):
        load_config("toy", overrides=["model.depth=3"])

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


def test_smoke_presets_build_and_run():
    images = torch.rand(2, 1, 32, 128)
    targets = torch.tensor([[5, 6, 2, 0], [7, 2, 0, 0]])
    for name in MODELS:
        config = load_config(name, preset="smoke")
        assert (config.data.height, config.data.width) == (32, 128)
        model = create_model(name, 20, config=config.model)
        assert model(images, targets).shape == (2, 4, 20)


@pytest.mark.slow  # up to a few hundred optimiser steps per model
@pytest.mark.parametrize("name", ["satrn", "attention", "aster", "srn", "cstr"])
def test_overfits_sixteen_formulas(name):
    """A tiny model must learn 16 short glyph formulas exactly (greedy SA 1.0); measured: 60-120 steps."""
    model = tiny(name)
    images, targets = glyph_formulas()
    accuracy, step, loss = overfit(model, images, targets, lr=3e-3, max_steps=400, check_every=20, clip=1.0)
    assert accuracy == 1.0, f"{name}: SA {accuracy} after {step} steps (loss {loss:.3f})"


def test_parameter_table_and_cli(capsys):
    table = parameter_table(245)
    counts = {(r.model, r.preset): r.params for r in table.itertuples()}
    assert counts[("satrn", "competition")] > counts[("satrn", "default")] > counts[("satrn", "smoke")] > 0
    assert counts[("attention", "default")] > 0
    assert cli_models(None) == 0
    out = capsys.readouterr().out
    assert "| model | preset | params |" in out and "| satrn | competition |" in out
