"""Deformable convolution (ocrlib/models/deform_conv.py) against nn.Conv2d and hand-made shifts."""
import pytest
import torch
import torch.nn.functional as F

from ocrlib.models.deform_conv import DeformConv2d, deform_conv2d


@pytest.mark.parametrize("kernel,stride,padding,dilation,size", [
    (3, 1, 1, 1, (7, 9)),
    (3, 2, 1, 1, (8, 5)),
    (3, 1, 2, 2, (6, 6)),
    ((1, 3), (2, 1), (0, 1), 1, (5, 4)),
    (1, 1, 0, 1, (1, 1)),
])
def test_zero_offsets_equal_conv2d(kernel, stride, padding, dilation, size):
    torch.manual_seed(0)
    layer = DeformConv2d(3, 4, kernel, stride, padding, dilation)
    conv = torch.nn.Conv2d(3, 4, kernel, stride, padding, dilation)
    conv.load_state_dict({"weight": layer.weight.detach(), "bias": layer.bias.detach()})
    x = torch.randn(2, 3, *size)
    assert torch.allclose(layer(x), conv(x), atol=1e-5)


def test_modulated_starts_at_half_mask():
    torch.manual_seed(0)
    layer = DeformConv2d(2, 3, modulated=True)
    x = torch.randn(1, 2, 6, 6)
    expected = 0.5 * F.conv2d(x, layer.weight, None, 1, 1) + layer.bias.view(1, -1, 1, 1)
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_integer_offset_shifts_the_input():
    x = torch.randn(1, 1, 5, 6)
    identity = torch.ones(1, 1, 1, 1)
    offset = torch.zeros(1, 2, 5, 6)
    offset[:, 0] = 1.0  # dy = +1: each output reads the pixel below
    out = deform_conv2d(x, offset, identity)
    assert torch.allclose(out[0, 0, :-1], x[0, 0, 1:])
    assert torch.all(out[0, 0, -1] == 0)  # below the image is zero padding


def test_fractional_offset_interpolates_and_has_gradients():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    offset = (torch.rand(1, 18, 5, 5, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    mask = torch.rand(1, 9, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, o, w, m: deform_conv2d(x, o, w, None, 1, 1, 1, m), (x, offset, weight, mask), fast_mode=True)
    # A half-pixel horizontal offset on a 1x1 kernel averages neighbours.
    half = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    half[:, 1] = 0.5
    out = deform_conv2d(x[:, :1].detach(), half, torch.ones(1, 1, 1, 1, dtype=torch.float64))
    assert torch.allclose(out[0, 0, :, :-1], (x[0, 0, :, :-1] + x[0, 0, :, 1:]).detach() / 2)


def test_offsets_are_learned():
    torch.manual_seed(0)
    layer = DeformConv2d(1, 1, 3)
    out = layer(torch.randn(2, 1, 6, 6))
    out.square().mean().backward()
    assert layer.offset_conv.weight.grad.abs().sum() > 0
