"""Building blocks shared by the recognisers.

- positional encodings: `sinusoid_table`, `PositionalEncoding1D`, `Adaptive2DPositionalEncoding`
  (SATRN's A2DPE; `adaptive=False` gives the plain 2D sinusoidal encoding)
- CNN parts: `conv2d` and `FoldingSequential` (batch norms folded into convolutions in eval mode), `ShallowCNN`
  (SATRN stem), `DenseNetStem` (the competition's), `BasicBlock` + `ResNetBackbone` (ASTER-style); every model runs
  its convolutions channels-last (`base.Recognizer`)
- transformer parts: `MultiHeadAttention` (head_dim * n_heads may differ from d_model),
  `FeedForward`, `LocalityAwareFeedForward`, `TransformerEncoderLayer`, `TransformerDecoderLayer`
  (self-attention key/value cache), `TransformerDecoder` (embedding + layers + head, step API)
- recurrent parts: `AdditiveAttention` (Bahdanau, keys projected once per image),
  `AttentionRNNDecoder` (LSTM or GRU, Show-Attend-Tell / ASTER style, step API)

Keep-aspect batches are zero-padded on the right; `ColumnPadding` says which feature columns hold
image. Every layer that mixes columns takes it (`pad`, None for unpadded batches): CNNs zero the padded
columns after each layer, pooled statistics and attention skip them, so an image reads the same alone
and padded in a batch.

Both decoders follow one protocol, which `base.Recognizer` and `ocrlib.decoding` drive:
    decoder(memory (B,S,C), targets (B,T), tf_ratio, mask (B,S) | None) -> logits (B,T,V)  # training
    decoder.init_state(memory, mask) -> dict      # every tensor in it is batch-first
    decoder.step(state, prev_tokens (N,)) -> logits (N,V), new state with "attn" (N,S)
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ocrlib.models.deform_conv import deformable_like

# --------------------------------------------------------------------------- dropout


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout whose mask costs one random draw per 8 elements, not one per element.

    CPU torch draws every element of F.dropout's mask from a Mersenne twister: on 2 cores that was 9-14% of a
    SATRN step (docs/performance.md). Here each random int64 gives 8 bytes, and an element is dropped when its
    byte is below round(256 p): p is kept to 1/256 (0.1 -> 26/256 = 0.1016) and the scale is exact for that p.
    The draws come from torch's generator, so seeds and resumes stay deterministic."""
    if not training or p == 0.0:
        return x
    threshold = round(p * 256)
    n = x.numel()
    random_bytes = torch.empty((n + 7) // 8, dtype=torch.int64, device=x.device).random_(-2**63, 2**63 - 1)
    random_bytes = random_bytes.view(torch.uint8)  # all 64 bits random (random_() leaves the sign bit 0)
    keep = (random_bytes[:n].view(x.shape) >= threshold).to(x.dtype)
    return x * keep.mul_(256 / (256 - threshold))


class Dropout(nn.Module):
    """nn.Dropout with `dropout`'s cheap mask."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --------------------------------------------------------------------------- padding of keep-aspect batches


class ColumnPadding:
    """Which columns of a feature map hold image, for a batch of images of `widths` pixels zero-padded on
    the right to `input_width`.

    A feature map w columns wide keeps column j iff j < ceil(width * w / input_width): a stride-2 conv
    (kernel 3, padding 1) or 2x2 pool centres output column j on input column 2j. Zeroing the rest after
    every layer makes a padded image's valid features equal to those it has alone, where the same
    columns are zero (a conv's own zero padding).
    """

    def __init__(self, widths: torch.Tensor, input_width: int):
        self.widths, self.input_width = widths, input_width

    @classmethod
    def of(cls, widths: torch.Tensor | None, input_width: int) -> ColumnPadding | None:
        """None when nothing is padded (fixed-size inputs, or no widths given)."""
        if widths is None or bool((widths >= input_width).all()):
            return None
        return cls(widths, input_width)

    def rows(self, start: int, stop: int) -> ColumnPadding:
        """The padding of images start..stop-1 of the batch."""
        return ColumnPadding(self.widths[start:stop], self.input_width)

    def columns(self, w: int) -> torch.Tensor:
        """(B, w) bool, True where a column of a w-wide feature map holds image."""
        valid = (self.widths.to(torch.long) * w + self.input_width - 1) // self.input_width  # ceil, (B,)
        return torch.arange(w, device=self.widths.device)[None] < valid[:, None]

    def zero(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, w) with the padded columns set to 0."""
        return x * self.columns(x.size(-1))[:, None, None, :].to(x.dtype)

    def keys(self, hw: tuple[int, int]) -> torch.Tensor:
        """(B, h*w) bool over a flattened (row-major) h x w grid: the positions attention may use."""
        h, w = hw
        return self.columns(w)[:, None, :].expand(-1, h, -1).flatten(1)


def zero_padding(x: torch.Tensor, pad: ColumnPadding | None) -> torch.Tensor:
    return x if pad is None else pad.zero(x)


def key_mask(pad: ColumnPadding | None, hw: tuple[int, int]) -> torch.Tensor | None:
    return None if pad is None else pad.keys(hw)


def masked_mean(x: torch.Tensor, pad: ColumnPadding | None) -> torch.Tensor:
    """Mean of x (B, C, H, W) over the image part of each map -> (B, C)."""
    if pad is None:
        return x.mean(dim=(2, 3))
    keep = pad.columns(x.size(-1)).to(x.dtype)  # (B, W)
    return (x * keep[:, None, None, :]).sum(dim=(2, 3)) / (keep.sum(1, keepdim=True) * x.size(2))


# --------------------------------------------------------------------------- positional encodings


def sinusoid_table(n_positions: int, dim: int, device=None) -> torch.Tensor:
    """Vaswani et al. (2017) sinusoids, (n_positions, dim); odd dims are fine."""
    pos = torch.arange(n_positions, dtype=torch.float32, device=device)[:, None]  # (P, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table  # (P, D)


class PositionalEncoding1D(nn.Module):
    """Adds sinusoids to a token sequence; `offset` is the position of x[:, 0] (cached decoding)."""

    def __init__(self, d_model: int, max_len: int = 512):
        super().__init__()
        self.register_buffer("table", sinusoid_table(max_len, d_model), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        T = x.size(1)
        if offset + T > self.table.size(0):
            raise ValueError(f"sequence of {offset + T} positions exceeds the encoding table ({self.table.size(0)})")
        return x + self.table[offset:offset + T]  # (B, T, D)


class Adaptive2DPositionalEncoding(nn.Module):
    """SATRN's A2DPE (Lee et al. 2020, eq. 3): p_hw = alpha(E) * p_h + beta(E) * p_w.

    alpha and beta are per-channel scales computed from the globally pooled feature map, so the
    model can weigh vertical against horizontal position per image (tall fractions vs long lines).
    With adaptive=False both scales are 1: the plain 2D sinusoidal encoding. Any H, W works.
    """

    def __init__(self, d_model: int, adaptive: bool = True, dropout: float = 0.0):
        super().__init__()
        self.adaptive = adaptive
        if adaptive:
            self.alpha, self.beta = (
                nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model), nn.Sigmoid())
                for _ in range(2)
            )
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: ColumnPadding | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        p_h = sinusoid_table(H, C, x.device).t()[None, :, :, None]  # (1, C, H, 1)
        p_w = sinusoid_table(W, C, x.device).t()[None, :, None, :]  # (1, C, 1, W)
        if self.adaptive:
            pooled = masked_mean(x, pad)  # (B, C)
            p_h = self.alpha(pooled)[:, :, None, None] * p_h  # (B, C, H, 1)
            p_w = self.beta(pooled)[:, :, None, None] * p_w  # (B, C, 1, W)
        return self.dropout(x + p_h + p_w)  # (B, C, H, W)


# --------------------------------------------------------------------------- CNN parts


def conv2d(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> torch.Tensor:
    """conv(x), then bn in eval mode folded in: its running statistics scale the convolution's weights and shift
    its bias, so the feature map is written once instead of twice. A strided 1x1 convolution subsamples first (the
    same function, without computing the skipped positions; oneDNN's channels-last backward of a strided 1x1
    convolution over fewer than 16 channels corrupts memory in torch 2.13)."""
    weight, bias, stride = conv.weight, conv.bias, conv.stride
    if conv.kernel_size == (1, 1) and stride != (1, 1) and conv.padding in ((0, 0), "valid"):
        x, stride = x[:, :, ::stride[0], ::stride[1]], 1
    if bn is not None:
        scale, shift = bn_scale_shift(bn)
        bias = shift + (0 if bias is None else bias * scale)
        weight = weight * scale.view(-1, 1, 1, 1)
    return F.conv2d(x, weight, bias, stride, conv.padding, conv.dilation, conv.groups)


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch norm in eval mode (with running statistics) as y = x * scale + shift, (C,) each."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = bn.weight * scale
    shift = -bn.running_mean * scale
    return scale, (shift + bn.bias if bn.affine else shift)


def _foldable(layer: nn.Module, training: bool) -> bool:
    """A batch norm that normalises with its running statistics, i.e. an affine map: eval mode, statistics kept."""
    return isinstance(layer, nn.BatchNorm2d) and not training and layer.track_running_stats


class FoldingSequential(nn.Sequential):
    """nn.Sequential (same children, same checkpoint keys) whose convolutions run through `conv2d`: in eval mode a
    Conv2d -> BatchNorm2d pair is one convolution, and a batch norm on its own one multiply-add (torch's kernel is
    3x slower on a channel slice of a larger map, what a DenseNet layer reads). Training keeps the layers as they
    are: batch statistics cannot be folded."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        i = 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, nn.Conv2d):
                fold = i + 1 < len(layers) and _foldable(layers[i + 1], self.training)
                x = conv2d(x, layer, layers[i + 1] if fold else None)
                i += 2 if fold else 1
            elif _foldable(layer, self.training):
                scale, shift = bn_scale_shift(layer)
                x, i = torch.addcmul(shift.view(-1, 1, 1), x, scale.view(-1, 1, 1)), i + 1
            else:
                x, i = layer(x), i + 1
        return x


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 3, stride=1, groups: int = 1) -> nn.Sequential:
    return FoldingSequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ShallowCNN(nn.Module):
    """SATRN's stem: (3x3 conv, BN, ReLU, 2x2 max-pool) blocks; two (the paper) -> 1/4 resolution,
    three -> 1/8 (a quarter of the encoder positions, so self-attention costs 1/16). deformable_last: the last
    block's conv is a deformable conv v2."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None, pools: int = 2,
                 deformable_last: bool = False):
        super().__init__()
        mid = mid_channels or out_channels // 2
        widths = [in_channels] + [mid] * (pools - 1) + [out_channels]
        self.body = nn.Sequential(*(
            layer for a, b in zip(widths, widths[1:]) for layer in (conv_bn_relu(a, b), nn.MaxPool2d(2))))
        if deformable_last:
            last = self.body[-2]  # [conv-bn-relu, pool] * pools
            last[0] = deformable_like(last[0], modulated=True)
        self.out_channels = out_channels
        self.reduction = 2 ** pools

    def forward(self, images: torch.Tensor, pad: ColumnPadding | None = None) -> torch.Tensor:
        return run_zeroing_padding(self.body, images, pad)  # (B, C, H/2^pools, W/2^pools)


class DenseLayer(nn.Module):
    """DenseNet-BC bottleneck (Huang et al. 2017): BN, ReLU, 1x1 conv to `bottleneck` channels, BN, ReLU,
    3x3 conv to `growth` channels, concatenated to the input."""

    takes_padding = True

    def __init__(self, in_ch: int, growth: int, bottleneck: int, dropout: float = 0.0):
        super().__init__()
        self.reduce = FoldingSequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True),
                                        nn.Conv2d(in_ch, bottleneck, 1, bias=False), nn.BatchNorm2d(bottleneck),
                                        nn.ReLU(inplace=True))
        self.grow = nn.Sequential(nn.Conv2d(bottleneck, growth, 3, padding=1, bias=False), Dropout(dropout))
        self.growth = growth

    def new_features(self, x: torch.Tensor, pad: ColumnPadding | None = None) -> torch.Tensor:
        """The `growth` channels this layer adds to x."""
        return self.grow(zero_padding(self.reduce(x), pad))  # the 3x3 conv sees zeros beside the image, as alone

    def forward(self, x: torch.Tensor, pad: ColumnPadding | None = None) -> torch.Tensor:
        return torch.cat([x, self.new_features(x, pad)], dim=1)


