"""SATRN: Lee et al. (2020), "On Recognizing Texts of Arbitrary Shapes with 2D Self-Attention".

Shallow CNN stem (1/4 resolution in the paper; 1/8 by default here, see stem_pools) -> adaptive 2D
positional encoding (A2DPE) -> transformer encoder whose feed-forward is locality-aware (1x1 conv, 3x3 depthwise conv, 1x1 conv) -> transformer
decoder over the flattened 2D memory. Layers are pre-norm (the paper uses post-norm; pre-norm
trains stably at the small batch sizes of a CPU budget).

Competition setting (configs/satrn.yaml, preset `competition`), the 2021 baseline the team trained: a
DenseNet stem to 1/8 (16x16 = 256 encoder positions at 128x128), encoder hidden 300, filter 600, 6 layers,
8 heads; 300 is not divisible by 8, so, as in that code, each head has 300 // 8 = 37 dims: queries/keys/
values are projected to 8 * 37 = 296 and the attention output back to 300 (`head_dim`; None means
hidden // heads). Its decoder is narrower than its encoder: 3 layers of width 128, filter 512, 8 heads of
16, whose cross-attention projects the 300-wide memory (`decoder_hidden`, `decoder_filter`, `decoder_heads`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ocrlib.config import ModelConfig
from ocrlib.models.base import Recognizer
from ocrlib.models.layers import (
    Adaptive2DPositionalEncoding,
    ColumnPadding,
    DenseNetStem,
    ShallowCNN,
    TransformerDecoder,
    TransformerEncoderLayer,
)


@dataclass
class SATRNConfig(ModelConfig):
    hidden: int = 192  # model width d_model (competition: 300)
    filter: int = 384  # feed-forward width (competition: 600)
    encoder_layers: int = 3  # competition: 6
    decoder_layers: int = 2  # competition: 3
    heads: int = 6  # competition: 8
    head_dim: int | None = None  # per-head width; None = hidden // heads (competition: 37)
    stem: Literal["shallow", "densenet"] = "shallow"  # the paper's shallow CNN, or the competition's DenseNet (1/8)
    stem_pools: int = 3  # shallow stem: downsampling 2^pools; 3 -> 1/8 (paper: 2 -> 1/4)
    stem_channels: int | None = None  # shallow stem: width of its inner convs; None = hidden // 2 (the paper)
    stem_deformable: bool = False  # shallow stem: its last 3x3 conv becomes a deformable conv v2 (the team's best
    # single model had deformable convs in SATRN's stem)
    decoder_hidden: int | None = None  # decoder width; None = hidden (competition: 128)
    decoder_filter: int | None = None  # decoder feed-forward width; None = filter (competition: 512)
    decoder_heads: int | None = None  # decoder heads of decoder_hidden // decoder_heads dims; None = as the encoder
    dropout: float = 0.1
    locality_ff: bool = True  # locality-aware feed-forward in the encoder (False: plain MLP)
    adaptive_pe: bool = True  # A2DPE (False: plain 2D sinusoids)
    sample_scheduled: bool = False  # scheduled sampling samples predictions instead of argmax
    scheduled: Literal["two_pass", "loop"] = "two_pass"  # scheduled sampling in two parallel passes, or token by
    # token (the team's way; slower, kept as the benchmark's reference)


class SATRN(Recognizer):
    Config = SATRNConfig

    def build(self, c: SATRNConfig) -> None:
        self.stem = (DenseNetStem(c.in_channels, c.hidden) if c.stem == "densenet"
                     else ShallowCNN(c.in_channels, c.hidden, c.stem_channels, c.stem_pools, c.stem_deformable))
        if c.stem_deformable and c.stem != "shallow":
            raise ValueError(f"stem_deformable applies to the shallow stem, not {c.stem!r}")
        self.pos2d = Adaptive2DPositionalEncoding(c.hidden, adaptive=c.adaptive_pe, dropout=c.dropout)
        self.encoder = nn.ModuleList(
            TransformerEncoderLayer(c.hidden, c.heads, c.filter, c.dropout, c.head_dim, locality=c.locality_ff)
            for _ in range(c.encoder_layers)
        )
        self.encoder_norm = nn.LayerNorm(c.hidden)
        narrow = c.decoder_hidden is not None and c.decoder_hidden != c.hidden
        self.decoder = TransformerDecoder(self.vocab_size, c.decoder_hidden or c.hidden, c.decoder_layers,
                                          c.decoder_heads or c.heads, c.decoder_filter or c.filter, c.dropout,
                                          None if narrow else c.head_dim, c.max_len, self.pad_id, self.sos_id,
                                          sample=c.sample_scheduled, memory_dim=c.hidden if narrow else None,
                                          scheduled=c.scheduled)

    def encode(self, images: torch.Tensor, pad: ColumnPadding | None = None):
        features = self.pos2d(self.stem(images, pad), pad)  # (B, D, H/2^pools, W/2^pools)
        _, _, h, w = features.shape
        x = features.flatten(2).transpose(1, 2)  # (B, S=h*w, D)
        for layer in self.encoder:
            x = layer(x, (h, w), pad)
        return self.encoder_norm(x), (h, w)  # (B, S, D)
