"""SATRN: Lee et al. (2020), "On Recognizing Texts of Arbitrary Shapes with 2D Self-Attention".

Shallow CNN stem (1/4 resolution in the paper; 1/8 by default here, see stem_pools) -> adaptive 2D
positional encoding (A2DPE) -> transformer encoder whose feed-forward is locality-aware (1x1 conv, 3x3 depthwise conv, 1x1 conv) -> transformer
decoder over the flattened 2D memory. Layers are pre-norm (the paper uses post-norm; pre-norm
trains stably at the small batch sizes of a CPU budget).

Competition setting (configs/satrn.yaml, preset `competition`): hidden 300, filter 600, 6 encoder /
3 decoder layers, 8 heads at 128x128 input. 300 is not divisible by 8, so, as in the competition's
baseline code, each head has 300 // 8 = 37 dims: queries/keys/values are projected to 8 * 37 = 296
and the attention output back to 300 (`head_dim` field; None means hidden // heads).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ocrlib.config import ModelConfig
from ocrlib.models.base import Recognizer
from ocrlib.models.layers import (
    Adaptive2DPositionalEncoding,
    ColumnPadding,
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
    stem_pools: int = 3  # stem downsampling 2^pools; 3 -> 1/8 (paper and competition: 2 -> 1/4)
    stem_channels: int | None = None  # width of the stem's inner convs; None = hidden // 2 (the paper)
    dropout: float = 0.1
    locality_ff: bool = True  # locality-aware feed-forward in the encoder (False: plain MLP)
    adaptive_pe: bool = True  # A2DPE (False: plain 2D sinusoids)
    sample_scheduled: bool = False  # scheduled sampling samples predictions instead of argmax


class SATRN(Recognizer):
    Config = SATRNConfig

    def build(self, c: SATRNConfig) -> None:
        self.stem = ShallowCNN(c.in_channels, c.hidden, c.stem_channels, pools=c.stem_pools)
        self.pos2d = Adaptive2DPositionalEncoding(c.hidden, adaptive=c.adaptive_pe, dropout=c.dropout)
        self.encoder = nn.ModuleList(
            TransformerEncoderLayer(c.hidden, c.heads, c.filter, c.dropout, c.head_dim, locality=c.locality_ff)
            for _ in range(c.encoder_layers)
        )
        self.encoder_norm = nn.LayerNorm(c.hidden)
        self.decoder = TransformerDecoder(self.vocab_size, c.hidden, c.decoder_layers, c.heads, c.filter, c.dropout,
                                          c.head_dim, c.max_len, self.pad_id, self.sos_id, sample=c.sample_scheduled)

    def encode(self, images: torch.Tensor, pad: ColumnPadding | None = None):
        features = self.pos2d(self.stem(images, pad), pad)  # (B, D, H/2^pools, W/2^pools)
        _, _, h, w = features.shape
        x = features.flatten(2).transpose(1, 2)  # (B, S=h*w, D)
        for layer in self.encoder:
            x = layer(x, (h, w), pad)
        return self.encoder_norm(x), (h, w)  # (B, S, D)
