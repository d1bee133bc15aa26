"""Statistics for exploratory data analysis: token frequencies, coverage, lengths, corpus distances, images.

Plain functions returning pandas objects or dicts; notebooks do the plotting.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ocrlib.data.augment import ink_density


def token_frequencies(seqs: Iterable[list[str]]) -> pd.Series:
    """Occurrences of each token over all sequences, most frequent first (index: token, name: count)."""
    counts = Counter(tok for seq in seqs for tok in seq)
    series = pd.Series(counts, name="count", dtype="int64")
    series.index.name = "token"
    # Stable tie-break by token so the order is reproducible.
    return series.sort_index().sort_values(ascending=False, kind="stable")


def coverage_curve(freqs: pd.Series) -> pd.DataFrame:
    """Top-k tokens vs the share of all occurrences they cover: columns k, token, count, share (ends at 1)."""
    ordered = freqs.sort_values(ascending=False, kind="stable")
    counts = ordered.to_numpy(dtype=np.int64)
    share = np.cumsum(counts) / counts.sum() if counts.size else np.array([], dtype=float)
    return pd.DataFrame({"k": np.arange(1, counts.size + 1), "token": ordered.index, "count": counts, "share": share})


def length_stats(seqs: Iterable[list[str]]) -> dict:
    """Sequence-length summary: n, mean, median, p95, max."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    if lengths.size == 0:
        raise ValueError("length_stats of an empty collection")
    return {"n": int(lengths.size), "mean": float(lengths.mean()), "median": float(np.median(lengths)),
            "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max())}


def js_distance(freq_a: Mapping, freq_b: Mapping) -> float:
    """Jensen-Shannon distance (sqrt of the divergence, log base 2, so in [0, 1]) over the union of keys.

    Arguments are counts or probabilities keyed by item (Counter, dict, pandas Series); each is normalised.
    """
    freq_a, freq_b = dict(freq_a.items()), dict(freq_b.items())  # a Series iterates values, a dict keys
    keys = sorted(set(freq_a) | set(freq_b), key=str)
    p = np.array([freq_a.get(k, 0) for k in keys], dtype=np.float64)
    q = np.array([freq_b.get(k, 0) for k in keys], dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0 or (p < 0).any() or (q < 0).any():
        raise ValueError("js_distance needs non-negative frequencies with a positive total on both sides")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0  # where x > 0, m > 0 too
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    divergence = (kl(p) + kl(q)) / 2
    # Rounding can push the divergence a hair outside [0, 1].
    return float(np.sqrt(min(max(divergence, 0.0), 1.0)))


def length_counts(seqs: Iterable[list[str]]) -> Counter:
    """How many sequences have each length."""
    return Counter(len(s) for s in seqs)


def compare_corpora(real_seqs: list[list[str]], synth_seqs: list[list[str]]) -> dict:
    """How far a synthetic token corpus is from a real one.

    Returns js_tokens (JS distance of token frequencies), js_lengths (of length histograms),
    oov_synth (share of synthetic token occurrences whose token never occurs in the real corpus),
    oov_real (share of real occurrences whose token the synthetic corpus never produces),
    vocab_real / vocab_synth / vocab_shared (distinct tokens), and length_real / length_synth (length_stats).
    """
    fr, fs = token_frequencies(real_seqs), token_frequencies(synth_seqs)
    shared = fr.index.intersection(fs.index)
    return {
        "js_tokens": js_distance(fr, fs),
        "js_lengths": js_distance(length_counts(real_seqs), length_counts(synth_seqs)),
        "oov_synth": float(1 - fs[shared].sum() / fs.sum()),
        "oov_real": float(1 - fr[shared].sum() / fr.sum()),
        "vocab_real": int(fr.size), "vocab_synth": int(fs.size), "vocab_shared": int(shared.size),
        "length_real": length_stats(real_seqs), "length_synth": length_stats(synth_seqs),
    }


def image_stats(folder: str | Path) -> pd.DataFrame:
    """Per image of a competition-layout folder (images/ + gt.txt [+ source.txt]).

    Columns: image (path relative to images/), width, height, aspect (width / height),
    ink_density (augment.ink_density: share of pixels darker than 128), n_tokens, source.
    Lines that read_gt refuses are left out (it reports them); an unreadable image raises BadInput.
    """
    from ocrlib.data.sources import read_gt  # local import: sources pulls in the InkML reader
    from ocrlib.errors import BadInput

    folder = Path(folder)
    samples, _problems = read_gt(folder)
    rows = []
    for sample in samples:
        try:
            with Image.open(sample.image) as img:
                gray = np.asarray(img.convert("L"))  # (H, W) uint8
        except OSError as err:
            raise BadInput(sample.image, f"cannot read image ({err})") from err
        height, width = gray.shape
        rows.append({"image": sample.image.relative_to(folder / "images").as_posix(), "width": width,
                     "height": height, "aspect": width / height,
                     "ink_density": ink_density(gray),
                     "n_tokens": len(sample.tokens), "source": sample.source})
    columns = ["image", "width", "height", "aspect", "ink_density", "n_tokens", "source"]
    return pd.DataFrame(rows, columns=columns)
