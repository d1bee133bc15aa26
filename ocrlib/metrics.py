"""Recognition metrics on token sequences: sentence accuracy, token WER, the competition score, ExpRate.

- SA (sentence accuracy): the fraction of samples (images) whose predicted tokens equal the ground truth exactly.
- WER: token edit distance / max(len(pred), len(gt)), averaged over samples (0 when both are empty).
- score = 0.9 * SA + 0.1 * (1 - WER)  (the 2021 math-exam OCR competition).
- ExpRate<=k (CROHME convention): the fraction of samples with at most k token edits; ExpRate = ExpRate<=0 = SA.
- SA_formulas: SA over distinct ground truths, each counted once with the mean correctness of its images. A test
  set repeats formulas (short ones like `g ( x )` dozens of times), so SA over images leans toward a few easy ones.

`Results` keeps sums, not rates, so results of several batches or data sets aggregate by sample count
(parseq's `_aggregate_results`). Breakdowns group a per-sample DataFrame (see `ocrlib.evaluate`) by
length bucket, source, renderer or aspect-ratio bucket, each row with both SAs. For error analysis,
`token_confusion` counts which true token the edit-distance alignment substitutes by which predicted one.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, astuple, dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ocrlib import tables

LENGTH_EDGES = (10, 20, 40)             # ground-truth token counts: 1-10, 11-20, 21-40, >40
ASPECT_EDGES = (2.0, 4.0, 8.0, 16.0)    # image width / height


def _edit_table(a: Sequence, b: Sequence) -> list[list[int]]:
    """table[i][j]: Levenshtein distance of a[:i] and b[:j]; kept whole so that an alignment can be traced back."""
    table = [list(range(len(b) + 1))]
    for i, x in enumerate(a, 1):
        row = [i]
        for j, y in enumerate(b, 1):
            row.append(min(table[i - 1][j] + 1, row[j - 1] + 1, table[i - 1][j - 1] + (x != y)))
        table.append(row)
    return table


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two token sequences (insert, delete, substitute each cost 1)."""
    return _edit_table(a, b)[-1][-1]


def substitutions(pred: Sequence, gt: Sequence) -> list[tuple]:
    """(true, predicted) token pairs that a minimal edit-distance alignment substitutes, in order.

    Traces the table back from the end, preferring match/substitution over insertion/deletion on ties.
    """
    table, i, j, pairs = _edit_table(gt, pred), len(gt), len(pred), []
    while i and j:
        if table[i][j] == table[i - 1][j - 1] + (gt[i - 1] != pred[j - 1]):
            if gt[i - 1] != pred[j - 1]:
                pairs.append((gt[i - 1], pred[j - 1]))
            i, j = i - 1, j - 1
        elif table[i][j] == table[i - 1][j] + 1:
            i -= 1  # gt token deleted
        else:
            j -= 1  # pred token inserted
    return pairs[::-1]


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


def verdict_word(change: float, noise: float, lower_is_better: bool = False) -> str:
    """'helped' or 'hurt' when the change of a metric against its baseline is beyond `noise` (a measured spread,
    or a stated smallest effect), else 'no effect'."""
    gain = -change if lower_is_better else change
    return "helped" if gain > noise else "hurt" if gain < -noise else "no effect"


def verdict(change: float, noise: float, lower_is_better: bool = False) -> str:
    """`verdict_word` with the signed change in brackets, for a sentence."""
    return f"{verdict_word(change, noise, lower_is_better)} ({change:+.3f})"


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
    """'1-10', '11-20', '21-40', '>40' for a token count."""
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


def formula_sa(frame: pd.DataFrame) -> float:
    """SA over distinct formulas of a per-sample frame (columns gt, edit_distance): the mean over ground truths
    of the fraction of their images read exactly."""
    if frame.empty:
        return 0.0
    return float((frame["edit_distance"] == 0).groupby(frame["gt"]).mean().mean())


def summary_of(frame: pd.DataFrame) -> dict:
    """`Results.summary` of a per-sample frame, with the distinct formulas and SA over them beside n and SA."""
    rest = results_of(frame).summary()
    head = {"n": rest.pop("n"), "formulas": int(frame["gt"].nunique()),
            "SA": rest.pop("SA"), "SA_formulas": round(formula_sa(frame), 4)}
    return {**head, **rest}


