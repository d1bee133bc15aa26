"""SRN: the paper's three losses through forward_logits_loss."""
import torch
import torch.nn.functional as F

from ocrlib.config import load_config
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


def test_gsrm_teacher_feeds_the_true_tokens_at_the_tf_ratio_in_training_only():
    torch.manual_seed(0)
    model = create_model("srn", VOCAB, max_len=MAX_LEN, **{**TINY["srn"], "gsrm_teacher": True, "dropout": 0.0})
    images, targets = glyph_formulas(n=4)
    T = targets.size(1)
    fed = []
    model.gsrm.register_forward_hook(lambda module, args, out: fed.append(args[0]))
    model.eval()  # evaluation: the visual argmax whatever the ratio
    model.forward_logits_loss(images, targets, tf_ratio=1.0)
    argmax = model.forward_all(images)["visual"].argmax(-1)
    assert torch.equal(fed[0], argmax)
    model.train()  # batch statistics: the argmax of training mode
    argmax = model.forward_all(images)["visual"].argmax(-1)
    model.forward_logits_loss(images, targets, tf_ratio=1.0)
    assert torch.equal(fed[-1][:, :T], targets) and torch.equal(fed[-1][:, T:], argmax[:, T:])
    model.forward_logits_loss(images, targets, tf_ratio=0.0)
    assert torch.equal(fed[-1], argmax)
    torch.manual_seed(1)
    model.forward_logits_loss(images, targets, tf_ratio=0.5)
    from_truth = (fed[-1][:, :T] == targets) & (argmax[:, :T] != targets)
    assert 0 < from_truth.sum() < (argmax[:, :T] != targets).sum()  # some positions read the truth, not all


def test_branch_results_score_each_branch_against_the_truth(tmp_path):
    from helpers import ALPHABET, write_dataset
    from ocrlib.data.dataset import FormulaDataset, make_loader
    from ocrlib.evaluate import branch_results
    from ocrlib.tokens import Vocab

    folder = write_dataset(tmp_path / "d", 5, seed=0)
    vocab = Vocab.build([ALPHABET])
    config = load_config("srn", preset="smoke", overrides={"model.max_len": 12})
    data = FormulaDataset.for_config(folder, vocab, config.data)
    model = create_model("srn", len(vocab), max_len=12, **TINY["srn"])

    targets = next(iter(make_loader(data, 8, seed=0, shuffle=False)))["targets"]  # ids, eos, pad; in loader order

    def forward_all(images, pad=None):  # visual reads every formula, semantic none, fused the first only
        right = F.one_hot(F.pad(targets, (0, 12 - targets.size(1))), len(vocab)).float()
        wrong = F.one_hot(torch.full_like(right[..., 0], vocab.tokens.index("x"), dtype=torch.long), len(vocab)).float()
        fused = torch.cat([right[:1], wrong[1:]])
        return {"visual": right, "semantic": wrong, "fused": fused}

    model.forward_all = forward_all
    results = branch_results(model, data, vocab, batch_size=8)
    assert (results["visual"].sa, results["semantic"].sa, results["fused"].n) == (1.0, 0.0, 5)
    assert results["fused"].correct == 1
