"""The shipped pretrained model: one weights file (`model.pt`, fp16, at most 20 MB) and its model card
(`MODEL_CARD.md`: the command, data, budget, device and scores). `predict` and `eval` use it when no
`--checkpoint` is given, so a fresh clone reads formulas without training. `ocrlib export` writes it.
"""
from __future__ import annotations

from pathlib import Path

from ocrlib.errors import BadInput

WEIGHTS = Path(__file__).with_name("model.pt")
MODEL_CARD = Path(__file__).with_name("MODEL_CARD.md")
MAX_BYTES = 20 * 1024 * 1024  # the repository keeps one file this size at most


def default_checkpoint(path: str | Path | None = None) -> Path:
    """`path` when given, else the shipped weights; a one-line BadInput when neither exists."""
    if path is not None:
        return Path(path)
    if not WEIGHTS.is_file():
        raise BadInput(WEIGHTS, "no --checkpoint given and no shipped pretrained model here; "
                                "train one (ocrlib train) and pass --checkpoint")
    return WEIGHTS
