"""Deformable convolution in plain torch (no torchvision ops).

v1: Dai et al. 2017, "Deformable Convolutional Networks" — each kernel tap samples the input at its
regular grid position plus a learned offset. v2: Zhu et al. 2019, "Deformable ConvNets v2: More Deformable,
Better Results" — each tap also gets a learned modulation scalar in [0, 1].

How: the offsets come from an ordinary conv on the input; every tap's sampling points are bilinearly
sampled with one `F.grid_sample` call (all taps stacked along the height axis), which gives the
unfolded "columns" (B, C*k*k, L); one matmul with the weight then finishes the convolution — the same
im2col + GEMM a normal conv does, only with sampled columns. Memory is C*k*k*L floats per image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride=1, padding=0, dilation=1, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Deformable 2D convolution (groups=1, one offset group).

    x (B, C, H, W); weight (O, C, kh, kw); offset (B, 2*kh*kw, Ho, Wo), per tap (dy, dx) in pixels,
    taps in row-major kernel order (torchvision's layout); mask (B, kh*kw, Ho, Wo) or None (v1).
    With zero offsets and no mask this equals `F.conv2d(x, weight, bias, stride, padding, dilation)`.
    """
    B, C, H, W = x.shape
    O, _, kh, kw = weight.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    K = kh * kw
    Ho, Wo = offset.shape[-2:]

    # Regular sampling grid of every (tap, output pixel), in input pixel coordinates.
    dev = x.device
    ky, kx = torch.meshgrid(torch.arange(kh, device=dev) * dh, torch.arange(kw, device=dev) * dw, indexing="ij")
    oy, ox = torch.meshgrid(torch.arange(Ho, device=dev) * sh - ph, torch.arange(Wo, device=dev) * sw - pw,
                            indexing="ij")
    base_y = (ky.reshape(K, 1, 1) + oy).to(x.dtype)  # (K, Ho, Wo)
    base_x = (kx.reshape(K, 1, 1) + ox).to(x.dtype)
    offset = offset.reshape(B, K, 2, Ho, Wo)
    y = base_y + offset[:, :, 0]  # (B, K, Ho, Wo)
    xs = base_x + offset[:, :, 1]

    # Pixel index -> grid_sample's [-1, 1] with align_corners=False (pixel i's centre is (2i+1)/W - 1);
    # zero padding outside the image is exactly the zero padding of a normal conv.
    grid = torch.stack(((2 * xs + 1) / W - 1, (2 * y + 1) / H - 1), dim=-1)  # (B, K, Ho, Wo, 2)
    cols = F.grid_sample(x, grid.view(B, K * Ho, Wo, 2), mode="bilinear", padding_mode="zeros",
                         align_corners=False)  # (B, C, K*Ho, Wo)
    cols = cols.view(B, C, K, Ho * Wo)
    if mask is not None:
        cols = cols * mask.reshape(B, 1, K, Ho * Wo)
    out = weight.reshape(O, C * K) @ cols.view(B, C * K, Ho * Wo)  # (B, O, Ho*Wo); weights may be channels-last
    if bias is not None:
        out = out + bias.view(1, O, 1)
    return out.view(B, O, Ho, Wo)


class DeformConv2d(nn.Module):
    """Deformable conv layer with its own offset (and, for v2, modulation) predictor.

    The predictor starts at zero offsets (and modulation 0.5 for v2, as in the v2 paper), so a fresh layer
    behaves like an ordinary conv and the deformation is learned from there.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=1, dilation=1,
                 bias: bool = True, modulated: bool = False):
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.modulated = modulated
        # Borrow nn.Conv2d's weight layout and default init.
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=bias)
        self.weight = conv.weight
        self.bias = conv.bias
        taps = self.kernel_size[0] * self.kernel_size[1]
        n_out = (3 if modulated else 2) * taps  # (dy, dx) per tap, plus a modulation scalar for v2
        self.offset_conv = nn.Conv2d(in_channels, n_out, kernel_size, stride, padding, dilation)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pred = self.offset_conv(x)  # (B, 2K or 3K, Ho, Wo)
        taps = self.kernel_size[0] * self.kernel_size[1]
        offset, mask = pred[:, :2 * taps], None
        if self.modulated:
            mask = torch.sigmoid(pred[:, 2 * taps:])
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)


def deformable_like(conv: nn.Conv2d, modulated: bool = False) -> DeformConv2d:
    """A DeformConv2d with conv's shape (channels, kernel, stride, padding, dilation, bias), to swap in for it."""
    if conv.groups != 1:
        raise ValueError(f"deformable convs here are ungrouped; this conv has groups={conv.groups}")
    return DeformConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        conv.dilation, bias=conv.bias is not None, modulated=modulated)