def summary_frame(frames: dict[str, pd.DataFrame], index_name: str = "data") -> pd.DataFrame:
    """One row (`summary_of`) per named per-sample frame."""
    table = pd.DataFrame.from_dict({name: summary_of(f) for name, f in frames.items()}, orient="index")
    table.index.name = index_name
    return table


def breakdown(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """One row per value of column `by` (e.g. length_bucket, source, renderer, aspect_bucket) plus 'all'."""
    groups = {str(key): group for key, group in frame.groupby(by)}
    rows = {key: groups[key] for key in sorted(groups, key=_bucket_order)}
    return summary_frame({**rows, "all": frame}, index_name=by)


# Structures and symbol classes a formula can hold (CROHME reports accuracy by them too)
SYMBOL_CLASSES = {
    "fraction": {"\\frac"}, "root": {"\\sqrt"}, "script": {"^", "_"},
    "big operator": {"\\sum", "\\int", "\\prod", "\\lim", "\\iint", "\\oint"},
    "function": {"\\sin", "\\cos", "\\tan", "\\log", "\\ln", "\\exp"},
    "greek": {"\\alpha", "\\beta", "\\gamma", "\\theta", "\\lambda", "\\mu", "\\pi", "\\sigma", "\\phi",
              "\\Delta", "\\omega", "\\varphi", "\\epsilon", "\\varepsilon", "\\rho", "\\delta", "\\tau"},
    "relation": {"=", "<", ">", "\\leq", "\\geq", "\\neq", "\\rightarrow", "\\in", "\\approx"},
}


def by_symbol_class(frame: pd.DataFrame) -> pd.DataFrame:
    """`summary_of` the samples whose truth holds each class of SYMBOL_CLASSES (a sample counts in every class
    it holds; 'none' holds none of them), plus 'all'."""
    tokens = frame["gt"].str.split()
    holds = {name: tokens.map(lambda t, members=members: bool(members.intersection(t)))
             for name, members in SYMBOL_CLASSES.items()}
    holds["none"] = ~pd.DataFrame(holds, index=frame.index).any(axis=1)
    rows = {name: frame[mask] for name, mask in holds.items() if mask.any()}
    return summary_frame({**rows, "all": frame}, index_name="symbol class")


def results_frame(rows: dict[str, Results]) -> pd.DataFrame:
    """Named Results as a frame, one row each (index 'data'), columns as in `Results.summary`."""
    frame = pd.DataFrame.from_dict({name: r.summary() for name, r in rows.items()}, orient="index")
    frame.index.name = "data"
    return frame


def markdown_table(rows: dict[str, Results] | pd.DataFrame) -> str:
    """A markdown table of named Results (or of a breakdown frame), one row each, rates to 4 decimals."""
    frame = results_frame(rows) if isinstance(rows, dict) else rows
    return tables.markdown_table(frame, index=True, floatfmt=".4f")


def token_confusion(frame: pd.DataFrame, top_k: int = 20) -> pd.DataFrame:
    """Substitution counts of a per-sample frame (columns gt and pred: space-separated tokens), for a heat map.

    Rows are true tokens, columns predicted ones, both the top_k tokens that take part in the most
    substitutions (all ~260 tokens would make an unreadable map). The diagonal is 0: a substitution
    always changes its token.
    """
    from sklearn.metrics import confusion_matrix  # here, not at the top: importing sklearn costs a second

    pairs = [pair for gt, pred in zip(frame["gt"].fillna(""), frame["pred"].fillna(""))
             for pair in substitutions(pred.split(), gt.split())]
    labels = [token for token, _ in Counter(token for pair in pairs for token in pair).most_common(top_k)]
    kept = [(t, p) for t, p in pairs if t in labels and p in labels]
    matrix = (confusion_matrix([t for t, _ in kept], [p for _, p in kept], labels=labels) if kept
              else np.zeros((len(labels), len(labels)), dtype=int))  # sklearn refuses empty label lists
    return pd.DataFrame(matrix, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted"))


def most_confused(confusion: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The n largest cells of a `token_confusion` frame, as rows (true, predicted, count)."""
    cells = confusion.stack().rename("count").reset_index()
    cells = cells[cells["count"] > 0].sort_values("count", ascending=False, kind="stable")
    return cells.head(n).reset_index(drop=True)
