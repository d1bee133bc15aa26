"""Metrics on hand-computed examples."""
import math

import pandas as pd
import pytest

from ocrlib.metrics import (Results, aspect_bucket, breakdown, by_symbol_class, edit_distance, exprate, formula_sa,
                            length_bucket, markdown_table, most_confused, score, sentence_acc, substitutions, summary_frame,
                            token_confusion, token_wer, verdict, verdict_word, wer)

# gt, pred, edit distance, token WER
CASES = [
    ("x ^ { 2 }", "x ^ { 2 }", 0, 0.0),
    ("a + b", "a - b", 1, 1 / 3),
    ("\\frac { 1 } { 2 }", "\\frac { 1 } { 2", 1, 1 / 7),
    ("y", "z = 3", 3, 1.0),
]
GTS = [c[0].split() for c in CASES]
PREDS = [c[1].split() for c in CASES]


def test_edit_distance_classic_examples():
    assert edit_distance(list("kitten"), list("sitting")) == 3
    assert edit_distance([], ["a", "b"]) == 2
    assert edit_distance(["a", "b", "c"], ["a", "c"]) == 1
    assert edit_distance(["\\alpha"], ["\\alpha"]) == 0


@pytest.mark.parametrize("gt, pred, distance, expected_wer", CASES)
def test_per_formula_distance_and_wer(gt, pred, distance, expected_wer):
    assert edit_distance(pred.split(), gt.split()) == distance
    assert token_wer(pred.split(), gt.split()) == pytest.approx(expected_wer)


def test_corpus_level_metrics():
    expected_wer = (0 + 1 / 3 + 1 / 7 + 1) / 4
    assert sentence_acc(PREDS, GTS) == 0.25
    assert wer(PREDS, GTS) == pytest.approx(expected_wer)
    assert score(0.25, expected_wer) == pytest.approx(0.9 * 0.25 + 0.1 * (1 - expected_wer))
    assert exprate(PREDS, GTS, 0) == 0.25
    assert exprate(PREDS, GTS, 1) == 0.75
    assert exprate(PREDS, GTS, 3) == 1.0
    r = Results.from_pairs(PREDS, GTS)
    assert (r.n, r.correct, r.within1, r.within2) == (4, 1, 3, 3)
    assert r.score == pytest.approx(0.225 + 0.1 * (1 - expected_wer))


def test_results_aggregate_by_sample_count():
    part_a = Results.from_pairs(PREDS[:1], GTS[:1])    # SA 1.0 on 1 formula
    part_b = Results.from_pairs(PREDS[1:], GTS[1:])    # SA 0.0 on 3 formulas
    total = part_a + part_b
    assert total == Results.from_pairs(PREDS, GTS)
    assert total.sa == 0.25                             # not the mean of the rates (0.5)


def test_empty_sequences_and_empty_results():
    assert token_wer([], []) == 0.0
    assert Results.from_pairs([[]], [[]]).sa == 1.0
    assert Results().sa == 0.0 and Results().wer == 0.0


def test_buckets():
    lengths = (1, 10, 11, 20, 21, 40, 41, 200)
    assert [length_bucket(n) for n in lengths] == ["1-10", "1-10", "11-20", "11-20", "21-40", "21-40", ">40", ">40"]
    assert [aspect_bucket(a) for a in (1.5, 2.0, 7.9, 16.0)] == ["<2", "2-4", "4-8", ">=16"]
    assert aspect_bucket(math.nan) == "unknown"


def test_breakdown_by_source_and_markdown():
    frame = pd.DataFrame({
        "gt": [c[0] for c in CASES],
        "edit_distance": [0, 1, 1, 3],
        "wer": [c[3] for c in CASES],
        "source": ["tex", "mathtext", "tex", "mathtext"],
    })
    table = breakdown(frame, "source")
    assert list(table.index) == ["mathtext", "tex", "all"]
    assert table.loc["tex", "SA"] == 0.5 and table.loc["tex", "n"] == 2
    assert table.loc["mathtext", "ExpRate<=1"] == 0.5
    assert table.loc["all", "WER"] == pytest.approx(round((0 + 1 / 3 + 1 / 7 + 1) / 4, 4))
    text = markdown_table(table)
    lines = text.splitlines()
    assert lines[0] == "| source | n | formulas | SA | SA_formulas | WER | score | ExpRate<=1 | ExpRate<=2 |"
    assert lines[2].startswith("| mathtext | 2 | 2 | 0.0000 | 0.0000 | ")
    assert len(lines) == 2 + 3


def test_markdown_of_named_results():
    text = markdown_table({"val": Results.from_pairs(PREDS, GTS)})
    assert text.splitlines()[0].startswith("| data | n | SA |") and "| val | 4 | 0.2500 |" in text


