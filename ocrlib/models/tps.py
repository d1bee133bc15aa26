"""Thin-plate-spline spatial transformer, the rectification stage of ASTER.

Shi et al. 2018, "ASTER: An Attentional Scene Text Recognizer with Flexible Rectification" (TPAMI), §3.1:
a localisation network regresses K control points on the input image; the thin-plate spline through the
K pairs (fixed control points on the output, predicted points on the input) maps every output pixel to
an input position, and the input is bilinearly sampled there (`F.grid_sample`).

Coordinates are grid_sample's normalised [-1, 1] with align_corners=False throughout, so when the
predicted points equal the fixed ones the warp is the identity (a TPS reproduces affine maps exactly).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ocrlib.models.layers import ColumnPadding, FoldingSequential, zero_padding


def fiducial_points(num: int, margin: float = 0.05) -> torch.Tensor:
    """(num, 2) control points as (x, y): num/2 evenly along the top edge, num/2 along the bottom (ASTER)."""
    if num < 4 or num % 2:
        raise ValueError(f"num_fiducial must be even and >= 4, got {num}")
    xs = torch.linspace(-1 + margin, 1 - margin, num // 2)
    top = torch.stack((xs, torch.full_like(xs, -1 + margin)), dim=1)
    bottom = torch.stack((xs, torch.full_like(xs, 1 - margin)), dim=1)
    return torch.cat((top, bottom), dim=0)


def _radial(points: torch.Tensor, ctrl: torch.Tensor) -> torch.Tensor:
    """TPS kernel U(r) = r^2 log r^2 between (N, 2) points and (K, 2) control points -> (N, K)."""
    r2 = torch.cdist(points, ctrl).pow(2)
    return r2 * torch.log(r2.clamp_min(1e-12))  # U(0) = 0


def pixel_grid(height: int, width: int, x_edges: bool = False) -> torch.Tensor:
    """(height*width, 2) pixel centres as normalised (x, y), row-major; x_edges: x from -1 to 1 inclusive
    instead (a field that `stretch_x` interpolates, never extrapolates)."""
    ys = (2 * torch.arange(height, dtype=torch.float64) + 1) / height - 1
    xs = (torch.linspace(-1, 1, width, dtype=torch.float64) if x_edges
          else (2 * torch.arange(width, dtype=torch.float64) + 1) / width - 1)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx.reshape(-1), gy.reshape(-1)), dim=1)


class TPSGrid(nn.Module):
    """Maps K source control points (B, K, 2) to a sampling grid (B, H, W, 2) for an (H, W) output.

    The fixed part (inverse of the TPS system matrix, the kernel of every output pixel) is precomputed
    in float64 once, so forward is two matmuls.
    """

    def __init__(self, out_size: tuple[int, int], target_ctrl: torch.Tensor, x_edges: bool = False):
        super().__init__()
        self.out_size = tuple(out_size)
        ctrl = target_ctrl.double()
        k = ctrl.shape[0]
        system = torch.zeros(k + 3, k + 3, dtype=torch.float64)
        system[:k, :k] = _radial(ctrl, ctrl)
        system[:k, k] = 1
        system[:k, k + 1:] = ctrl
        system[k, :k] = 1
        system[k + 1:, :k] = ctrl.t()
        points = pixel_grid(*self.out_size, x_edges)
        repr_ = torch.cat((_radial(points, ctrl), torch.ones(len(points), 1, dtype=torch.float64), points), dim=1)
        # (H*W, K): output pixel coordinates as a linear function of the K source control points.
        self.register_buffer("weights", (repr_ @ torch.linalg.inv(system)[:, :k]).float(), persistent=False)

    def forward(self, source_ctrl: torch.Tensor) -> torch.Tensor:
        grid = self.weights @ source_ctrl  # (B, H*W, 2)
        return grid.view(-1, *self.out_size, 2)  # (B, H, W, 2)


def squeeze_x(grid: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """Map normalised x in [-1, 1] onto the left `share` (B,) of the image, for a grid (B or 1, H, W, 2)."""
    x = (grid[..., 0] + 1) * share.view(-1, 1, 1) - 1
    return torch.stack((x, grid[..., 1].expand_as(x)), dim=-1)


def stretch_x(field: torch.Tensor, width: int, share: torch.Tensor | None) -> torch.Tensor:
    """A sampling grid (B, H, W, 2) computed at x from -1 to 1 (TPSGrid with x_edges) resampled to the pixel
    centres of `width` columns, image b's spread over its left share[b] of them (None: all); a column at the
    same place in its image gets the same value whatever the batch."""
    batch, height = len(field), field.size(1)
    xs = ((2 * torch.arange(width, device=field.device, dtype=field.dtype) + 1) / width)[None]  # (1, width), x + 1
    xs = (xs if share is None else xs / share.view(-1, 1)) - 1  # x over each image's own columns
    ys = torch.linspace(-1, 1, height, device=field.device, dtype=field.dtype)  # the field's rows, exactly
    shape = (batch, height, width)
    grid = torch.stack((xs[:, None, :].expand(shape), ys[None, :, None].expand(shape)), dim=-1)
    # align_corners=True: -1 and 1 are the field's first and last columns; the padding columns (x > 1) repeat
    # the last one and are zeroed afterwards
    return F.grid_sample(field.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="border",
                         align_corners=True).permute(0, 2, 3, 1)


class TPSRectifier(nn.Module):
    """Localisation net -> K control points -> TPS grid -> rectified image of size out_size (ASTER).

    The last regression layer starts with zero weights and the fixed control points as bias, so an
    untrained rectifier is the identity warp (ASTER's initialisation). In a keep-aspect batch padded on
    the right, each image is read from its own columns only: both the localisation input and the
    output grid are squeezed into the image part.

    `keep_aspect`: the output keeps the input's aspect ratio (out_size's height, the width scaled with
    it) instead of out_size's width, so a long formula is not squeezed into a word-sized image; the TPS
    field is computed at out_size and stretched over each image's own columns, and the padding columns
    stay padding (zero; the caller's ColumnPadding still describes them).
    """

    def __init__(self, in_channels: int, out_size: tuple[int, int], num_fiducial: int = 20,
                 loc_size: tuple[int, int] = (32, 64), loc_channels: tuple[int, ...] = (32, 64, 128),
                 loc_hidden: int = 256, margin: float = 0.05, keep_aspect: bool = False):
        super().__init__()
        self.loc_size, self.keep_aspect = tuple(loc_size), keep_aspect
        layers, c_in = [], in_channels
        for c_out in loc_channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in = c_out
        self.features = FoldingSequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc1 = nn.Sequential(nn.Linear(c_in, loc_hidden), nn.ReLU(inplace=True))
        self.fc2 = nn.Linear(loc_hidden, 2 * num_fiducial)
        ctrl = fiducial_points(num_fiducial, margin)
        nn.init.zeros_(self.fc2.weight)
        with torch.no_grad():
            self.fc2.bias.copy_(ctrl.reshape(-1))
        self.grid = TPSGrid(out_size, ctrl, x_edges=keep_aspect)

    def control_points(self, images: torch.Tensor, image_share: torch.Tensor | None = None) -> torch.Tensor:
        if image_share is None:
            small = F.interpolate(images, size=self.loc_size, mode="bilinear", align_corners=False)
        else:  # the same bilinear resize, of each image's own columns
            identity = pixel_grid(*self.loc_size).to(images).view(1, *self.loc_size, 2)
            small = F.grid_sample(images, squeeze_x(identity, image_share), mode="bilinear", align_corners=False)
        return self.fc2(self.fc1(self.features(small))).view(len(images), -1, 2)  # (B, K, 2)

    def forward(self, images: torch.Tensor, pad: ColumnPadding | None = None) -> torch.Tensor:
        """images (B,C,H,W); pad: the columns that are right padding (None: unpadded)."""
        share = None if pad is None else pad.widths.to(images.dtype) / images.size(-1)  # (B,)
        grid = self.grid(self.control_points(images, share))  # (B, h, w, 2) at out_size
        if self.keep_aspect:
            height = self.grid.out_size[0]
            grid = stretch_x(grid, max(1, round(images.size(-1) * height / images.size(-2))), share)
        if share is not None:
            grid = squeeze_x(grid, share)
        # Outside the image is zero, the background of ink-bright inputs.
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return zero_padding(out, pad) if self.keep_aspect else out
