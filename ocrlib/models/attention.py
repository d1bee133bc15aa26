"""Show, Attend and Tell: Xu et al. (2015), "Show, Attend and Tell: Neural Image Caption Generation
with Visual Attention", as used for formulas by Deng et al. (2017, im2latex "WYGIWYS").

A residual CNN encodes the image into a grid of feature vectors; an LSTM (or GRU) decoder attends
over the grid with additive attention at every step. Unlike the captioning paper we add 2D
sinusoids to the grid (Deng et al. add a row encoder for the same reason): in a formula *where* a
glyph sits (superscript, denominator) is part of what it means.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ocrlib.config import Cell, Ints, ModelConfig, Strides
from ocrlib.models.base import Recognizer
from ocrlib.models.layers import Adaptive2DPositionalEncoding, AttentionRNNDecoder, ColumnPadding, ResNetBackbone


@dataclass
class AttentionConfig(ModelConfig):
    channels: Ints = (32, 64, 128, 256)  # CNN stage widths; the last is the memory width
    blocks: Ints = (1, 1, 2, 1)  # residual blocks per stage
    strides: Strides = ((2, 2), (2, 2), (2, 1), (2, 1))  # per stage (h, w): 64x256 -> 4x64 grid
    stem_channels: int = 32  # 3x3 stem conv before the stages
    position_encoding: bool = True  # add 2D sinusoids to the grid (not in Xu et al.)
    cell: Cell = "lstm"  # "lstm" (Xu et al.) or "gru"
    hidden: int = 256  # recurrent state width
    embed_dim: int = 128  # token embedding width
    attn_dim: int = 256  # additive-attention width
    dropout: float = 0.1  # before the output layer


class AttentionOCR(Recognizer):
    Config = AttentionConfig

    def build(self, c: AttentionConfig) -> None:
        self.backbone = ResNetBackbone(c.in_channels, c.channels, c.blocks, c.strides, c.stem_channels)
        width = self.backbone.out_channels
        self.pos2d = Adaptive2DPositionalEncoding(width, adaptive=False) if c.position_encoding else None
        self.decoder = AttentionRNNDecoder(self.vocab_size, width, c.hidden, c.embed_dim, c.attn_dim, c.cell,
                                           c.dropout, self.pad_id, self.sos_id)

    def encode(self, images: torch.Tensor, pad: ColumnPadding | None = None):
        features = self.backbone(images, pad)  # (B, C, h, w)
        if self.pos2d is not None:
            features = self.pos2d(features)
        _, _, h, w = features.shape
        return features.flatten(2).transpose(1, 2), (h, w)  # (B, S=h*w, C)
