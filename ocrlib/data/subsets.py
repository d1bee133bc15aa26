"""Task subsets of a data set: only formulas over the k most frequent tokens and up to n tokens long.

For scaling studies (notebook 21: CSTR from its paper's 37 symbols and 25 characters to this task's ~260 tokens
and ~150): a subset is a competition-layout folder whose gt.txt keeps the matching lines and whose images/
links to the original images, so nothing is copied.

    allowed = frequent_tokens(read_gt(train)[0], 37)
    folder, kept = restrict(train, out, allowed, max_tokens=25)
"""
from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

from ocrlib.data.sources import Sample, read_gt
from ocrlib.tokens import Vocab, join


def frequent_tokens(samples: list[Sample], k: int | None) -> set[str]:
    """The k most frequent tokens of the samples (ties broken by the token, so the set is reproducible);
    None: every token."""
    counts = Counter(t for s in samples for t in s.tokens)
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    return set(ranked if k is None else ranked[:k])


def restrict(folder: str | Path, out: str | Path, allowed: set[str], max_tokens: int | None) -> tuple[Path, int]:
    """Write the subset of `folder` whose formulas use only `allowed` tokens and have at most `max_tokens`
    (None: any length) into `out` (gt.txt, source.txt, images/ linked). -> (out, samples kept)."""
    folder, out = Path(folder), Path(out)
    samples, _ = read_gt(folder)
    kept = [s for s in samples if (max_tokens is None or len(s.tokens) <= max_tokens) and set(s.tokens) <= allowed]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    os.symlink((folder / "images").resolve(), out / "images", target_is_directory=True)
    (out / "gt.txt").write_text("".join(f"{s.image.name}\t{join(s.tokens)}\n" for s in kept), encoding="utf-8")
    (out / "source.txt").write_text("".join(f"{s.image.name}\t{s.source}\n" for s in kept), encoding="utf-8")
    return out, len(kept)


def task_subset(built, k: int | None, max_tokens: int | None,
                train_sets: tuple[str, ...] = ("printed/train", "tex/train"), val_set: str = "printed/val"):
    """The sets of a built profile (data.build.BuiltData) cut to formulas over the k most frequent training
    tokens and at most `max_tokens` long, under <root>/subsets/k<k>-len<n>/, with their own tokens.txt (a model
    trained on it has a k-token output layer). -> (a BuiltData of the same set names, {set name: images kept})."""
    name = f"k{k or 'all'}-len{max_tokens or 'all'}"
    root = Path(built.root) / "subsets" / name
    train_samples = [s for key in train_sets for s in read_gt(built.sets[key])[0]]
    allowed = frequent_tokens(train_samples, k)
    sets, kept = {}, {}
    for key in (*train_sets, val_set):
        sets[key], kept[key] = restrict(built.sets[key], root / key.replace("/", "_"), allowed, max_tokens)
    Vocab.build([allowed]).save(root / "tokens.txt")
    return replace(built, root=root, sets=sets), kept