class DenseTransition(nn.Module):
    """BN, ReLU, 1x1 conv, then 2x2 average pooling unless pool=False."""

    takes_padding = True

    def __init__(self, in_ch: int, out_ch: int, pool: bool = True):
        super().__init__()
        self.body = FoldingSequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True), nn.Conv2d(in_ch, out_ch, 1, bias=False))
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor, pad: ColumnPadding | None = None) -> torch.Tensor:
        return self.pool(zero_padding(self.body(x), pad))  # pooling averages image columns with zeros, as alone


class DenseNetStem(nn.Module):
    """The competition baseline's CNN before its SATRN encoder: a DenseNet-BC to 1/8 resolution. 7x7 conv
    stride 2, 2x2 max-pool, dense block, transition (halving channels, 2x2 average pool), dense block, 1x1 conv
    to `out_channels`. With the defaults (stem 48, growth 24, depth 16, bottleneck 3 x growth) a block adds
    384 channels: 48 -> 432 -> 216 -> 600 -> out (the team's 300), 1.52 M parameters."""

    def __init__(self, in_channels: int, out_channels: int, stem: int = 48, growth: int = 24, depth: int = 16,
                 dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(in_channels, stem, 7, 2), nn.MaxPool2d(2)]
        width = stem
        for block in range(2):
            for _ in range(depth):
                layers.append(DenseLayer(width, growth, 3 * growth, dropout))
                width += growth
            last = block == 1
            layers.append(DenseTransition(width, out_channels if last else width // 2, pool=not last))
            width //= 2
        self.body = nn.Sequential(*layers)
        self.out_channels = out_channels
        self.reduction = 8
        self.images_per_pass = 8  # without autograd (below)

    def forward(self, images: torch.Tensor, pad: ColumnPadding | None = None) -> torch.Tensor:
        if torch.is_grad_enabled():
            return run_zeroing_padding(self.body, images, pad)  # (B, C, H/8, W/8)
        # A few images at a time: a dense block's map of 32 128x128 images (56 MB) leaves the cache between the
        # layers that read it, one of 8 (14 MB) less so; the stem ran 1.35x faster per image at batch 32.
        size = self.images_per_pass
        parts = [self._forward_in_place(images[i:i + size], None if pad is None else pad.rows(i, i + size))
                 for i in range(0, images.size(0), size)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _forward_in_place(self, x: torch.Tensor, pad: ColumnPadding | None) -> torch.Tensor:
        """The same without autograd: each dense block writes its layers' features into one preallocated map
        instead of concatenating a growing copy at every layer (quadratic in the depth)."""
        for dense, group in itertools.groupby(self.body, key=lambda layer: isinstance(layer, DenseLayer)):
            group = list(group)
            if not dense:
                for layer in group:
                    x = run_zeroing(layer, x, pad)
                continue
            c = x.size(1)
            out = torch.empty(x.size(0), c + sum(layer.growth for layer in group), *x.shape[2:], dtype=x.dtype,
                              device=x.device, memory_format=torch.channels_last)
            out[:, :c] = x
            for layer in group:
                out[:, c:c + layer.growth] = zero_padding(layer.new_features(out[:, :c], pad), pad)
                c += layer.growth
            x = out
        return x


class BasicBlock(nn.Module):
    """He et al. (2016) basic residual block; stride may be a (h, w) pair, e.g. (2, 1) as in ASTER."""

    takes_padding = True

    def __init__(self, in_ch: int, out_ch: int, stride=1):
        super().__init__()
        self.conv1 = conv_bn_relu(in_ch, out_ch, 3, stride)
        self.conv2 = FoldingSequential(nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch))
        needs_projection = in_ch != out_ch or stride not in (1, (1, 1))
        self.shortcut = (
            FoldingSequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
            if needs_projection else nn.Identity()
        )

    def forward(self, x: torch.Tensor, pad: ColumnPadding | None = None) -> torch.Tensor:
        inner = zero_padding(self.conv1(x), pad)
        return zero_padding(F.relu(self.conv2(inner) + self.shortcut(x)), pad)


def run_zeroing_padding(layers: nn.Sequential, x: torch.Tensor, pad: ColumnPadding | None) -> torch.Tensor:
    """Apply layers in turn, zeroing padded columns after each (`run_zeroing`)."""
    if pad is None:
        return layers(x)
    for layer in layers:
        x = run_zeroing(layer, x, pad)
    return x


def run_zeroing(layer: nn.Module, x: torch.Tensor, pad: ColumnPadding | None) -> torch.Tensor:
    """layer(x) with padded columns zeroed after it; a block that mixes columns inside (`takes_padding`) gets `pad`
    itself."""
    return zero_padding(layer(x, pad) if getattr(layer, "takes_padding", False) else layer(x), pad)


class ResNetBackbone(nn.Module):
    """3x3 stem conv then one stage of BasicBlocks per entry of `channels`; the first block of a stage
    applies that stage's stride. Defaults are ASTER's 45-layer ResNet (Shi et al. 2018, Table 1)."""

    def __init__(self, in_channels: int = 1, channels=(32, 64, 128, 256, 512), blocks=(3, 4, 6, 6, 3),
                 strides=((2, 2), (2, 2), (2, 1), (2, 1), (2, 1)), stem_channels: int = 32):
        super().__init__()
        if not len(channels) == len(blocks) == len(strides):
            raise ValueError("channels, blocks and strides need one entry per stage")
        layers = [conv_bn_relu(in_channels, stem_channels)]
        prev = stem_channels
        for out_ch, n_blocks, stride in zip(channels, blocks, strides):
            stride = tuple(stride) if isinstance(stride, (list, tuple)) else stride
            for i in range(n_blocks):
                layers.append(BasicBlock(prev, out_ch, stride if i == 0 else 1))
                prev = out_ch
        self.body = nn.Sequential(*layers)
        self.out_channels = prev

    def forward(self, images: torch.Tensor, pad: ColumnPadding | None = None) -> torch.Tensor:
        return run_zeroing_padding(self.body, images, pad)  # (B, C_out, H / prod(stride_h), W / prod(stride_w))


# --------------------------------------------------------------------------- transformer parts


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention whose inner size n_heads * head_dim may differ from
    d_model (the competition SATRN: d_model 300, 8 heads of 37 = 296, projected back to 300).

    Split into `project_kv` and `attend` so callers can project keys/values once and reuse them
    (encoder memory in cross-attention; the self-attention cache while decoding).
    """

    def __init__(self, d_model: int, n_heads: int, head_dim: int | None = None, dropout: float = 0.0,
                 source_dim: int | None = None):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = head_dim or d_model // n_heads
        inner = n_heads * self.head_dim
        source_dim = source_dim or d_model  # keys/values may come from a wider memory (the team's decoder: 128 on 300)
        self.q_proj = nn.Linear(d_model, inner)
        self.k_proj = nn.Linear(source_dim, inner)
        self.v_proj = nn.Linear(source_dim, inner)
        self.out_proj = nn.Linear(inner, d_model)
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, h, T, dh)

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._split(self.k_proj(source)), self._split(self.v_proj(source))  # 2 x (B, h, S, dh)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
               need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B,T,D) queries; k, v (B,h,S,dh); mask bool, True = may attend, broadcastable to (B,h,T,S).
        Returns (B,T,D) and, if asked, the head-averaged weights (B,T,S).

        k, v may hold fewer rows than x: n images' memory for n * K hypotheses in image order (beam search).
        Each image's K hypotheses then attend as K * T queries of one matrix product, so the memory is
        never copied per hypothesis (mask: per image, (n,1,1,S))."""
        rows = x.size(0)
        if k.size(0) != rows:
            x = x.reshape(k.size(0), -1, x.size(-1))  # (n, K*T, D)
        q = self._split(self.q_proj(x))  # (B, h, T, dh)
        p = self.dropout if self.training else 0.0
        weights = None
        # explicit softmax when the caller wants the map (decoding), or for dropout: SDPA's own draws a
        # Mersenne-twister number per weight on CPU
        if need_weights or p > 0:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, h, T, S)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            attn = scores.softmax(-1)
            out = dropout(attn, p) @ v  # (B, h, T, dh)
            weights = attn.mean(1) if need_weights else None  # (B, T, S)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, T, dh); p is 0 here
        out = out.transpose(1, 2).reshape(rows, -1, self.n_heads * self.head_dim)  # (B, T, h*dh)
        if weights is not None:
            weights = weights.reshape(rows, -1, weights.size(-1))
        return self.out_proj(out), weights

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        k, v = self.project_kv(x if source is None else source)
        return self.attend(x, k, v, mask)[0]


class FeedForward(nn.Module):
    """Position-wise feed-forward (Linear, ReLU, Linear); `hw` and `pad` accepted for a shared signature."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), Dropout(dropout), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None, pad: ColumnPadding | None = None):
        return self.net(x)  # (B, S, D)


class LocalityAwareFeedForward(nn.Module):
    """SATRN's locality-aware feed-forward (Lee et al. 2020, Fig. 4c): 1x1 conv, 3x3 depthwise conv,
    1x1 conv on the feature map, so neighbouring cells (one glyph) mix inside every encoder layer."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            conv_bn_relu(d_model, d_ff, 1),
            conv_bn_relu(d_ff, d_ff, 3, groups=d_ff),
            Dropout(dropout),
            nn.Conv2d(d_ff, d_model, 1),
        )

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None, pad: ColumnPadding | None = None):
        B, S, D = x.shape
        H, W = hw
        grid = x.reshape(B, H, W, D).permute(0, 3, 1, 2)  # (B, D, H, W), channels-last: a view, no copy
        expand, depthwise, drop, project = self.net
        inner = zero_padding(expand(grid), pad)  # the depthwise conv must see zeros beside the image, as alone
        return project(drop(depthwise(inner))).flatten(2).transpose(1, 2)  # (B, S, D)


