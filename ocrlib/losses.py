"""Bracket-balance penalty, added to the models' cross-entropy (`Recognizer.loss`, with label smoothing).

The penalty is the team's fix for predictions like `\\frac { 1 } { 2` (an unbalanced brace makes the
whole formula wrong): from the softmax, the expected number of opening minus closing brackets of each
pair over the sequence should equal that of the ground truth. It is differentiable, pushes probability
mass towards balanced outputs, and is weighted by `training.bracket_penalty` (0 turns it off).
"""
from __future__ import annotations

import torch

BRACKET_PAIRS = (("{", "}"), ("(", ")"))


def bracket_ids(tokens: list[str], pairs=BRACKET_PAIRS) -> list[tuple[int, int]]:
    """(open id, close id) for each pair present in the vocabulary token list."""
    index = {t: i for i, t in enumerate(tokens)}
    return [(index[o], index[c]) for o, c in pairs if o in index and c in index]


def bracket_penalty(logits: torch.Tensor, targets: torch.Tensor, pairs: list[tuple[int, int]],
                    pad_id: int) -> torch.Tensor:
    """Mean over sequences and pairs of (expected predicted imbalance - target imbalance)^2 / length."""
    if not pairs:
        return logits.new_zeros(())
    probs = logits.float().softmax(-1)                                  # (B, T, V)
    mask = (targets != pad_id).float()                                  # (B, T)
    length = mask.sum(1).clamp(min=1)                                   # (B,)
    total = logits.new_zeros((), dtype=torch.float32)
    for open_id, close_id in pairs:
        predicted = ((probs[..., open_id] - probs[..., close_id]) * mask).sum(1)           # (B,)
        wanted = ((targets == open_id).float() - (targets == close_id).float()).sum(1)    # (B,)
        total = total + ((predicted - wanted) ** 2 / length).mean()
    return total / len(pairs)

