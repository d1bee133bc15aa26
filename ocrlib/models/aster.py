"""ASTER: Shi et al. (2018), "ASTER: An Attentional Scene Text Recognizer with Flexible Rectification" (TPAMI).

TPS rectification (ocrlib.models.tps) -> ResNet -> two-layer BiLSTM over the feature columns
-> attention GRU decoder (the shared `AttentionRNNDecoder`), decoded autoregressively through the
shared step API (greedy / beam search of ocrlib.decoding).

Defaults are a smaller model for CPU budgets (configs/aster.yaml, preset `paper`: the paper's
45-layer ResNet and widths). Differences from the paper: the rectified image is larger than its
32x100 (formulas are taller than words), and each column keeps `feature_height` rows, flattened
into the BiLSTM input, instead of the single row of a 32-pixel text line. The paper's second,
right-to-left decoder is left out. The BiLSTM output is layer-normalised: at initialisation its
units have a standard deviation of 0.04, so the attention context reached the decoder 18x quieter
than the token embedding beside it (norm 0.6 against 11) and training sat at the language-model
plateau (SA 0.000 after 2,832 steps); normalised, the context has the scale the Attention model's
CNN grid gives it.
Option `rectify_keep_aspect` (by default on exactly for keep-aspect inputs, ASTER's default): the rectified
image keeps the input's aspect ratio, so a long formula is not squeezed into rectified_size's width.
Option `deformable`: the second 3x3 conv of every residual block in the last `deformable_stages`
stages becomes a deformable conv (ocrlib.models.deform_conv; v2 with `modulated`) — the competition
team's variant.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ocrlib.config import Cell, Ints, ModelConfig, Size, Strides
from ocrlib.models.base import Recognizer
from ocrlib.models.deform_conv import deformable_like
from ocrlib.models.layers import AttentionRNNDecoder, ColumnPadding, ResNetBackbone
from ocrlib.models.tps import TPSRectifier


@dataclass
class ASTERConfig(ModelConfig):
    rectify: bool = True  # TPS rectification stage (paper: on)
    rectified_size: Size = (64, 256)  # TPS output (h, w) fed to the ResNet (paper: 32 x 100)
    # TPS output rectified_size[0] high and as wide as the input keeps it (rectified_size[1]: the TPS field's
    # resolution); None: keep-aspect exactly when the inputs are (data.width null), as model_from_config resolves
    rectify_keep_aspect: bool | None = None
    num_fiducial: int = 20  # TPS control points, half on the top edge, half on the bottom (paper: 20)
    loc_size: Size = (32, 64)  # localisation-net input size (paper: 32 x 64)
    channels: Ints = (32, 64, 128, 256, 256)  # ResNet stage widths (paper, Table 1: ... 256, 512)
    blocks: Ints = (1, 2, 2, 2, 1)  # residual blocks per stage (paper: 3, 4, 6, 6, 3 = 45 layers)
    strides: Strides = ((2, 2), (2, 2), (2, 1), (2, 1), (2, 1))  # per stage (h, w) (paper)
    stem_channels: int = 32  # 3x3 stem conv (paper: 32)
    feature_height: int = 2  # rows per column after adaptive pooling, flattened (paper: 1)
    lstm_hidden: int = 128  # BiLSTM width per direction (paper: 256)
    lstm_layers: int = 2  # BiLSTM layers (paper: 2)
    cell: Cell = "gru"  # decoder cell (paper: GRU)
    dec_hidden: int = 256  # decoder state width (paper: 512)
    embed_dim: int = 128  # token embedding width
    attn_dim: int = 256  # additive-attention width (paper: 512)
    dropout: float = 0.1  # before the output layer
    deformable: bool = False  # deformable convs in the last stages (competition variant, not in the paper)
    deformable_stages: int = 2  # how many final stages get them
    modulated: bool = False  # deformable conv v2 (modulation masks) instead of v1


class ASTER(Recognizer):
    Config = ASTERConfig

    def build(self, c: ASTERConfig) -> None:
        self.rectifier = (TPSRectifier(c.in_channels, tuple(c.rectified_size), c.num_fiducial, tuple(c.loc_size),
                                       keep_aspect=bool(c.rectify_keep_aspect)) if c.rectify else None)
        self.backbone = ResNetBackbone(c.in_channels, c.channels, c.blocks, c.strides, c.stem_channels)
        if c.deformable:
            self._make_deformable(c.deformable_stages, c.modulated)
        self.pool = nn.AdaptiveAvgPool2d((c.feature_height, None))
        self.encoder = nn.LSTM(self.backbone.out_channels * c.feature_height, c.lstm_hidden, c.lstm_layers,
                               batch_first=True, bidirectional=True)
        self.encoder_norm = nn.LayerNorm(2 * c.lstm_hidden)
        self.decoder = AttentionRNNDecoder(self.vocab_size, 2 * c.lstm_hidden, c.dec_hidden, c.embed_dim, c.attn_dim,
                                           c.cell, c.dropout, self.pad_id, self.sos_id)

    def _make_deformable(self, n_stages: int, modulated: bool) -> None:
        """Swap the second 3x3 conv of each block of the last n stages for a DeformConv2d."""
        blocks = list(self.backbone.body)[1:]  # [stem, block, block, ...] -> blocks
        first = sum(self.config.blocks[:len(self.config.blocks) - n_stages])
        for block in blocks[first:]:
            block.conv2[0] = deformable_like(block.conv2[0], modulated)

    def encode(self, images: torch.Tensor, pad: ColumnPadding | None = None):
        if self.rectifier is not None:
            images = self.rectifier(images, pad)  # (B, C, h_r, w_r), or keep-aspect: the same columns padded
            pad = pad if self.rectifier.keep_aspect else None  # a fixed-size output is all image
        features = self.pool(self.backbone(images, pad))  # (B, C, feature_height, w)
        columns = features.permute(0, 3, 1, 2).flatten(2)  # (B, w, C * feature_height)
        if pad is None:
            memory, _ = self.encoder(columns)  # (B, w, 2 * lstm_hidden)
        else:  # the backward LSTM starts at each image's last column, not in the padding
            lengths = pad.columns(columns.size(1)).sum(1).cpu()
            packed = pack_padded_sequence(columns, lengths, batch_first=True, enforce_sorted=False)
            memory, _ = pad_packed_sequence(self.encoder(packed)[0], batch_first=True, total_length=columns.size(1))
        return self.encoder_norm(memory), (1, memory.size(1))

    def memory_mask(self, pad: ColumnPadding | None, hw: tuple[int, int]) -> torch.Tensor | None:
        fixed_size = self.rectifier is not None and not self.rectifier.keep_aspect
        return None if fixed_size else super().memory_mask(pad, hw)
