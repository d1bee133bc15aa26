"""Deterministic train/val/test splits by a stable hash of the normalised formula (or of the writer).

The exam corpus repeats formulas, so a random split leaks: the same formula
lands in train and in val and accuracy looks better than it is on new
formulas. Hashing the normalised formula keeps every copy of a formula in one
split; hashing the writer does the same for handwriting (CROHME).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ocrlib.tokens import normalize, normalize_latex

Fractions = Sequence[tuple[str, float]]
Formulas = Iterable[str | Sequence[str]]  # LaTeX strings or token lists
DEFAULT_FRACTIONS: Fractions = (("train", 0.8), ("val", 0.1), ("test", 0.1))
_HASH_SCALE = float(1 << 64)


def _unit_hash(text: str, salt: str) -> float:
    """A number in [0, 1) from sha256(salt, text): the same on every machine and Python run (unlike hash())."""
    digest = hashlib.sha256(f"{salt}\x00{text}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SCALE


def _pick(text: str, fractions: Fractions, salt: str) -> str:
    total = sum(share for _, share in fractions)
    if not fractions or total <= 0 or any(share < 0 for _, share in fractions):
        raise ValueError(f"fractions must be non-negative with a positive sum, got {fractions!r}")
    point = _unit_hash(text, salt) * total
    for name, share in fractions:
        point -= share
        if point < 0:
            return name
    return fractions[-1][0]  # float rounding at the very top of the range


def split_of(tokens: Sequence[str], fractions: Fractions = DEFAULT_FRACTIONS, salt: str = "") -> str:
    """The split of a (normalised) token sequence, by a hash of `" ".join(tokens)`; fractions need not sum to 1."""
    return _pick(" ".join(tokens), fractions, salt)


def formula_key(formula: str | Sequence[str]) -> str:
    """The normalised form that decides a formula's split: LaTeX strings and token lists of one formula agree."""
    tokens = normalize_latex(formula) if isinstance(formula, str) else normalize(list(formula))
    return " ".join(tokens)


def split_formulas(formulas: Formulas, fractions: Fractions = DEFAULT_FRACTIONS, salt: str = "") -> dict[str, list]:
    """Group formulas (LaTeX strings or token lists) by split; every split in `fractions` is a key, order kept."""
    out: dict[str, list] = {name: [] for name, _ in fractions}
    for formula in formulas:
        out[_pick(formula_key(formula), fractions, salt)].append(formula)
    return out


def stem_prefix(stem: str) -> str:
    """A file stem without its last numbered part: 'formulaire001-equation003' -> 'formulaire001',
    '2009210-947-105' -> '2009210-947', 'MfrDB0001' -> 'MfrDB' (CROHME names files writer/session first)."""
    head, sep, _ = stem.rpartition("-" if "-" in stem else "_")
    return head if sep else re.sub(r"\d+$", "", stem) or stem


def _writer_attr(item: Any) -> str | None:
    return item.writer


def writer_group(item: Any, key: Callable[[Any], str | None] = _writer_attr) -> str:
    """`source/writer`, or `source/<file-stem prefix>` when the item names no writer (HAMEX, MathBrush)."""
    source = getattr(item, "source", "")
    writer = key(item)
    if writer is None:
        writer = "stem:" + stem_prefix(Path(item.path).stem)
    return f"{source}/{writer}"


def split_by_writer(items: Iterable[Any], key: Callable[[Any], str | None] = _writer_attr,
                    fractions: Fractions = DEFAULT_FRACTIONS, salt: str = "") -> dict[str, list]:
    """Split handwriting so that no writer sits in two splits.

    `key(item)` gives the writer (default: `item.writer`, e.g. an InkExpression);
    None falls back to the item's source plus its file-stem prefix. Shares are
    shares of writers, so item proportions vary with how much each writer wrote.
    """
    out: dict[str, list] = {name: [] for name, _ in fractions}
    for item in items:
        out[_pick(writer_group(item, key), fractions, salt)].append(item)
    return out


def overlap_report(train_formulas: Formulas, eval_formulas: Formulas) -> float:
    """Share of eval formulas (counted per line) whose normalised form also occurs in train; 0.0 for no eval lines.

    0.65 for a random 1,000-line val split of the exam corpus, 0.0 for `split_formulas`.
    """
    seen = {formula_key(formula) for formula in train_formulas}
    keys = [formula_key(formula) for formula in eval_formulas]
    return sum(key in seen for key in keys) / len(keys) if keys else 0.0
