"""The one interface every recogniser implements (like parseq's BaseSystem).

A model is one class with a config dataclass and a `build` hook; the constructor lives here once:

    @dataclass
    class MyConfig(ModelConfig):          # ocrlib.config.ModelConfig: max_len, in_channels
        hidden: int = 64                  # a comment on every default
    class MyModel(Recognizer):
        Config = MyConfig
        def build(self, c: MyConfig): ... # layers; self.vocab_size, max_len, pad_id, sos_id, eos_id are set
        def encode(self, images, pad): ...

    MyModel(vocab_size, config=None, pad_id=0, sos_id=1, eos_id=2, **fields)  # fields override config

plus one line in ocrlib.models.MODELS and a YAML in ocrlib/configs/. An unknown or mistyped field is a
BadInput (a ValueError) naming the field.

Training:  forward(images (B,C,H,W), targets (B,T) [ids.., eos, pad..] no sos, tf_ratio, widths) -> logits (B,T,V)
           forward_logits_loss(images, targets, tf_ratio, label_smoothing, widths) -> (logits, loss): what the
           training loop calls; a model with several losses (SRN) overrides it
Inference: decode(images, max_len=None, beam=1, constraints=None, widths=None) -> DecodeResult (ocrlib.decoding)

`widths` (B,): each image's width before a keep-aspect batch padded it on the right (the loader's
batch["widths"]); None for unpadded batches. Models never let padding change a prediction
(layers.ColumnPadding: CNNs zero padded columns, attention and pooling skip them).

Step API that `ocrlib.decoding` drives (greedy and beam search live once, for all models):

    state = model.init_state(images, widths)  # encodes once; dict whose tensors are batch-first
    log_probs, state = model.step(state, prev_tokens (N,))   # (N, V); state["attn"] (N, h*w) optional
    # ocrlib.decoding.reorder gathers rows of a state (beams, ended images); state["per_image"] holds what
    # every hypothesis of an image shares (beam search keeps one copy per image)

A subclass normally defines `encode(images, pad) -> (memory (B,S,C), (h, w))` (pad: a
layers.ColumnPadding or None) and sets `self.decoder` to a layers.TransformerDecoder or
layers.AttentionRNNDecoder; the default forward / init_state / step then work unchanged, masking
the padded memory positions. Shared layers live in ocrlib.models.layers.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ocrlib.config import ModelConfig, make_section
from ocrlib.decoding import DecodeResult, beam_search, greedy
from ocrlib.models.layers import ColumnPadding, key_mask

__all__ = ["Recognizer", "ParallelRecognizer", "DecodeResult"]


def channels_last(images: torch.Tensor) -> torch.Tensor:
    """images (B, C, H, W) in the layout the models' convolutions use (a no-op for a batch already in it)."""
    return images.contiguous(memory_format=torch.channels_last)