class TransformerEncoderLayer(nn.Module):
    """Pre-norm encoder layer (pre-norm trains without warm-up tricks at small batch sizes)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, head_dim: int | None = None,
                 locality: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        # No dropout on the (S, S) attention weights: it forces SDPA's unfused path on CPU, which spent
        # two thirds of a SATRN step drawing and applying masks over 1024x1024 maps; residual dropout stays.
        self.attn = MultiHeadAttention(d_model, n_heads, head_dim)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = (LocalityAwareFeedForward if locality else FeedForward)(d_model, d_ff, dropout)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None,
                pad: ColumnPadding | None = None) -> torch.Tensor:
        keys = key_mask(pad, hw)  # (B, S) | None
        x = x + self.dropout(self.attn(self.norm1(x), mask=None if keys is None else keys[:, None, None, :]))
        return x + self.dropout(self.ff(self.norm2(x), hw, pad))  # (B, S, D)


KV = tuple[torch.Tensor, torch.Tensor]  # keys, values, each (B, h, S, dh)


class KVCache:
    """A decoder layer's self-attention keys and values of the positions so far, (N, h, T, dh) each.

    Beam search moves hypotheses between rows at every step, and greedy decoding drops the images that ended.
    `select_rows` (which `decoding.reorder` calls) only records the rows; the next `extend` gathers them while it
    appends the new positions: one copy of the cache per step instead of two (a gather, then a concatenation; two
    fifths of a beam search's time in the profile, a third of that after; 1.06x the competition SATRN's beam 5)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor | None = None):
        self.k, self.v, self.rows = k, v, rows

    @classmethod
    def of(cls, cache: KVCache | KV) -> KVCache:
        return cache if isinstance(cache, KVCache) else cls(*cache)

    @property
    def length(self) -> int:
        return self.k.size(2)

    def select_rows(self, index: torch.Tensor) -> KVCache:
        return KVCache(self.k, self.v, index if self.rows is None else self.rows.index_select(0, index))

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> KVCache:
        """The cache with positions k, v (N, h, t, dh) appended."""
        return KVCache(_gather_append(self.k, self.rows, k), _gather_append(self.v, self.rows, v))

    def __iter__(self):  # k, v = cache (the rows gathered)
        return iter((self.k, self.v) if self.rows is None else (self.k[self.rows], self.v[self.rows]))


