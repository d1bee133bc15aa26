"""Shared layers: positional encodings, attention with any head layout, backbones, decoder embeddings."""
import pytest
import torch

from ocrlib.models import create_model
from ocrlib.models.layers import Adaptive2DPositionalEncoding, MultiHeadAttention, ResNetBackbone, sinusoid_table


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
