"""The bracket penalty."""
import pytest
import torch

from ocrlib.losses import bracket_ids, bracket_penalty


def test_bracket_penalty_prefers_balanced_predictions():
    tokens = ["<pad>", "<sos>", "<eos>", "<unk>", "{", "}", "x", "(", ")"]
    pairs = bracket_ids(tokens)
    assert pairs == [(4, 5), (7, 8)]
    targets = torch.tensor([[4, 6, 5, 2, 0]])  # { x } <eos> <pad>
    balanced = torch.full((1, 5, 9), -20.0)
    balanced[0, torch.arange(5), targets[0]] = 20.0
    unbalanced = balanced.clone()
    unbalanced[0, 2, 5], unbalanced[0, 2, 6] = -20.0, 20.0  # predicts x instead of }
    assert bracket_penalty(balanced, targets, pairs, pad_id=0).item() == pytest.approx(0.0, abs=1e-6)
    assert bracket_penalty(unbalanced, targets, pairs, pad_id=0).item() == pytest.approx(0.5 * 1 / 4, rel=1e-3)
    logits = unbalanced.clone().requires_grad_(True)
    bracket_penalty(logits, targets, pairs, pad_id=0).backward()
    assert logits.grad[0, 2, 5] < 0  # gradient descent raises the missing closing brace
