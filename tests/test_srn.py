"""SRN: the paper's three losses through forward_logits_loss."""
import torch
import torch.nn.functional as F

from ocrlib.models import create_model

from helpers import MAX_LEN, TINY, VOCAB, glyph_formulas


def test_srn_three_losses():
    torch.manual_seed(0)
    model = create_model("srn", VOCAB, max_len=MAX_LEN, **{**TINY["srn"], "visual_weight": 1.0,
                                                             "semantic_weight": 0.15, "fused_weight": 2.0})
    images, targets = glyph_formulas(n=4)
    out = model.forward_all(images)
    T = targets.size(1)
    assert all(out[k].shape == (4, MAX_LEN, VOCAB) for k in ("visual", "semantic", "fused"))

    def ce(x):
        return F.cross_entropy(x[:, :T].flatten(0, 1), targets.flatten(), ignore_index=0)

    logits, loss = model.forward_logits_loss(images, targets)
    assert torch.allclose(logits, out["fused"][:, :T], atol=1e-6)
    assert torch.allclose(model(images, targets), logits, atol=1e-6)  # forward: the fused logits
    expected = 1.0 * ce(out["visual"]) + 0.15 * ce(out["semantic"]) + 2.0 * ce(out["fused"])
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(model.loss(logits, targets), ce(out["fused"]), atol=1e-5)  # plain cross-entropy
