"""Recognition metrics on token sequences: sentence accuracy, token WER, the competition score, ExpRate.

- SA (sentence accuracy): the fraction of formulas whose predicted tokens equal the ground truth exactly.
- WER: token edit distance / max(len(pred), len(gt)), averaged over formulas (0 when both are empty).
- score = 0.9 * SA + 0.1 * (1 - WER)  (the 2021 math-exam OCR competition).
- ExpRate<=k (CROHME convention): the fraction of formulas with at most k token edits; ExpRate = ExpRate<=0 = SA.

`Results` keeps sums, not rates, so results of several batches or data sets aggregate by sample count
(parseq's `_aggregate_results`). Breakdowns group a per-sample DataFrame (see `ocrlib.evaluate`) by
length bucket, source, renderer or aspect-ratio bucket.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, astuple, dataclass
from typing import Iterable, Sequence

import pandas as pd

LENGTH_EDGES = (10, 20, 40, 80)         # ground-truth token counts; the last bucket is open
ASPECT_EDGES = (2.0, 4.0, 8.0, 16.0)    # image width / height


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two token sequences (insert, delete, substitute each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def token_wer(pred: Sequence, gt: Sequence) -> float:
    """Edit distance normalised by the longer sequence, so it lies in [0, 1]."""
    longest = max(len(pred), len(gt))
    return edit_distance(pred, gt) / longest if longest else 0.0


def sentence_acc(preds: Iterable[Sequence], gts: Iterable[Sequence]) -> float:
    return Results.from_pairs(preds, gts).sa


def wer(preds: Iterable[Sequence], gts: Iterable[Sequence]) -> float:
    return Results.from_pairs(preds, gts).wer


def exprate(preds: Iterable[Sequence], gts: Iterable[Sequence], k: int = 0) -> float:
    """Fraction of formulas recognised with at most k token edits."""
    pairs = list(zip(preds, gts, strict=True))
    return sum(edit_distance(p, g) <= k for p, g in pairs) / len(pairs) if pairs else 0.0


def score(sa: float, wer_: float) -> float:
    """The competition score."""
    return 0.9 * sa + 0.1 * (1.0 - wer_)


@dataclass
class Results:
    """Sums over formulas; the rates are properties, so `a + b` weighs each part by its sample count."""
    n: int = 0               # formulas
    correct: int = 0         # exact matches
    wer_sum: float = 0.0     # sum of per-formula token WER
    within1: int = 0         # formulas with edit distance <= 1
    within2: int = 0         # formulas with edit distance <= 2

    @classmethod
    def from_distances(cls, distances: Iterable[int], wers: Iterable[float]) -> "Results":
        distances, wers = list(distances), list(wers)
        return cls(n=len(distances), correct=sum(d == 0 for d in distances), wer_sum=float(sum(wers)),
                   within1=sum(d <= 1 for d in distances), within2=sum(d <= 2 for d in distances))

    @classmethod
    def from_pairs(cls, preds: Iterable[Sequence], gts: Iterable[Sequence]) -> "Results":
        pairs = list(zip(preds, gts, strict=True))
        return cls.from_distances([edit_distance(p, g) for p, g in pairs], [token_wer(p, g) for p, g in pairs])

    def __add__(self, other: "Results") -> "Results":
        return Results(*(a + b for a, b in zip(astuple(self), astuple(other))))

    def _rate(self, count: float) -> float:
        return count / self.n if self.n else 0.0

    @property
    def sa(self) -> float:
        return self._rate(self.correct)

    @property
    def wer(self) -> float:
        return self._rate(self.wer_sum)

    @property
    def score(self) -> float:
        return score(self.sa, self.wer)

    @property
    def exprate1(self) -> float:
        return self._rate(self.within1)

    @property
    def exprate2(self) -> float:
        return self._rate(self.within2)

    def summary(self) -> dict:
        """Rates and the sample count, rounded for tables and JSON."""
        return {"n": self.n, "SA": round(self.sa, 4), "WER": round(self.wer, 4), "score": round(self.score, 4),
                "ExpRate<=1": round(self.exprate1, 4), "ExpRate<=2": round(self.exprate2, 4)}

    def as_dict(self) -> dict:
        """Sums and rates: enough to aggregate again later."""
        return {**asdict(self), **self.summary()}


def length_bucket(length: int, edges: Sequence[int] = LENGTH_EDGES) -> str:
    """'1-10', '11-20', ..., '>80' for a token count."""
    low = 1
    for edge in edges:
        if length <= edge:
            return f"{low}-{edge}"
        low = edge + 1
    return f">{edges[-1]}"


def aspect_bucket(aspect: float, edges: Sequence[float] = ASPECT_EDGES) -> str:
    """'<2', '2-4', ..., '>=16' for an image width / height."""
    if aspect != aspect:  # NaN: the image size is unknown
        return "unknown"
    low = None
    for edge in edges:
        if aspect < edge:
            return f"<{edge:g}" if low is None else f"{low:g}-{edge:g}"
        low = edge
    return f">={edges[-1]:g}"


def results_of(frame: pd.DataFrame) -> Results:
    """Results of a per-sample frame with columns `edit_distance` and `wer`."""
    return Results.from_distances(frame["edit_distance"].tolist(), frame["wer"].tolist())


def _bucket_order(label: str) -> tuple[float, str]:
    """Buckets by their lower bound ('<2' first, '>=16' last), other labels alphabetically after them."""
    number = re.search(r"\d+(\.\d+)?", label)
    if label.startswith("<"):
        return 0.0, label
    return (float(number.group()) if number else math.inf), label


def breakdown(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """One row per value of column `by` (e.g. length_bucket, source, renderer, aspect_bucket) plus 'all'."""
    groups = {str(key): group for key, group in frame.groupby(by)}
    rows = {key: results_of(groups[key]).summary() for key in sorted(groups, key=_bucket_order)}
    rows["all"] = results_of(frame).summary()
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = by
    return table


def markdown_table(rows: dict[str, Results] | pd.DataFrame) -> str:
    """A markdown table of named Results (or of a breakdown frame), one row each."""
    if isinstance(rows, dict):
        rows = pd.DataFrame.from_dict({name: r.summary() for name, r in rows.items()}, orient="index")
        rows.index.name = "data"
    header = [rows.index.name or ""] + [str(c) for c in rows.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for name, *values in rows.itertuples(name=None):  # per-column types survive (n stays an int)
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in values]
        lines.append("| " + " | ".join([str(name)] + cells) + " |")
    return "\n".join(lines)