def _gather_append(past: torch.Tensor, rows: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
    """cat([past[rows], new], dim=2) in one copy of past (rows None: all rows)."""
    if rows is None:
        return torch.cat([past, new], dim=2)
    if torch.is_grad_enabled() and (past.requires_grad or new.requires_grad):  # out= has no autograd
        return torch.cat([past.index_select(0, rows), new], dim=2)
    T = past.size(2)
    out = new.new_empty(new.size(0), past.size(1), T + new.size(2), past.size(3))
    torch.index_select(past, 0, rows, out=out[:, :, :T])
    out[:, :, T:] = new
    return out


def causal_mask(T: int, past: int, device=None) -> torch.Tensor | None:
    """(T, past + T) bool, True where query i (at position past + i) may attend; None if all may."""
    if T == 1:
        return None
    rows = torch.arange(T, device=device)[:, None] + past
    return torch.arange(past + T, device=device)[None, :] <= rows


class TransformerDecoderLayer(nn.Module):
    """Pre-norm decoder layer: causal self-attention with a key/value cache, cross-attention on
    pre-projected encoder memory, feed-forward."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, head_dim: int | None = None,
                 memory_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, head_dim, dropout, source_dim=memory_dim)
        self.norm3 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, memory_kv: KV, cache: KVCache | KV | None = None, need_weights: bool = False,
                memory_mask: torch.Tensor | None = None):
        """x (B,T,D): the new positions; cache: self-attention keys/values of earlier positions;
        memory_mask (B,S) bool: the memory positions that hold image (None: all).
        Returns (x (B,T,D), KVCache including the new positions, cross-attention weights (B,T,S) | None)."""
        h = self.norm1(x)
        k, v = self.self_attn.project_kv(h)  # (B, h, T, dh) each
        cache = KVCache(k, v) if cache is None else KVCache.of(cache).extend(k, v)  # (B, h, past+T, dh) each
        past = cache.length - x.size(1)
        x = x + self.dropout(self.self_attn.attend(h, cache.k, cache.v, causal_mask(x.size(1), past, x.device))[0])
        cross_mask = None if memory_mask is None else memory_mask[:, None, None, :]  # (B, 1, 1, S)
        ctx, weights = self.cross_attn.attend(self.norm2(x), *memory_kv, cross_mask, need_weights)
        x = x + self.dropout(ctx)
        x = x + self.dropout(self.ff(self.norm3(x)))
        return x, cache, weights


class TransformerDecoder(nn.Module):
    """Token embedding + sinusoids, a stack of `TransformerDecoderLayer`, final norm, vocabulary head.

    Training: `forward(memory, targets, tf_ratio)`. tf_ratio < 1 uses two-pass parallel scheduled
    sampling (Duckworth et al. 2019; Mihaylova & Martins 2019): a teacher-forced pass without
    gradients predicts every position at once, each decoder input is then the gold token with
    probability tf_ratio and the prediction otherwise, and a second pass on that mix gives the logits.
    `scheduled="loop"` keeps the sequential original (Bengio et al. 2015, the team's code): one token at a
    time, each input the gold token or the previous step's argmax; it is the reference `make bench` times
    two_pass against.
    Decoding: `init_state(memory)` projects the memory keys/values of every layer once;
    `step(state, prev)` feeds one token and extends each layer's self-attention cache.
    """

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_ff: int,
                 dropout: float = 0.1, head_dim: int | None = None, max_len: int = 512,
                 pad_id: int = 0, sos_id: int = 1, sample: bool = False, memory_dim: int | None = None,
                 scheduled: str = "two_pass"):
        super().__init__()
        if scheduled not in ("two_pass", "loop"):
            raise ValueError(f"scheduled must be 'two_pass' or 'loop', not {scheduled!r}")
        self.sos_id = sos_id
        self.scheduled = scheduled
        self.sample = sample  # scheduled sampling: sample predictions instead of argmax
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        # Embeddings start at std d_model^-0.5, so embed * sqrt(d_model) has unit scale like the sinusoids.
        # (nn.Embedding's N(0, 1) start made tokens ~14x louder than positions at d_model 192: the
        # decoder could not tell where it was and stalled at the language-model plateau.)
        nn.init.normal_(self.embed.weight, std=d_model ** -0.5)
        with torch.no_grad():
            self.embed.weight[pad_id].zero_()
        self.scale = math.sqrt(d_model)
        self.pos = PositionalEncoding1D(d_model, max_len + 1)  # + 1: the sos position
        self.dropout = Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(d_model, n_heads, d_ff, dropout, head_dim, memory_dim) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        self.attention_layer = -1  # whose cross-attention (averaged over heads) decoding reports; -1 = the last

    def memory_kv(self, memory: torch.Tensor) -> list[KV]:
        """Cross-attention keys/values of every layer, made contiguous once so that decoding steps
        do not copy them again."""
        return [tuple(t.contiguous() for t in layer.cross_attn.project_kv(memory)) for layer in self.layers]

    def shift_right(self, targets: torch.Tensor) -> torch.Tensor:
        sos = targets.new_full((targets.size(0), 1), self.sos_id)
        return torch.cat([sos, targets[:, :-1]], dim=1)  # (B, T): sos, y_0 .. y_{T-2}

    def run(self, tokens: torch.Tensor, memory_kv: list[KV], caches: list[KVCache | KV] | None = None,
            need_weights: bool = False, memory_mask: torch.Tensor | None = None):
        """tokens (B,T) at positions past..past+T-1 -> logits (B,T,V), new caches, the cross-attention of layer
        `self.attention_layer` (B,T,S) | None. memory_mask (B,S): memory positions that hold image."""
        past = 0 if caches is None else KVCache.of(caches[0]).length
        x = self.dropout(self.pos(self.embed(tokens) * self.scale, offset=past))  # (B, T, D)
        new_caches, weights = [], None
        shown = self.attention_layer % len(self.layers)  # only this layer's map is computed and returned
        for i, layer in enumerate(self.layers):
            x, cache, layer_weights = layer(x, memory_kv[i], None if caches is None else caches[i],
                                            need_weights and i == shown, memory_mask)
            weights = layer_weights if i == shown else weights
            new_caches.append(cache)
        return self.head(self.norm(x)), new_caches, weights

    def teacher_forced(self, memory_kv: list[KV], targets: torch.Tensor, mask: torch.Tensor | None = None):
        return self.run(self.shift_right(targets), memory_kv, memory_mask=mask)[0]  # (B, T, V)

    def two_pass(self, memory_kv: list[KV], targets: torch.Tensor, tf_ratio: float,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            first = self.teacher_forced(memory_kv, targets, mask)  # (B, T, V)
            if self.sample:
                pred = torch.multinomial(first.softmax(-1).flatten(0, 1), 1).view_as(targets)
            else:
                pred = first.argmax(-1)  # (B, T)
            keep_gold = torch.rand(targets.shape, device=targets.device) < tf_ratio
            mixed = torch.where(keep_gold, targets, pred)  # (B, T)
        return self.teacher_forced(memory_kv, mixed, mask)

    def loop(self, memory_kv: list[KV], targets: torch.Tensor, tf_ratio: float,
             mask: torch.Tensor | None = None) -> torch.Tensor:
        prev, caches, outputs = targets.new_full((targets.size(0),), self.sos_id), None, []
        for t in range(targets.size(1)):
            logits, caches, _ = self.run(prev[:, None], memory_kv, caches, memory_mask=mask)  # (B, 1, V)
            outputs.append(logits[:, 0])
            keep_gold = torch.rand(prev.shape, device=prev.device) < tf_ratio
            prev = torch.where(keep_gold, targets[:, t], logits[:, 0].detach().argmax(-1))
        return torch.stack(outputs, dim=1)  # (B, T, V)

    def forward(self, memory: torch.Tensor, targets: torch.Tensor, tf_ratio: float = 1.0,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        memory_kv = self.memory_kv(memory)
        if tf_ratio < 1.0:
            return (self.two_pass if self.scheduled == "two_pass" else self.loop)(memory_kv, targets, tf_ratio, mask)
        return self.teacher_forced(memory_kv, targets, mask)  # (B, T, V)

    def init_state(self, memory: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        return {"per_image": {"memory_kv": self.memory_kv(memory), "mask": mask}, "caches": None}

    def step(self, state: dict, prev: torch.Tensor) -> tuple[torch.Tensor, dict]:
        shared = state["per_image"]  # may hold fewer rows than prev: one per image under beam search
        logits, caches, weights = self.run(prev[:, None], shared["memory_kv"], state["caches"], True, shared["mask"])
        return logits[:, 0], dict(state, caches=caches, attn=weights[:, 0])


# --------------------------------------------------------------------------- recurrent parts


class AdditiveAttention(nn.Module):
    """Bahdanau et al. (2015) attention: score = w . tanh(W_k m + W_q q). The key projection W_k m
    depends only on the image, so `project_memory` runs once per image, not once per step."""

    def __init__(self, query_dim: int, memory_dim: int, attn_dim: int):
        super().__init__()
        self.key = nn.Linear(memory_dim, attn_dim, bias=False)
        self.query = nn.Linear(query_dim, attn_dim)
        self.score = nn.Linear(attn_dim, 1, bias=False)

    def project_memory(self, memory: torch.Tensor) -> torch.Tensor:
        return self.key(memory)  # (B, S, A)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor,
                mask: torch.Tensor | None = None):
        """query (N,Q); memory (B,S,C), keys = project_memory(memory), mask (B,S) bool (True = image) of the B
        images of N = B * K queries in image order (K hypotheses per image under beam search)
        -> context (N,C), weights (N,S)."""
        B, S, _ = memory.shape
        q = self.query(query).view(B, -1, 1, keys.size(-1))  # (B, K, 1, A)
        scores = self.score(torch.tanh(keys[:, None] + q)).squeeze(-1)  # (B, K, S)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None], float("-inf"))
        weights = scores.softmax(-1)
        return torch.bmm(weights, memory).flatten(0, 1), weights.flatten(0, 1)  # (N, C), (N, S)


class AttentionRNNDecoder(nn.Module):
    """Attention decoder of Show, Attend and Tell (Xu et al. 2015) and ASTER (Shi et al. 2018).

    Per step: attend with the previous hidden state, feed [embedding(prev token); context] to an
    LSTM or GRU cell, predict from [hidden; context]. The initial state comes from the mean memory
    (Xu et al. 2015, sec. 3.1.2). Training loops over steps (recurrence is inherent); with
    tf_ratio < 1 each step's input is the gold token with probability tf_ratio, else the argmax.
    """

    def __init__(self, vocab_size: int, memory_dim: int, hidden: int = 256, embed_dim: int = 128,
                 attn_dim: int = 256, cell: str = "lstm", dropout: float = 0.0, pad_id: int = 0, sos_id: int = 1):
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', not {cell!r}")
        self.cell_type = cell
        self.sos_id = sos_id
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.attention = AdditiveAttention(hidden, memory_dim, attn_dim)
        self.cell = (nn.LSTMCell if cell == "lstm" else nn.GRUCell)(embed_dim + memory_dim, hidden)
        self.init_h = nn.Linear(memory_dim, hidden)
        self.init_c = nn.Linear(memory_dim, hidden) if cell == "lstm" else None
        self.dropout = Dropout(dropout)
        self.head = nn.Linear(hidden + memory_dim, vocab_size)

    def init_state(self, memory: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        if mask is None:
            mean = memory.mean(1)  # (B, C)
        else:
            keep = mask.to(memory.dtype)[:, :, None]  # (B, S, 1)
            mean = (memory * keep).sum(1) / keep.sum(1)
        state = {"per_image": {"memory": memory, "keys": self.attention.project_memory(memory), "mask": mask},
                 "h": torch.tanh(self.init_h(mean))}
        if self.init_c is not None:
            state["c"] = torch.tanh(self.init_c(mean))
        return state

    def step(self, state: dict, prev: torch.Tensor) -> tuple[torch.Tensor, dict]:
        shared = state["per_image"]
        context, weights = self.attention(state["h"], shared["memory"], shared["keys"], shared["mask"])  # (N,C), (N,S)
        x = torch.cat([self.embed(prev), context], dim=-1)  # (N, E + C)
        new = dict(state, attn=weights)
        if self.init_c is not None:
            new["h"], new["c"] = self.cell(x, (state["h"], state["c"]))
        else:
            new["h"] = self.cell(x, state["h"])
        logits = self.head(self.dropout(torch.cat([new["h"], context], dim=-1)))  # (N, V)
        return logits, new

    def forward(self, memory: torch.Tensor, targets: torch.Tensor, tf_ratio: float = 1.0,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        state = self.init_state(memory, mask)
        prev = targets.new_full((targets.size(0),), self.sos_id)
        outputs = []
        for t in range(targets.size(1)):
            logits, state = self.step(state, prev)
            outputs.append(logits)
            prev = targets[:, t]
            if tf_ratio < 1.0:
                keep_gold = torch.rand(prev.shape, device=prev.device) < tf_ratio
                prev = torch.where(keep_gold, prev, logits.detach().argmax(-1))
        return torch.stack(outputs, dim=1)  # (B, T, V)
