"""CSTR: Cai et al. (2021), "Revisiting Classification Perspective on Scene Text Recognition".

Recognition as image classification: a CNN (CPNet: ResNet blocks with CBAM channel and spatial
attention, Woo et al. 2018) and a separated-attention prediction head (SPPN / SADM: every output
position has its own attention filter over the feature map — a learned, position-specific global
pooling — and its own classifier). No recurrence, no transformer; all positions are predicted in
one pass and trained with parallel cross-entropies.

Differences from the paper: a smaller CPNet without its non-local blocks and FPN; CBAM follows each
residual block (the paper plugs it inside); 2D sinusoids are added before the head
(`position_encoding`), since zero-padded CNN features carry little absolute position, and a
position-specific attention must find "the t-th symbol" somewhere in a 2D formula.

Cost of the classification view: the per-position classifiers hold max_len x C x V weights
(254 x 256 x 245 = 15.9 M at the competition vocabulary), most of the model; `shared_classifier`
uses one classifier for all positions instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ocrlib.config import Ints, ModelConfig, Strides
from ocrlib.models.base import ParallelRecognizer
from ocrlib.models.layers import (Adaptive2DPositionalEncoding, BasicBlock, ColumnPadding, Dropout, FoldingSequential,
                                  conv_bn_relu, key_mask, masked_mean, run_zeroing_padding, zero_padding)


@dataclass
class CSTRConfig(ModelConfig):
    channels: Ints = (64, 128, 256, 256)  # CPNet stage widths (paper: 48..768)
    blocks: Ints = (1, 2, 3, 2)  # residual blocks per stage, each followed by CBAM
    strides: Strides = ((2, 2), (2, 2), (2, 2), (1, 1))  # per stage (h, w): 1/8 resolution
    stem_channels: int = 32  # 3x3 stem conv before the stages
    cbam_reduction: int = 16  # channel-attention bottleneck ratio (CBAM paper: 16)
    cbam_kernel: int = 7  # spatial-attention conv size (CBAM paper: 7)
    head_channels: int = 256  # width of the conv that computes the per-position attention maps
    position_encoding: bool = True  # 2D sinusoids before the head (not in the paper; see module doc)
    shared_classifier: bool = False  # one classifier for all positions (paper: one per position)
    dropout: float = 0.1  # before the classifiers


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al. 2018): channel gate from an MLP on average- and
    max-pooled features, then a spatial gate from a conv over channel-average and channel-max maps.
    Its inputs are ReLU outputs (>= 0) with padded columns zeroed, so only the average needs the padding."""

    takes_padding = True

    def __init__(self, channels: int, reduction: int = 16, kernel: int = 7):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial = FoldingSequential(nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(1))

    def forward(self, x: torch.Tensor, pad: ColumnPadding | None = None) -> torch.Tensor:
        mean = masked_mean(x, pad)[:, :, None, None]  # (B, C, 1, 1)
        channel = self.mlp(mean) + self.mlp(x.amax((2, 3), keepdim=True))  # (B, C, 1, 1)
        x = x * torch.sigmoid(channel)
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)  # (B, 2, H, W)
        return x * torch.sigmoid(self.spatial(pooled))  # (B, C, H, W)


class SeparatedAttentionHead(nn.Module):
    """SADM: a shared conv, then one 1x1 filter per position -> P attention maps (softmax over space);
    glimpse_t = sum_ij a_{t,ij} f_ij; position t's own classifier (or one shared) -> logits."""

    def __init__(self, channels: int, hidden: int, n_positions: int, vocab_size: int, shared: bool, dropout: float):
        super().__init__()
        self.conv = conv_bn_relu(channels, hidden, 3)
        self.maps = nn.Conv2d(hidden, n_positions, 1)  # the "separated" filters, one per position
        self.dropout = Dropout(dropout)
        self.shared = nn.Linear(channels, vocab_size) if shared else None
        if not shared:
            bound = 1 / math.sqrt(channels)  # nn.Linear's default init, per position
            self.weight = nn.Parameter(torch.empty(n_positions, channels, vocab_size).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.empty(n_positions, vocab_size).uniform_(-bound, bound))

    def forward(self, features: torch.Tensor, pad: ColumnPadding | None = None):
        """features (B,C,h,w), padded columns zeroed -> logits (B,P,V), attention (B,P,h*w)."""
        scores = self.maps(self.conv(features)).flatten(2)  # (B, P, S)
        mask = key_mask(pad, features.shape[-2:])
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None], float("-inf"))
        attention = scores.softmax(-1)
        glimpses = self.dropout(attention @ features.flatten(2).transpose(1, 2))  # (B, P, C)
        if self.shared is not None:
            return self.shared(glimpses), attention
        return torch.einsum("bpc,pcv->bpv", glimpses, self.weight) + self.bias, attention  # (B, P, V)


class CSTR(ParallelRecognizer):
    Config = CSTRConfig

    def build(self, c: CSTRConfig) -> None:
        if not len(c.channels) == len(c.blocks) == len(c.strides):
            raise ValueError("channels, blocks and strides need one entry per stage")
        layers, prev = [conv_bn_relu(c.in_channels, c.stem_channels)], c.stem_channels
        for out_ch, n_blocks, stride in zip(c.channels, c.blocks, c.strides):
            for i in range(n_blocks):
                layers += [BasicBlock(prev, out_ch, tuple(stride) if i == 0 else 1),
                           CBAM(out_ch, c.cbam_reduction, c.cbam_kernel)]
                prev = out_ch
        self.cpnet = nn.Sequential(*layers)
        self.pos2d = Adaptive2DPositionalEncoding(prev, adaptive=False) if c.position_encoding else None
        self.head = SeparatedAttentionHead(prev, c.head_channels, c.max_len, self.vocab_size, c.shared_classifier, c.dropout)

    def predict(self, images: torch.Tensor, pad: ColumnPadding | None = None):
        features = run_zeroing_padding(self.cpnet, images, pad)  # (B, C, h, w)
        if self.pos2d is not None:
            features = zero_padding(self.pos2d(features), pad)  # the head's 3x3 conv reads beside the image
        logits, attention = self.head(features, pad)  # (B, P, V), (B, P, S)
        return logits, attention, tuple(features.shape[-2:])
