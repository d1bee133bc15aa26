"""Tokenizer, normaliser and Vocab; round trips on every real formula when the shared data is present."""
import html
import random
import re
from collections import Counter

import pytest
import torch

from ocrlib import paths
from ocrlib.data.sources import read_formula_list
from ocrlib.errors import BadInput
from ocrlib.tokens import SPECIALS, Vocab, join, normalize, normalize_latex, tokenize


def norm(latex: str) -> str:
    return join(normalize_latex(latex))


# ---------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("latex, tokens", [
    (r"\frac{a}{12}", [r"\frac", "{", "a", "}", "{", "1", "2", "}"]),
    (r"\alpha\beta x", [r"\alpha", r"\beta", "x"]),
    (r"\left( x \right)", [r"\left(", "x", r"\right)"]),
    (r"\left \{ x \right .", [r"\left\{", "x", r"\right."]),
    (r"\left\langle x\right|", [r"\left\langle", "x", r"\right|"]),
    (r"\leftarrow\rightarrow", [r"\leftarrow", r"\rightarrow"]),
    (r"\begin {pmatrix} a & b \\ c \end{pmatrix}",
     [r"\begin{pmatrix}", "a", "&", "b", "\\\\", "c", r"\end{pmatrix}"]),
    (r"\begin{array}{ c | c } 1 \end{array}", [r"\begin{array}{c|c}", "1", r"\end{array}"]),
    (r"\{ \} \| \% \,", [r"\{", r"\}", r"\|", r"\%", r"\,"]),
    ("x'", ["x", "'"]),
    ("a \\", ["a", r"\backslash"]),
])
def test_tokenize(latex, tokens):
    assert tokenize(latex) == tokens


def test_join_is_read_back_by_tokenize():
    tokens = tokenize(r"\left( \frac{\alpha}{x_1}\right) \begin{array}{cc} a & \% \\ \end{array}")
    assert tokenize(join(tokens)) == tokens
    assert join(["a", "+", r"\beta"]) == r"a + \beta"


# ---------------------------------------------------------------- normaliser rules


@pytest.mark.parametrize("latex, expected", [
    # CROHME and alias spellings
    (r"a \lt b \gt c", "a < b > c"),
    (r"a \le b \ge c \ne d", r"a \leq b \geq c \neq d"),
    (r"1, \ldots, n \dots", r"1 , \cdots , n \cdots"),
    (r"x \to 0", r"x \rightarrow 0"),
    (r"\dfrac{a}{b}", r"\frac { a } { b }"),
    (r"\lbrace x \rbrace \vert y \Vert", r"\{ x \} | y \|"),
    (r"\not = \not \in", r"\neq \notin"),
    # dropped: limits, style, spacing, sizing
    (r"\sum\limits_{i=1}^n", r"\sum _ { i = 1 } ^ { n }"),
    (r"\displaystyle a \, b \quad c ~ d \hspace{2pt} e", "a b c d e"),
    (r"\Bigg( a \big)", "( a )"),
    # \left / \right pairs
    (r"\left (x\right )", r"\left( x \right)"),
    (r"\left\lbrace x \right.", r"\left\{ x \right."),
    (r"\left< x \right>", r"\left\langle x \right\rangle"),
    (r"\left \Big( x \right)", r"\left( x \right)"),
    # \over and scripts always braced
    (r"{a+1 \over b}", r"\frac { a + 1 } { b }"),
    (r"1 \over 2", r"\frac { 1 } { 2 }"),
    (r"x^2 + y_ij", r"x ^ { 2 } + y _ { i } j"),
    (r"\frac12 \sqrt2 \sqrt[3]8", r"\frac { 1 } { 2 } \sqrt { 2 } \sqrt [ 3 ] { 8 }"),
    (r"x^\frac12", r"x ^ { \frac { 1 } { 2 } }"),
    (r"x^{a}_{b}", r"x _ { b } ^ { a }"),
    # primes
    ("f'(x) + g''", r"f ^ { \prime } ( x ) + g ^ { \prime \prime }"),
    ("x'^2", r"x ^ { \prime 2 }"),
    (r"x\prime + x^\prime", r"x ^ { \prime } + x ^ { \prime }"),
    # redundant braces
    (r"{{x^{4}}}", r"x ^ { 4 }"),
    (r"{x}^2 + {a+b}^2", r"x ^ { 2 } + { a + b } ^ { 2 }"),
    (r"\frac { { p - { q } } } { 2 }", r"\frac { p - q } { 2 }"),
    (r"{ } ^ { 14 } C {}", r"{ } ^ { 1 4 } C"),
    (r"\unknowncmd {x}", r"\unknowncmd { x }"),
    # text, operator names
    (r"\mbox { erf } (x)", r"\mathrm { e r f } ( x )"),
    (r"\operatorname{sin} x + \operatorname{lcm}", r"\sin x + \operatorname { l c m }"),
    (r"\text { A' } \mathrm e", r"\text { A ' } \mathrm { e }"),
    # environments, escaped characters
    (r"\begin{array}{cc} a & b \\ c & d \end{array}", r"\begin{array}{cc} a & b \\ c & d \end{array}"),
    (r"\{x \mid |x| > 1\} \% \|v\|", r"\{ x \mid | x | > 1 \} \% \| v \|"),
    # truncated formulas stay as they are
    (r"\sqrt{x", r"\sqrt { x"),
    ("a}b", "a } b"),
    (r"\mid f\left(x_{1}\right)-", r"\mid f \left( x _ { 1 } \right) -"),
])
def test_normalize_rules(latex, expected):
    assert norm(latex) == expected
    assert normalize(tokenize(expected)) == tokenize(expected)


