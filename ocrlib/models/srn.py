"""SRN: Yu et al. (2020), "Towards Accurate Scene Text Recognition with Semantic Reasoning Networks".

ResNet + transformer encoder -> PVAM (parallel visual attention: one learned reading-order embedding
per output position queries the 2D features, all positions at once) -> visual logits;
GSRM (global semantic reasoning: embed the argmax of the visual prediction, transformer layers) ->
semantic logits; VSFD (a learned gate mixes the visual and semantic features) -> fused logits.
Trained with the paper's three cross-entropies (visual, semantic, fused; weights 1.0 / 0.15 / 2.0).

Differences from the paper, all for the formula setting and a CPU budget: a small ResNet (the paper
uses ResNet-50 + FPN), and the shared pre-norm transformer layers. GSRM here is one bidirectional
stack over all predicted tokens; the authors' code hides each position's own token with a forward
and a backward masked stream (the shared encoder layer takes no mask).

Decoding is parallel (non-autoregressive): one forward pass predicts every position. `decode`
replays those per-position log-probabilities through the shared step API, so greedy, beam search and
the bracket constraint of `ocrlib.decoding` apply unchanged (see `ocrlib.models.base.ParallelRecognizer`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ocrlib.config import Ints, ModelConfig, Strides
from ocrlib.models.base import ParallelRecognizer
from ocrlib.models.layers import (
    Adaptive2DPositionalEncoding,
    ColumnPadding,
    PositionalEncoding1D,
    ResNetBackbone,
    TransformerEncoderLayer,
    key_mask,
)


@dataclass
class SRNConfig(ModelConfig):
    channels: Ints = (32, 64, 128, 256)  # ResNet stage widths (paper: ResNet-50 + FPN, 512 wide)
    blocks: Ints = (1, 2, 2, 2)  # residual blocks per stage
    strides: Strides = ((2, 2), (2, 2), (2, 2), (1, 1))  # per stage (h, w): 1/8 resolution as in the paper
    stem_channels: int = 32  # 3x3 stem conv before the stages
    hidden: int = 256  # d_model of encoder, PVAM and GSRM (paper: 512)
    heads: int = 8  # attention heads (paper: 8)
    filter: int = 512  # transformer feed-forward width
    encoder_layers: int = 2  # transformer units after the CNN (paper: 2)
    gsrm_layers: int = 2  # transformer units of GSRM (paper: 4)
    dropout: float = 0.1  # transformer dropout
    visual_weight: float = 1.0  # loss weight of the PVAM prediction (paper: 1.0)
    semantic_weight: float = 0.15  # loss weight of the GSRM prediction (paper: 0.15)
    fused_weight: float = 2.0  # loss weight of the VSFD prediction (paper: 2.0)
    gsrm_teacher: bool = False  # training feeds GSRM the true token at each position with probability tf_ratio
    # (the rest: the visual argmax, as at inference); with tf_ratio annealed to 0 GSRM starts from clean input


class PVAM(nn.Module):
    """Parallel visual attention (SRN §3.2): e_{t,ij} = w_e . tanh(W_o f_o(t) + W_v v_ij), softmax over ij,
    glimpse g_t = sum_ij a_{t,ij} v_ij, for all reading orders t = 0..P-1 at once (P x S scores)."""

    def __init__(self, d_model: int, n_positions: int):
        super().__init__()
        self.order = nn.Embedding(n_positions, d_model)  # f_o: reading-order embeddings
        self.w_o = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model, bias=False)
        self.w_e = nn.Linear(d_model, 1, bias=False)

    def forward(self, memory: torch.Tensor, mask: torch.Tensor | None = None):
        """memory (B,S,D), mask (B,S) bool (True = image) -> glimpses (B,P,D), attention (B,P,S)."""
        queries = self.w_o(self.order.weight)  # (P, D)
        keys = self.w_v(memory)  # (B, S, D)
        scores = self.w_e(torch.tanh(queries[None, :, None] + keys[:, None])).squeeze(-1)  # (B, P, S)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None], float("-inf"))
        attention = scores.softmax(-1)
        return attention @ memory, attention  # (B, P, D), (B, P, S)


class GSRM(nn.Module):
    """Global semantic reasoning (SRN §3.3): the visual prediction's argmax (or, training with gsrm_teacher,
    partly the true tokens), embedded (no gradient through argmax), plus positions, through transformer
    layers -> semantic features and logits."""

    def __init__(self, vocab_size: int, d_model: int, n_positions: int, n_layers: int, heads: int, d_ff: int,
                 dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = PositionalEncoding1D(d_model, n_positions)
        self.layers = nn.ModuleList(TransformerEncoderLayer(d_model, heads, d_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pos(self.embed(tokens))  # (B, P, D)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return x, self.head(x)  # (B, P, D), (B, P, V)


class VSFD(nn.Module):
    """Visual-semantic fusion decoder (SRN §3.4): z = sigmoid(W_z [g; s]), f = z * g + (1 - z) * s."""

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.gate = nn.Linear(2 * d_model, d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, visual: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        z = torch.sigmoid(self.gate(torch.cat([visual, semantic], dim=-1)))  # (B, P, D)
        return self.head(z * visual + (1 - z) * semantic)  # (B, P, V)


class SRN(ParallelRecognizer):
    """forward -> fused logits; `forward_all` -> all three; `forward_logits_loss` -> fused logits and the
    three-term loss (what training uses)."""

    Config = SRNConfig

    def build(self, c: SRNConfig) -> None:
        self.backbone = ResNetBackbone(c.in_channels, c.channels, c.blocks, c.strides, c.stem_channels)
        self.project = nn.Conv2d(self.backbone.out_channels, c.hidden, 1)
        self.pos2d = Adaptive2DPositionalEncoding(c.hidden, adaptive=False)
        self.encoder = nn.ModuleList(
            TransformerEncoderLayer(c.hidden, c.heads, c.filter, c.dropout) for _ in range(c.encoder_layers)
        )
        self.encoder_norm = nn.LayerNorm(c.hidden)
        self.pvam = PVAM(c.hidden, c.max_len)
        self.visual_head = nn.Linear(c.hidden, self.vocab_size)
        self.gsrm = GSRM(self.vocab_size, c.hidden, c.max_len, c.gsrm_layers, c.heads, c.filter, c.dropout)
        self.vsfd = VSFD(c.hidden, self.vocab_size)

    def encode(self, images: torch.Tensor, pad: ColumnPadding | None = None):
        features = self.pos2d(self.project(self.backbone(images, pad)))  # (B, D, h, w)
        _, _, h, w = features.shape
        x = features.flatten(2).transpose(1, 2)  # (B, S=h*w, D)
        for layer in self.encoder:
            x = layer(x, (h, w), pad)
        return self.encoder_norm(x), (h, w)

    def forward_all(self, images: torch.Tensor, pad: ColumnPadding | None = None,
                    truth: torch.Tensor | None = None, tf_ratio: float = 0.0) -> dict:
        """-> dict(visual, semantic, fused: logits (B,P,V), attention: PVAM maps (B,P,S), hw). With `truth`
        (B,T) ids, GSRM reads the true token at each of the first T positions with probability tf_ratio."""
        memory, hw = self.encode(images, pad)
        glimpses, attention = self.pvam(memory, key_mask(pad, hw))  # (B, P, D), (B, P, S)
        visual = self.visual_head(glimpses)  # (B, P, V)
        tokens = visual.argmax(-1)  # (B, P)
        if truth is not None and tf_ratio > 0:
            T = truth.size(1)
            use_truth = torch.rand(truth.shape, device=truth.device) < tf_ratio
            tokens = torch.cat([torch.where(use_truth, truth, tokens[:, :T]), tokens[:, T:]], dim=1)
        semantic_features, semantic = self.gsrm(tokens)
        fused = self.vsfd(glimpses, semantic_features)
        return {"visual": visual, "semantic": semantic, "fused": fused, "attention": attention, "hw": hw}

    def predict(self, images: torch.Tensor, pad: ColumnPadding | None = None):
        out = self.forward_all(images, pad)
        return out["fused"], out["attention"], out["hw"]

    def forward_logits_loss(self, images: torch.Tensor, targets: torch.Tensor, tf_ratio: float = 1.0,
                            label_smoothing: float = 0.0, widths: torch.Tensor | None = None):
        """Fused logits (B,T,V) and the paper's loss w_v L_visual + w_s L_semantic + w_f L_fused."""
        T, c = self.positions(targets), self.config
        teacher = c.gsrm_teacher and self.training
        pad = ColumnPadding.of(widths, images.size(-1))
        out = self.forward_all(images, pad, targets[:, :T] if teacher else None, tf_ratio)
        visual, semantic, fused = (out[key][:, :T] for key in ("visual", "semantic", "fused"))
        loss = (c.visual_weight * self.loss(visual, targets, label_smoothing)
                + c.semantic_weight * self.loss(semantic, targets, label_smoothing)
                + c.fused_weight * self.loss(fused, targets, label_smoothing))
        return fused, loss
