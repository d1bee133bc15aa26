"""Shared layers: positional encodings, attention with any head layout, backbones, decoder embeddings."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ocrlib.models import create_model
from ocrlib.models.layers import (Adaptive2DPositionalEncoding, ColumnPadding, DenseNetStem, FoldingSequential,
                                  MultiHeadAttention, ResNetBackbone, conv2d, sinusoid_table)

CHANNELS_LAST = torch.channels_last


def random_statistics(module: nn.Module, seed: int = 1) -> nn.Module:
    """Every batch norm in module with running statistics and affine parameters far from the identity."""
    g = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
            bn.running_mean.normal_(0, 0.5, generator=g)
            bn.running_var.uniform_(0.5, 2.0, generator=g)
        if isinstance(bn, nn.BatchNorm2d) and bn.affine:
            bn.weight.data.normal_(1, 0.5, generator=g)  # negative scales too
            bn.bias.data.normal_(0, 0.5, generator=g)
    return module


def ops_run(fn) -> set[str]:
    with torch.profiler.profile() as prof:
        fn()
    return {event.key for event in prof.key_averages()}


def test_layers_handle_any_grid_and_head_layout():
    x = torch.randn(2, 30, 5, 7)
    plain = Adaptive2DPositionalEncoding(30, adaptive=False)(x)
    expected = x + sinusoid_table(5, 30).t()[None, :, :, None] + sinusoid_table(7, 30).t()[None, :, None, :]
    assert torch.allclose(plain, expected)
    adaptive = Adaptive2DPositionalEncoding(30)
    assert adaptive(x).shape == x.shape and not torch.allclose(adaptive(x), plain)
    mha = MultiHeadAttention(30, 4, head_dim=7)  # 4 * 7 = 28 != 30
    assert mha(torch.randn(2, 6, 30)).shape == (2, 6, 30)
    backbone = ResNetBackbone(1, (8, 16), (1, 1), ((2, 2), (2, 1)), stem_channels=8)
    assert backbone(torch.randn(1, 1, 32, 64)).shape == (1, 16, 8, 32)


def test_decoder_token_embeddings_start_at_the_scale_of_the_positions():
    # With nn.Embedding's N(0, 1) start, embed * sqrt(192) was ~14x louder than the sinusoids: the decoder
    # could not tell its position, and SATRN stayed at val SA 0.01 after 2,000 steps (0.21 after 900 once fixed).
    torch.manual_seed(0)
    decoder = create_model("satrn", 250, max_len=20).decoder
    token_rms = (decoder.embed(torch.arange(3, 250)) * decoder.scale).pow(2).mean().sqrt()
    position_rms = decoder.pos.table.pow(2).mean().sqrt()
    assert 0.5 < (token_rms / position_rms).item() < 2.0
    assert not decoder.embed.weight[0].any(), "the padding row starts at zero"


def test_dropout_drops_its_share_keeps_the_mean_and_follows_the_seed():
    from ocrlib.models.layers import Dropout, dropout

    x = torch.ones(64, 1000, requires_grad=True)
    torch.manual_seed(0)
    y = dropout(x, 0.1)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 26 / 256) < 0.005  # p is kept to 1/256
    assert y.unique().tolist() == pytest.approx([0.0, 256 / 230]) and abs(y.mean().item() - 1.0) < 0.01  # inverted scaling
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient passes where the value did, scaled alike
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.1), y)  # torch's generator: a seed fixes the mask
    layer = Dropout(0.3).eval()
    assert layer(x) is x and dropout(x, 0.0) is x and "p=0.3" in repr(layer)
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        Dropout(1.0)


def test_eval_folds_batch_norm_into_the_convolution_and_computes_the_same():
    torch.manual_seed(0)
    plain = random_statistics(nn.Sequential(
        nn.Conv2d(6, 10, 3, padding=1), nn.BatchNorm2d(10), nn.ReLU(),  # a conv with its own bias
        nn.BatchNorm2d(10), nn.Conv2d(10, 4, 1, stride=(2, 1), bias=False), nn.BatchNorm2d(4)))  # BN alone; strided 1x1
    folding = FoldingSequential(*copy.deepcopy(plain)).to(memory_format=CHANNELS_LAST)
    assert folding.state_dict().keys() == plain.state_dict().keys()  # checkpoints load either way
    x = torch.randn(2, 6, 9, 11).contiguous(memory_format=CHANNELS_LAST)
    with torch.no_grad():
        torch.testing.assert_close(folding.eval()(x), plain.eval()(x), atol=1e-5, rtol=1e-5)
        assert not any("batch_norm" in op for op in ops_run(lambda: folding(x)))
        assert any("batch_norm" in op for op in ops_run(lambda: plain(x)))  # the check can fail
    torch.testing.assert_close(folding.train()(x), plain.train()(x), atol=1e-5, rtol=1e-5)  # batch statistics
    torch.testing.assert_close(folding[1].running_mean, plain[1].running_mean)  # and they were updated alike
    # batch norms without an affine part or without running statistics (these normalise by the batch in eval too)
    for bn in (nn.BatchNorm2d(10, affine=False), nn.BatchNorm2d(10, track_running_stats=False)):
        plain = random_statistics(nn.Sequential(nn.Conv2d(6, 10, 3, padding=1), bn)).eval()
        folding = FoldingSequential(*copy.deepcopy(plain)).eval()
        with torch.no_grad():
            torch.testing.assert_close(folding(x), plain(x), atol=1e-5, rtol=1e-5)


def test_strided_pointwise_convolution_is_exact_and_survives_backward_channels_last():
    # torch 2.13's oneDNN channels-last backward of a strided 1x1 conv over < 16 channels freed memory twice
    # (the process aborted); `conv2d` subsamples first, so that kernel never runs
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 1, stride=(2, 1), bias=False)
    x = torch.randn(3, 8, 32, 96, requires_grad=True)
    reference = F.conv2d(x, conv.weight, stride=(2, 1))
    reference_grad, = torch.autograd.grad(reference.square().sum(), x)
    conv = conv.to(memory_format=CHANNELS_LAST)
    x_cl = x.detach().contiguous(memory_format=CHANNELS_LAST).requires_grad_()
    out = conv2d(x_cl, conv)
    out.square().sum().backward()
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(x_cl.grad, reference_grad)


def test_densenet_without_autograd_writes_each_block_in_place_and_computes_the_same():
    torch.manual_seed(0)
    stem = random_statistics(DenseNetStem(1, 24, stem=8, growth=4, depth=3)).to(memory_format=CHANNELS_LAST).eval()
    images = torch.randn(2, 1, 32, 64).contiguous(memory_format=CHANNELS_LAST)
    for pad in (None, ColumnPadding.of(torch.tensor([40, 64]), 64)):
        with_cat = stem(images, pad)  # autograd on: each layer concatenates
        with torch.no_grad():
            assert "aten::cat" not in ops_run(lambda: stem(images, pad))
            in_place = stem(images, pad)
        torch.testing.assert_close(in_place, with_cat.detach(), atol=1e-5, rtol=1e-5)


def test_densenet_without_autograd_runs_a_few_images_at_a_time_and_computes_the_same():
    torch.manual_seed(0)
    stem = random_statistics(DenseNetStem(1, 24, stem=8, growth=4, depth=3)).to(memory_format=CHANNELS_LAST).eval()
    stem.images_per_pass = 2
    images = torch.randn(5, 1, 32, 64).contiguous(memory_format=CHANNELS_LAST)
    for pad in (None, ColumnPadding.of(torch.tensor([40, 64, 16, 64, 33]), 64)):
        whole = stem(images, pad)  # autograd on: the whole batch at once
        with torch.no_grad():
            in_passes = stem(images, pad)  # images 0-1, 2-3, 4
        torch.testing.assert_close(in_passes, whole.detach(), atol=1e-5, rtol=1e-5)