def test_normalize_is_stable_on_random_garbage():
    # truncated and malformed formulas exist in every corpus: the rules must still reach a fixed point
    pool = list("{}{}^_'xy12+=()[]|.<>& \\") + [
        r"\left", r"\right", r"\begin", r"\end", "{array}", "{matrix}", r"\text", r"\operatorname", "{sin}",
        r"\prime", r"\sqrt", r"\frac", r"\over", r"\hspace", r"\not", r"\{", r"\lbrace", r"\lt", r"\limits",
        r"\,", "\\\\", r"\mbox", r"\foo", r"\big", "\n"]
    rng = random.Random(0)
    for _ in range(3000):
        latex = "".join(rng.choice(pool) for _ in range(rng.randint(1, 14)))
        tokens = normalize_latex(latex)
        assert tokenize(join(tokens)) == tokens, latex
        assert normalize(tokens) == tokens, latex
        assert all(t and not any(c.isspace() for c in t) for t in tokens), latex


def test_normalize_does_not_modify_its_input():
    tokens = tokenize(r"x^2 \lt 1")
    copy = list(tokens)
    normalize(tokens)
    assert tokens == copy


# ---------------------------------------------------------------- real corpora


def _check_corpus(formulas: list[str]) -> Counter:
    counts: Counter = Counter()
    unstable = []
    for f in formulas:
        n = normalize_latex(f)
        if tokenize(join(n)) != n or normalize(n) != n:
            unstable.append(f)
        counts.update(n)
    assert not unstable, f"{len(unstable)} unstable, e.g. {unstable[:3]}"
    return counts


def test_exam_corpus_round_trip():
    path = paths.exam_formulas_file()
    if path is None:
        pytest.skip("exam formula corpus absent (../shared/data)")
    formulas = read_formula_list(path)
    assert len(formulas) > 90_000
    counts = _check_corpus(formulas)
    print(f"exam corpus: {len(formulas)} formulas, {len(counts)} distinct normalised tokens")
    assert 240 <= len(counts) <= 280
    assert {r"\lt", r"\ldots", r"\limits", r"\quad", "~"}.isdisjoint(counts)


_TRUTH = re.compile(r'<annotation\s+type="truth"\s*>(.*?)</annotation>', re.S)


