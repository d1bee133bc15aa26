"""Symbol-level ink synthesis: relations place symbols where handwriting puts them, one writer's symbols, labels
in the vocabulary, deterministic per seed, and on real CROHME symbols of the training writers only."""
import random
from pathlib import Path

import numpy as np
import pytest

from ocrlib import paths
from ocrlib.checkpoints import read_checkpoint
from ocrlib.data.ink_synth import SymbolBank, Unsupported, layout, parse, synthesise, synthesise_many
from ocrlib.data.render_ink import render_batch
from ocrlib.data.sources import InkExpression, read_inkml
from ocrlib.data.splits import split_by_writer, writer_group
from ocrlib.errors import BadInput
from ocrlib.pretrained import WEIGHTS
from ocrlib.tokens import normalize_latex

TOKENS = ["x", "2", "n", "a", "1", "+", "-", "=", "\\sqrt", "(", ")"]


def square(points: int = 5) -> np.ndarray:
    """A closed square stroke of side 100 (the number of points tells writers apart)."""
    t = np.linspace(0, 4, points)
    side = np.clip(np.stack([np.abs(((t + 1) % 4) - 2) - 0.5, np.abs((t % 4) - 2) - 0.5], 1), 0, 1)
    return (side * 100).astype(np.float32)


def expression(writer: str, points: int, tokens=TOKENS) -> InkExpression:
    """One expression holding a one-stroke symbol per token; a writer's strokes have `points` points."""
    strokes = [square(points) for _ in tokens]
    return InkExpression(Path(f"{writer}-1.inkml"), strokes, " ".join(tokens), writer, "test",
                         [(tok, [k]) for k, tok in enumerate(tokens)])


@pytest.fixture(scope="module")
def bank():
    return SymbolBank.from_expressions([expression("ann", 5), expression("bob", 7, TOKENS[:4])])


def extent(stroke: np.ndarray) -> tuple[float, float, float, float]:
    (x0, y0), (x1, y1) = stroke.min(0), stroke.max(0)
    return x0, y0, x1, y1


def test_a_superscript_sits_above_right_of_its_base_and_smaller(bank):
    base, sup = layout(parse(["x", "^", "2"]), bank, "test/ann", np.random.default_rng(0)).strokes
    bx0, by0, bx1, by1 = extent(base)
    sx0, sy0, sx1, sy1 = extent(sup)
    assert sx0 > bx1  # right of the base
    assert (sy0 + sy1) / 2 < (by0 + by1) / 2 and sy0 < by0  # raised above it
    assert sy1 - sy0 < by1 - by0 and sx1 - sx0 < bx1 - bx0  # smaller


def test_a_subscript_sits_below_right_and_scripts_stack(bank):
    base, sup, sub = layout(parse(["x", "_", "n", "^", "2"]), bank, "test/ann", np.random.default_rng(0)).strokes
    bx0, by0, bx1, by1 = extent(base)
    assert extent(sub)[0] > bx1 and extent(sub)[3] > by1  # right, and reaching below the base
    assert extent(sup)[1] < extent(sub)[1]  # the superscript above the subscript


def test_a_fraction_puts_numerator_above_bar_above_denominator_and_a_root_covers_its_body(bank):
    bar, num, den = layout(parse(["\\frac", "1", "2"]), bank, "test/ann", np.random.default_rng(0)).strokes
    assert extent(num)[3] < extent(bar)[1] and extent(bar)[3] < extent(den)[1]
    assert extent(bar)[0] <= extent(num)[0] and extent(bar)[2] >= extent(den)[2]  # the bar spans both
    sign, body = layout(parse(["\\sqrt", "{", "x", "+", "1", "}"]), bank, "test/ann", np.random.default_rng(0)).strokes[:2]
    sx0, sy0, sx1, sy1 = extent(sign)
    assert sx0 < extent(body)[0] and sy0 < extent(body)[1] and sx1 > extent(body)[2]


def test_one_writers_symbols_and_borrowing_is_counted(bank):
    ink = synthesise(["x", "+", "2"], bank, np.random.default_rng(0), writer="test/ann")
    assert [len(s) for s in ink.strokes] == [5, 5, 5] and ink.borrowed == 0
    ink = synthesise(["x", "+", "2"], bank, np.random.default_rng(0), writer="test/bob")
    assert [len(s) for s in ink.strokes] == [7, 5, 7] and ink.borrowed == 1  # bob never wrote "+"


def test_formulas_synthesis_cannot_draw_are_refused_with_the_reason(bank):
    with pytest.raises(Unsupported, match="no handwritten symbol for 'y'"):
        synthesise(["y", "+", "1"], bank, np.random.default_rng(0))
    with pytest.raises(Unsupported, match="argument is missing"):
        synthesise(["\\frac", "1"], bank, np.random.default_rng(0))
    inks, skipped = synthesise_many([["x"], ["y"], ["\\frac", "{", "1", "}", "{", "n", "}"], ["a"]], bank, 2, seed=0)
    assert [ink.tokens for ink in inks] == [["x"], ["\\frac", "{", "1", "}", "{", "n", "}"]]
    assert skipped == {"no handwritten symbol for 'y'": 1}


def test_synthesis_and_its_rendering_follow_the_seed(bank):
    formulas = [["x", "^", "2", "+", "1"], ["\\sqrt", "{", "a", "}", "=", "n"]]
    first, _ = synthesise_many(formulas, bank, 2, seed=3)
    again, _ = synthesise_many(formulas, bank, 2, seed=3)
    assert all(np.array_equal(a, b) for x, y in zip(first, again) for a, b in zip(x.strokes, y.strokes))
    images = [r.image for r in render_batch(list(enumerate(first)), seed=3)]
    assert all(np.array_equal(a, r.image) for a, r in zip(images, render_batch(list(enumerate(again)), seed=3)))
    assert all(image is not None and image.min() < 128 for image in images)


def test_real_crohme_symbols_make_in_vocabulary_labels_from_training_writers_only():
    root = paths.crohme_inkml_dir()
    if root is None:
        pytest.skip("CROHME InkML absent (../shared/data)")
    files = random.Random(0).sample(sorted(root.glob("*/*.inkml")), 400)
    expressions = []
    for path in files:
        try:
            expressions.append(read_inkml(path))
        except BadInput:
            pass
    splits = split_by_writer(expressions)
    bank = SymbolBank.from_expressions(splits["train"])
    train_writers = {writer_group(e) for e in splits["train"]}
    assert set(bank.writers) == train_writers
    assert not train_writers & {writer_group(e) for e in splits["val"] + splits["test"]}
    formulas = ["x ^ { 2 } + 1", "\\frac { a + b } { 2 }", "\\sqrt { x - 1 } = 3", "( a _ { n } ) \\leqslant 5",
                "\\sin x \\cdot y"]
    vocab = set(read_checkpoint(WEIGHTS)["vocab"]) if WEIGHTS.is_file() else None
    inks, skipped = synthesise_many(map(normalize_latex, formulas), bank, 10, seed=0)
    assert len(inks) + sum(skipped.values()) == len(formulas) and len(inks) >= 3
    for ink in inks:
        assert normalize_latex(ink.latex) == ink.tokens  # the label is in the project's normal form
        assert vocab is None or set(ink.tokens) <= vocab
        assert ink.writer in train_writers