def test_by_symbol_class_counts_a_sample_in_every_class_it_holds():
    frame = pd.DataFrame({"gt": ["\\frac { x ^ { 2 } } { 2 }", "x ^ { 2 } = 1", "a + b", "\\sqrt { 2 }"],
                          "edit_distance": [0, 1, 0, 2], "wer": [0.0, 0.2, 0.0, 0.5]})
    table = by_symbol_class(frame)
    assert list(table.index) == ["fraction", "root", "script", "relation", "none", "all"]
    assert table.loc["script", "n"] == 2 and table.loc["script", "SA"] == 0.5  # the fraction holds a script too
    assert table.loc["root", "ExpRate<=2"] == 1.0 and table.loc["root", "ExpRate<=1"] == 0.0
    assert table.loc["none", "n"] == 1 and table.loc["all", "n"] == 4


def test_breakdown_orders_buckets_by_their_bounds():
    aspects = [30.0, 1.5, 5.0, 2.5, 10.0]
    frame = pd.DataFrame({"gt": list("abcde"), "edit_distance": [0] * 5, "wer": [0.0] * 5,
                          "aspect_bucket": [aspect_bucket(a) for a in aspects],
                          "length_bucket": [length_bucket(n) for n in (90, 3, 15, 30, 50)]})
    assert list(breakdown(frame, "aspect_bucket").index) == ["<2", "2-4", "4-8", "8-16", ">=16", "all"]
    assert list(breakdown(frame, "length_bucket").index) == ["1-10", "11-20", "21-40", ">40", "all"]


def repeated_formulas() -> pd.DataFrame:
    """Formula A in 3 images, all read right; formula B in 1 image, read wrong; C (long) in 2, one right."""
    return pd.DataFrame({"gt": ["A", "A", "A", "B", "C", "C"], "edit_distance": [0, 0, 0, 2, 0, 1],
                         "wer": [0.0, 0.0, 0.0, 1.0, 0.0, 0.5],
                         "length_bucket": ["1-10"] * 4 + [">40"] * 2})


def test_sa_over_formulas_counts_each_formula_once():
    frame = repeated_formulas()
    assert formula_sa(frame.iloc[:4]) == 0.5                    # (1 + 0) / 2, while SA over images is 3 / 4
    assert Results.from_distances(frame["edit_distance"][:4], frame["wer"][:4]).sa == 0.75
    assert formula_sa(frame) == pytest.approx((1 + 0 + 0.5) / 3)
    assert formula_sa(frame.iloc[0:0]) == 0.0


def test_breakdown_shows_both_sas_by_length():
    table = breakdown(repeated_formulas(), "length_bucket")
    assert list(table.columns[:4]) == ["n", "formulas", "SA", "SA_formulas"]
    assert table.loc["1-10", ["n", "formulas", "SA", "SA_formulas"]].tolist() == [4, 2, 0.75, 0.5]
    assert table.loc[">40", ["n", "formulas", "SA", "SA_formulas"]].tolist() == [2, 1, 0.5, 0.5]
    assert table.loc["all", ["n", "formulas", "SA", "SA_formulas"]].tolist() == [6, 3, round(4 / 6, 4), 0.5]
    row = summary_frame({"test": repeated_formulas()}).loc["test"]
    assert (row["formulas"], row["SA_formulas"]) == (3, 0.5)


def test_substitutions_follow_the_alignment_not_the_positions():
    assert substitutions("b c".split(), "a b c".split()) == []  # a deleted: nothing is substituted
    assert substitutions("x - y }".split(), "x + y".split()) == [("+", "-")]
    assert substitutions("1 2".split(), "a b".split()) == [("a", "1"), ("b", "2")]


def test_token_confusion_counts_substitutions_of_the_most_confused_tokens():
    frame = pd.DataFrame({"gt": ["x + y", "a + b", r"\alpha = 1", "a b c", "2", "x"],
                          "pred": ["x - y", "a - b", "a = 1", "b c", "", "x"]})
    confusion = token_confusion(frame, top_k=4)
    assert list(confusion.index) == ["+", "-", r"\alpha", "a"] == list(confusion.columns)
    assert confusion.to_numpy().sum() == 3 and confusion.loc["+", "-"] == 2 and confusion.loc[r"\alpha", "a"] == 1
    assert most_confused(confusion).values.tolist() == [["+", "-", 2], [r"\alpha", "a", 1]]
    small = token_confusion(frame, top_k=3)  # 'a' is left out, and with it the pair (\alpha, a)
    assert list(small.index) == ["+", "-", r"\alpha"] and small.to_numpy().sum() == 2
    assert token_confusion(frame.iloc[3:], top_k=5).empty  # no substitutions at all


def test_a_verdict_needs_a_change_beyond_the_noise():
    assert verdict(0.05, 0.02) == "helped (+0.050)" and verdict(-0.05, 0.02) == "hurt (-0.050)"
    assert verdict(0.01, 0.02) == "no effect (+0.010)" and verdict(-0.02, 0.02) == "no effect (-0.020)"
    assert verdict(-0.05, 0.02, lower_is_better=True) == "helped (-0.050)"  # WER down
    assert verdict(0.05, 0.02, lower_is_better=True) == "hurt (+0.050)"
    assert [verdict_word(c, 0.02, True) for c in (-0.03, 0.0, 0.03)] == ["helped", "no effect", "hurt"]