def test_crohme_truths_round_trip():
    root = paths.crohme_inkml_dir()
    if root is None:
        pytest.skip("CROHME InkML absent (../shared/data)")
    # the expression truth is the first truth annotation (symbol labels follow inside traceGroups);
    # a regex is ten times faster than parsing the XML and read_inkml is tested in test_sources.py
    truths = []
    for path in sorted(root.rglob("*.inkml")):
        m = _TRUTH.search(path.read_text(encoding="utf-8", errors="replace"))
        if m:
            truths.append(html.unescape(m.group(1)).strip().strip("$"))
    assert len(truths) > 7_900
    counts = _check_corpus(truths)
    print(f"CROHME: {len(truths)} truths, {len(counts)} distinct normalised tokens")
    assert {r"\lt", r"\gt", r"\ldots", r"\limits", r"\mbox", r"\Bigg"}.isdisjoint(counts)


# ---------------------------------------------------------------- Vocab


@pytest.fixture
def vocab():
    return Vocab.build([["x", "+", "1"], ["x", "=", "y"], ["x"]])


def test_vocab_specials_first_and_frequency_order(vocab):
    assert vocab.tokens[:4] == list(SPECIALS)
    assert (vocab.pad_id, vocab.sos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.tokens[4] == "x"  # most frequent first
    assert len(vocab) == 4 + 5


def test_vocab_min_freq():
    v = Vocab.build([["a", "b"], ["a"]], min_freq=2)
    assert v.tokens == list(SPECIALS) + ["a"]


def test_vocab_save_load_round_trip(vocab, tmp_path):
    vocab.save(tmp_path / "tokens.txt")
    lines = (tmp_path / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:4] == list(SPECIALS)
    loaded = Vocab.load(tmp_path / "tokens.txt")
    assert loaded.tokens == vocab.tokens
    assert loaded.encode(["x", "=", "y"]) == vocab.encode(["x", "=", "y"])


@pytest.mark.parametrize("text, problem", [
    ("<pad>\n<sos>\n<eos>\n<unk>\nx\n\ny\n", "line 6: blank line"),
    ("<pad>\n<sos>\n<eos>\n<unk>\nx\ny\nx\n", "line 7: duplicate token 'x' (first on line 5)"),
    ("x\n<pad>\n<sos>\n<eos>\n<unk>\n", "specials"),
])
def test_vocab_load_rejects_bad_files(tmp_path, text, problem):
    path = tmp_path / "tokens.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadInput) as err:
        Vocab.load(path)
    assert str(err.value).startswith(str(path) + ": ")
    assert problem in str(err.value)


def test_encode_counts_unknown_tokens(vocab):
    ids = vocab.encode(["x", "\\zeta", "+", "\\zeta", "q"])
    assert ids == [vocab.index["x"], vocab.unk_id, vocab.index["+"], vocab.unk_id, vocab.unk_id]
    assert vocab.unknown_counts == Counter({"\\zeta": 2, "q": 1})


def test_encode_batch_shapes_padding_eos(vocab):
    batch = vocab.encode_batch([["x", "+", "1"], ["y"], []])
    assert batch.dtype == torch.long and batch.shape == (3, 4)  # (B, T): longest + eos
    assert batch[0].tolist() == vocab.encode(["x", "+", "1"]) + [vocab.eos_id]
    assert batch[1].tolist() == [vocab.index["y"], vocab.eos_id, vocab.pad_id, vocab.pad_id]
    assert batch[2].tolist() == [vocab.eos_id] + [vocab.pad_id] * 3


def test_encode_batch_max_len_keeps_eos(vocab):
    batch = vocab.encode_batch([["x", "+", "1", "=", "y"], ["x"]], max_len=3)
    assert batch.shape == (2, 3)
    assert batch[0].tolist() == vocab.encode(["x", "+"]) + [vocab.eos_id]
    assert batch[1].tolist() == [vocab.index["x"], vocab.eos_id, vocab.pad_id]


def test_decode_stops_at_eos_and_skips_pad_sos(vocab):
    ids = [vocab.sos_id] + vocab.encode(["x", "+"]) + [vocab.pad_id, vocab.eos_id] + vocab.encode(["y"])
    assert vocab.decode(ids) == ["x", "+"]
    assert vocab.decode(torch.tensor(ids)) == ["x", "+"]
    row = vocab.encode_batch([["x", "=", "y"]])[0]
    assert vocab.decode(row) == ["x", "=", "y"]