class Recognizer(nn.Module):
    """Base class: image -> token ids. Subclasses set `Config`, implement `build` and `encode`."""

    Config: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, vocab_size: int, config: ModelConfig | None = None, pad_id: int = 0, sos_id: int = 1,
                 eos_id: int = 2, **fields):
        super().__init__()
        values = {**(dataclasses.asdict(config) if config is not None else {}), **fields}
        self.config = make_section(self.Config, values, type(self).__name__)
        self.vocab_size, self.max_len = vocab_size, self.config.max_len
        self.pad_id, self.sos_id, self.eos_id = pad_id, sos_id, eos_id
        self.decoder: nn.Module | None = None  # set by build() in encoder-decoder models
        self.build(self.config)
        # convolutions run channels-last (NHWC): oneDNN's native layout, so no reorder around each convolution, and a
        # feature map flattens to (B, S, C) without a copy. Checkpoints keep their keys and load either way.
        self.to(memory_format=torch.channels_last)

    def build(self, c: ModelConfig) -> None:
        """Create the layers from the config (called once by __init__)."""
        raise NotImplementedError

    def encode(self, images: torch.Tensor, pad: ColumnPadding | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """images (B,C,H,W) -> memory (B,S,C') with S = h*w, and the feature grid (h, w)."""
        raise NotImplementedError

    def encode_masked(self, images: torch.Tensor, widths: torch.Tensor | None):
        """-> memory (B,S,C), (h, w), mask (B,S) bool of the positions that hold image (None: all do)."""
        pad = ColumnPadding.of(widths, images.size(-1))
        memory, hw = self.encode(channels_last(images), pad)
        return memory, hw, self.memory_mask(pad, hw)

    def memory_mask(self, pad: ColumnPadding | None, hw: tuple[int, int]) -> torch.Tensor | None:
        """(B, S) bool of the memory positions that hold image; a model whose memory has no padding says None."""
        return key_mask(pad, hw)

    def forward(self, images: torch.Tensor, targets: torch.Tensor, tf_ratio: float = 1.0,
                widths: torch.Tensor | None = None) -> torch.Tensor:
        memory, _, mask = self.encode_masked(images, widths)
        return self.decoder(memory, targets, tf_ratio, mask)  # (B, T, V)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """Cross-entropy of logits (B,T,V) against targets (B,T), ignoring pad."""
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=self.pad_id,
                               label_smoothing=label_smoothing)

    def forward_logits_loss(self, images: torch.Tensor, targets: torch.Tensor, tf_ratio: float = 1.0,
                            label_smoothing: float = 0.0, widths: torch.Tensor | None = None):
        """One training step's logits (B,T,V) and loss together (the training loop calls this, through DDP)."""
        logits = self(images, targets, tf_ratio, widths)
        return logits, self.loss(logits, targets, label_smoothing)

    # ---- step API for ocrlib.decoding
    def init_state(self, images: torch.Tensor, widths: torch.Tensor | None = None) -> dict:
        memory, hw, mask = self.encode_masked(images, widths)
        return dict(self.decoder.init_state(memory, mask), hw=hw)

    def step(self, state: dict, prev_tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
        logits, new = self.decoder.step(state, prev_tokens)
        return logits.log_softmax(-1), dict(new, hw=state["hw"])  # (N, V)

    @torch.no_grad()
    def decode(self, images: torch.Tensor, max_len: int | None = None, beam: int = 1, constraints=None,
               length_penalty: float = 1.0, widths: torch.Tensor | None = None) -> DecodeResult:
        """Greedy (beam=1) or beam search; runs in eval mode and restores the previous mode.
        constraints: None or an ocrlib.decoding.BracketConstraint."""
        was_training = self.training
        self.eval()
        try:
            max_len = max_len or self.max_len
            if beam == 1:
                return greedy(self, images, max_len, constraints, widths)
            return beam_search(self, images, max_len, beam, constraints, length_penalty, widths)
        finally:
            self.train(was_training)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ParallelRecognizer(Recognizer):
    """Base for models that predict all `max_len` positions at once (SRN, CSTR).

    Subclasses implement `predict(images, pad) -> (logits (B,P,V), attention (B,P,S) | None, (h, w))` with
    P = max_len positions (pad: a layers.ColumnPadding or None). forward returns the first T positions (tf_ratio is ignored: no decoder input).
    For decoding, init_state runs `predict` once and each step hands out the next position's
    log-probs, ignoring the previous token (positions are independent given the image). Greedy thus
    equals the per-position argmax (pad and sos never emitted) cut at the first eos. Beam search is
    no fallback to greedy: it ranks whole sequences by length-normalised score, so it may end at a
    different eos; the bracket constraint likewise changes positions after a forbidden argmax.
    """

    def predict(self, images: torch.Tensor, pad: ColumnPadding | None = None):
        raise NotImplementedError

    def positions(self, targets: torch.Tensor) -> int:
        """T of targets (B, T), checked against the P = max_len positions the model predicts."""
        T = targets.size(1)
        if T > self.max_len:
            raise ValueError(f"targets have {T} positions, the model predicts max_len={self.max_len}")
        return T

    def forward(self, images: torch.Tensor, targets: torch.Tensor, tf_ratio: float = 1.0,
                widths: torch.Tensor | None = None) -> torch.Tensor:
        pad = ColumnPadding.of(widths, images.size(-1))
        return self.predict(channels_last(images), pad)[0][:, :self.positions(targets)]  # (B, T, V)

    def init_state(self, images: torch.Tensor, widths: torch.Tensor | None = None) -> dict:
        logits, attention, hw = self.predict(channels_last(images), ColumnPadding.of(widths, images.size(-1)))
        return {"log_probs": logits.log_softmax(-1), "maps": attention, "hw": hw, "t": 0}

    def step(self, state: dict, prev_tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
        t = state["t"]
        attn = None if state["maps"] is None else state["maps"][:, t]  # (N, S)
        return state["log_probs"][:, t], dict(state, t=t + 1, attn=attn)  # (N, V)

    def decode(self, images: torch.Tensor, max_len: int | None = None, beam: int = 1, constraints=None,
               length_penalty: float = 1.0, widths: torch.Tensor | None = None) -> DecodeResult:
        max_len = min(max_len or self.max_len, self.max_len)  # no logits beyond the last position
        return super().decode(images, max_len, beam, constraints, length_penalty, widths)
