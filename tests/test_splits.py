"""Hash splits: stable across runs, disjoint by formula / writer, proportions as asked."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from ocrlib.data.sources import read_formula_list
from ocrlib.data.splits import (
    DEFAULT_FRACTIONS,
    formula_key,
    overlap_report,
    split_by_writer,
    split_formulas,
    split_of,
    stem_prefix,
)
from ocrlib.paths import exam_formulas_file

N = 10_000


def _synthetic_token_lists(n: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    alphabet = list("abcxyz0123456789+-=") + ["\\frac", "{", "}", "^", "_", "\\alpha"]
    return [[rng.choice(alphabet) for _ in range(rng.randint(1, 12))] + [str(i)] for i in range(n)]


def test_split_of_is_stable_across_processes():
    """sha256, not hash(): a fresh interpreter (new PYTHONHASHSEED) gives the same splits."""
    items = _synthetic_token_lists(200)
    here = [split_of(tokens, salt="s") for tokens in items]
    code = ("import sys, json; from ocrlib.data.splits import split_of; "
            "print(json.dumps([split_of(t, salt='s') for t in json.load(sys.stdin)]))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(items), capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "12345", "PATH": ""}, cwd=Path(__file__).parent.parent)
    assert json.loads(out.stdout) == here


def test_proportions_within_tolerance_on_10k():
    counts = Counter(split_of(tokens) for tokens in _synthetic_token_lists(N))
    for name, share in DEFAULT_FRACTIONS:
        assert abs(counts[name] / N - share) < 0.015, counts
    uneven = Counter(split_of(tokens, (("a", 3), ("b", 1))) for tokens in _synthetic_token_lists(N))
    assert abs(uneven["a"] / N - 0.75) < 0.015


def test_salt_changes_the_assignment():
    items = _synthetic_token_lists(500)
    same = sum(split_of(t, salt="a") == split_of(t, salt="b") for t in items)
    assert same < 0.8 * len(items)  # ~66% agree by chance for 80/10/10


def test_split_formulas_keeps_each_normalised_formula_in_one_split():
    base = [f"x^{{{i}}} + \\frac{{{i}}}{{2}}" for i in range(300)]
    # the same formulas written differently: spaces, redundant braces, unbraced arguments
    variants = [f"x ^ {{{i}}}+{{\\frac{{{i}}} 2}}" for i in range(300)] + [f.replace("+", " + ") for f in base]
    splits = split_formulas(base + variants)
    assert set(splits) == {"train", "val", "test"}
    where: dict[str, set[str]] = {}
    for name, formulas in splits.items():
        for formula in formulas:
            where.setdefault(formula_key(formula), set()).add(name)
    assert len(where) == 300
    assert all(len(names) == 1 for names in where.values())
    assert sum(len(v) for v in splits.values()) == 900


def test_string_and_token_forms_agree():
    assert formula_key("x^2 \\le 1") == formula_key(["x", "^", "2", "\\le", "1"])


def test_overlap_report_shows_random_split_leak():
    rng = random.Random(0)
    pool = [f"a_{{{i}}} = {i} n" for i in range(200)]
    corpus = [rng.choice(pool) for _ in range(2000)]  # repeated formulas, like the exam corpus
    rng.shuffle(corpus)
    assert overlap_report(corpus[:1800], corpus[1800:]) > 0.8
    splits = split_formulas(corpus)
    assert overlap_report(splits["train"], splits["val"] + splits["test"]) == 0.0
    assert overlap_report(["x"], []) == 0.0
    assert overlap_report(["x ^ 2"], ["x^{2}", "y"]) == 0.5


@dataclass
class Ink:
    path: Path
    writer: str | None
    source: str


def test_stem_prefix_on_crohme_names():
    assert stem_prefix("formulaire001-equation003") == "formulaire001"
    assert stem_prefix("2009210-947-105") == "2009210-947"
    assert stem_prefix("18_em_0") == "18_em"
    assert stem_prefix("MfrDB0001") == "MfrDB"


def test_split_by_writer_never_shares_a_writer():
    rng = random.Random(1)
    items = [Ink(Path(f"KAIST/x_{i}.inkml"), f"w{rng.randrange(300)}", "KAIST") for i in range(3000)]
    items += [Ink(Path(f"HAMEX/formulaire{f:03d}-equation{e:03d}.inkml"), None, "HAMEX")
              for f in range(60) for e in range(10)]
    splits = split_by_writer(items)
    owner: dict[str, set[str]] = {}
    for name, members in splits.items():
        for item in members:
            group = item.writer or item.path.stem.split("-")[0]
            owner.setdefault(f"{item.source}/{group}", set()).add(name)
    assert all(len(names) == 1 for names in owner.values())
    assert sum(len(v) for v in splits.values()) == len(items)
    assert 0.65 < len(splits["train"]) / len(items) < 0.95
    # a custom key: group by source only -> each source lands whole in one split
    by_source = split_by_writer(items, key=lambda item: item.source)
    assert sorted(len(v) for v in by_source.values() if v) in ([600, 3000], [3600])


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError):
        split_of(["x"], (("train", 0.0),))
    with pytest.raises(ValueError):
        split_of(["x"], (("train", 1.0), ("val", -0.1)))


def test_real_corpus_random_split_leaks_hash_split_does_not():
    path = exam_formulas_file()
    if path is None:
        pytest.skip("real exam corpus absent (../shared/data/formulas)")
    lines = read_formula_list(path)[:6000]
    random.Random(0).shuffle(lines)
    assert overlap_report(lines[500:], lines[:500]) > 0.2  # the corpus repeats formulas
    splits = split_formulas(lines)
    assert overlap_report(splits["train"], splits["val"]) == 0.0
