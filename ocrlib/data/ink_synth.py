"""Symbol-level ink synthesis: new handwritten expressions assembled from real handwritten symbols.

CROHME's trace groups cut each expression into symbols (label + strokes). `SymbolBank` keeps them per
project token and per writer; `synthesise` lays a formula's tokens out by the spatial relations of the
label graphs (Right, Sup, Sub, Above/Below for fractions, Inside for roots) and draws each symbol with the
strokes of one writer (another writer of the same split where that writer never wrote the symbol). Build
banks from one split only, so no writer's ink crosses splits.

    bank = SymbolBank.from_expressions(train_expressions)
    ink = synthesise(tokens, bank, rng)   # Ink(strokes, tokens, writer, borrowed) or Unsupported

Layout units: the height of a digit is 0.7, y grows downwards and the baseline is y = 0; a box is its
strokes and its extent (width, ascent above and descent below the baseline). Formulas with a token no
symbol stands for, or structure the layout does not know (matrices, accents, fonts), raise `Unsupported`.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ocrlib.data.sources import InkExpression
from ocrlib.data.splits import writer_group
from ocrlib.tokens import SPELLINGS

AXIS = 0.3  # height of the maths axis (fraction bars, the middle of + and =)
GAP = 0.08  # space between neighbours
SCRIPT = 0.6  # size of a superscript or subscript against its base
FRACTION = 0.85  # size of a numerator or denominator against the fraction

# Symbol classes: (maximum width, height, descent), the box a symbol is scaled into (keeping its aspect).
TALL, SMALL, DESCENDER = (1.0, 0.7, 0.0), (0.9, 0.45, 0.0), (0.9, 0.45, 0.2)
DELIMITER, BIG_OPERATOR = (0.5, 0.95, 0.22), (1.0, 1.1, 0.3)
OPERATOR, RELATION, DOT = (0.55, 0.5, None), (0.6, 0.3, None), (0.12, 0.12, 0.0)
WORD = (2.2, 0.7, 0.0)  # \sin, \lim: one CROHME symbol of several letters
_CLASSES = {
    **dict.fromkeys("acemnorsuvwxz", SMALL), **dict.fromkeys("gpqy", DESCENDER),
    **dict.fromkeys("( ) [ ] | \\{ \\} \\|".split(), DELIMITER),
    **dict.fromkeys("\\sum \\int \\prod \\iint \\oint".split(), BIG_OPERATOR),
    **dict.fromkeys("+ \\times \\div \\pm \\mp / \\cup \\cap \\bullet".split(), OPERATOR),
    **dict.fromkeys("- = < > \\leq \\geq \\neq \\rightarrow \\leftarrow \\approx \\equiv \\sim \\in \\cdots "
                    "\\to \\Rightarrow \\subset \\subseteq \\infty".split(), RELATION),
    **dict.fromkeys(". , !".split(), DOT), "\\cdot": (0.12, 0.12, None),
    **dict.fromkeys("\\alpha \\epsilon \\varepsilon \\iota \\kappa \\nu \\omega \\pi \\sigma \\tau \\upsilon "
                    "\\mu \\gamma \\eta \\rho \\chi".split(), SMALL),
    **dict.fromkeys("\\sin \\cos \\tan \\cot \\sec \\csc \\log \\ln \\lim \\exp \\max \\min".split(), WORD),
}
_SPACED = {"+", "-", "=", "<", ">", "\\times", "\\div", "\\pm", "\\leq", "\\geq", "\\neq", "\\rightarrow", "\\in",
           "\\approx", "\\equiv", "\\to", "\\Rightarrow", "\\mp", "\\subset", "\\subseteq", "\\cup", "\\cap"}
# Tokens drawn with another token's symbol: sized delimiters, and glyphs handwriting does not tell apart
DRAWN_AS = {"\\left(": "(", "\\right)": ")", "\\left[": "[", "\\right]": "]", "\\left|": "|", "\\right|": "|",
            "\\left\\{": "\\{", "\\right\\}": "\\}", "\\leqslant": "\\leq", "\\geqslant": "\\geq", "\\cdot": ".",
            "O": "o"}


class Unsupported(ValueError):
    """A formula synthesis cannot draw: the reason names the token or structure."""


@dataclass
class Symbol:
    strokes: list[np.ndarray]  # (N, 2) x-right y-down, moved so the symbol's box starts at (0, 0)
    size: tuple[float, float]  # width, height of that box (original ink units)
    writer: str


@dataclass
class SymbolBank:
    symbols: dict[str, list[Symbol]] = field(default_factory=lambda: defaultdict(list))  # token -> symbols
    writers: dict[str, dict[str, list[Symbol]]] = field(default_factory=lambda: defaultdict(dict))
    skipped: int = 0  # trace groups left out (unlabelled, or labels that are no single project token)

    @classmethod
    def from_expressions(cls, expressions: list[InkExpression]) -> SymbolBank:
        """Every labelled trace group of `expressions`, under its project token (CROHME spellings mapped)."""
        bank = cls()
        for expression in expressions:
            writer = writer_group(expression)
            for label, indices in expression.trace_groups:
                token = SPELLINGS.get(label, label)
                if not token or " " in token or not indices:
                    bank.skipped += 1
                    continue
                points = np.concatenate([expression.strokes[i] for i in indices])
                low, high = points.min(axis=0), points.max(axis=0)
                symbol = Symbol([expression.strokes[i] - low for i in indices], tuple(np.maximum(high - low, 1e-6)),
                                writer)
                bank.symbols[token].append(symbol)
                bank.writers[writer].setdefault(token, []).append(symbol)
        return bank

    def __contains__(self, token: str) -> bool:
        return bool(self.symbols.get(token))

    def pick(self, token: str, writer: str, rng: np.random.Generator) -> Symbol:
        """One of `writer`'s samples of the symbol, else any writer's."""
        own = self.writers.get(writer, {}).get(token)
        pool = own or self.symbols[token]
        return pool[rng.integers(len(pool))]


# ---------------------------------------------------------------- parsing tokens into a layout tree
# Nodes: ("sym", token) | ("row", [nodes]) | ("frac", num, den) | ("sqrt", body) | ("script", base, sup, sub)


def parse(tokens: list[str]) -> tuple:
    """The layout tree of normalised project tokens; Unsupported for structure the layout does not know."""
    return ("row", _row(tokens, 0, closing=None)[0])


def _row(tokens: list[str], i: int, closing: str | None) -> tuple[list, int]:
    nodes = []
    while i < len(tokens):
        if tokens[i] == closing:
            return nodes, i + 1
        if tokens[i] == "}":
            raise Unsupported("unbalanced '}'")
        node, i = _atom(tokens, i)
        sup = sub = None
        while i < len(tokens) and tokens[i] in ("^", "_"):
            op = tokens[i]
            if (op == "^" and sup is not None) or (op == "_" and sub is not None):
                raise Unsupported(f"double {op}")
            script, i = _atom(tokens, i + 1)
            sup, sub = (script, sub) if op == "^" else (sup, script)
        nodes.append(("script", node, sup, sub) if sup or sub else node)
    if closing is not None:
        raise Unsupported(f"missing {closing!r}")
    return nodes, i


def _atom(tokens: list[str], i: int) -> tuple[tuple, int]:
    if i >= len(tokens):
        raise Unsupported("a script or argument is missing")
    token = tokens[i]
    if token == "{":
        nodes, i = _row(tokens, i + 1, closing="}")
        return ("row", nodes), i
    if token == "\\frac":
        num, i = _atom(tokens, i + 1)
        den, i = _atom(tokens, i)
        return ("frac", num, den), i
    if token == "\\sqrt":
        if i + 1 < len(tokens) and tokens[i + 1] == "[":
            raise Unsupported("\\sqrt with an index")
        body, i = _atom(tokens, i + 1)
        return ("sqrt", body), i
    if token in ("^", "_", "}"):
        raise Unsupported(f"{token!r} without a base")
    return ("sym", token), i + 1


def drawn_tokens(tree: tuple) -> list[str]:
    """The symbols a tree draws, in order (\\frac draws '-', \\sqrt draws '\\sqrt')."""
    kind = tree[0]
    if kind == "sym":
        return [DRAWN_AS.get(tree[1], tree[1])]
    if kind == "frac":
        return ["-", *drawn_tokens(tree[1]), *drawn_tokens(tree[2])]
    if kind == "sqrt":
        return ["\\sqrt", *drawn_tokens(tree[1])]
    parts = tree[1] if kind == "row" else [p for p in tree[1:] if p is not None]
    return [t for part in parts for t in drawn_tokens(part)]


# ---------------------------------------------------------------- layout


@dataclass
class Box:
    strokes: list[np.ndarray]  # placed, in layout units
    width: float
    ascent: float  # above the baseline (y = 0)
    descent: float  # below it
    kind: str = "sym"  # "sym" boxes of tokens in _SPACED get space around them

    def moved(self, dx: float, dy: float, scale: float = 1.0) -> list[np.ndarray]:
        return [s * scale + (dx, dy) for s in self.strokes]


def _symbol_box(token: str, symbol: Symbol) -> Box:
    max_width, height, descent = _CLASSES.get(token, TALL)
    w, h = symbol.size
    scale = min(height / h, max_width / w)
    sw, sh = w * scale, h * scale
    if descent is None:  # operators and relations sit on the axis
        top = -AXIS - sh / 2
    else:  # letters stand on the baseline (descenders hang below it by `descent`)
        top = descent - sh
    return Box([s * scale + (0.0, top) for s in symbol.strokes], sw, -top, top + sh,
               kind="spaced" if token in _SPACED else "sym")


def _stretched(symbol: Symbol, width: float, height: float, x: float, top: float) -> list[np.ndarray]:
    """The symbol scaled to fill width x height (a fraction bar, a root sign) at (x, top)."""
    w, h = symbol.size
    sx, sy = width / w, height / h
    return [s * (sx, sy) + (x, top) for s in symbol.strokes]


def layout(tree: tuple, bank: SymbolBank, writer: str, rng: np.random.Generator) -> Box:
    kind = tree[0]
    if kind == "sym":
        token = DRAWN_AS.get(tree[1], tree[1])
        if token not in bank:
            raise Unsupported(f"no handwritten symbol for {tree[1]!r}")
        return _symbol_box(tree[1], bank.pick(token, writer, rng))
    if kind == "row":
        return _row_box([layout(node, bank, writer, rng) for node in tree[1]])
    if kind == "script":
        base = layout(tree[1], bank, writer, rng)
        sup = layout(tree[2], bank, writer, rng) if tree[2] else None
        sub = layout(tree[3], bank, writer, rng) if tree[3] else None
        return _script_box(base, sup, sub)
    if kind == "frac":
        num, den = layout(tree[1], bank, writer, rng), layout(tree[2], bank, writer, rng)
        return _fraction_box(num, den, bank.pick("-", writer, rng))
    if kind == "sqrt":
        return _root_box(layout(tree[1], bank, writer, rng), bank.pick("\\sqrt", writer, rng))
    raise Unsupported(f"unknown node {kind}")


def _row_box(boxes: list[Box]) -> Box:
    strokes, x = [], 0.0
    for k, box in enumerate(boxes):
        space = 2 * GAP if box.kind == "spaced" else GAP
        x += space if k else 0.0
        strokes += box.moved(x, 0.0)
        x += box.width + (space - GAP if box.kind == "spaced" else 0.0)
    if not boxes:
        return Box([], 0.0, 0.0, 0.0, "row")
    return Box(strokes, x, max(b.ascent for b in boxes), max(b.descent for b in boxes), "row")


def _script_box(base: Box, sup: Box | None, sub: Box | None) -> Box:
    strokes, right = list(base.strokes), base.width
    ascent, descent = base.ascent, base.descent
    x = base.width + GAP / 2
    if sup:
        # the script's baseline rises to about half the base's height (at least above a small letter)
        rise = max(0.35, base.ascent - 0.5 * SCRIPT * sup.ascent)
        strokes += sup.moved(x, -rise, SCRIPT)
        right = max(right, x + SCRIPT * sup.width)
        ascent = max(ascent, rise + SCRIPT * sup.ascent)
    if sub:
        drop = max(0.25, base.descent + 0.1)
        strokes += sub.moved(x, drop, SCRIPT)
        right = max(right, x + SCRIPT * sub.width)
        descent = max(descent, drop + SCRIPT * sub.descent)
    return Box(strokes, right, ascent, descent, "script")


def _fraction_box(num: Box, den: Box, bar: Symbol) -> Box:
    width = FRACTION * max(num.width, den.width) + 2 * GAP
    clear = 0.12  # between the bar and either part
    strokes = _stretched(bar, width, 0.04, 0.0, -AXIS - 0.02)
    num_baseline = -AXIS - clear - FRACTION * num.descent
    den_baseline = -AXIS + clear + FRACTION * den.ascent
    strokes += num.moved((width - FRACTION * num.width) / 2, num_baseline, FRACTION)
    strokes += den.moved((width - FRACTION * den.width) / 2, den_baseline, FRACTION)
    return Box(strokes, width, -num_baseline + FRACTION * num.ascent, den_baseline + FRACTION * den.descent, "frac")


def _root_box(body: Box, sign: Symbol) -> Box:
    hook = 0.3  # the root sign's left part, before the body
    top, bottom = -body.ascent - 0.12, body.descent + 0.05
    strokes = _stretched(sign, body.width + hook + GAP, bottom - top, 0.0, top)
    strokes += body.moved(hook, 0.0)
    return Box(strokes, body.width + hook + GAP, -top, bottom, "sqrt")


# ---------------------------------------------------------------- one expression


@dataclass
class Ink:
    """A synthesised expression: strokes for `render_strokes`, its label, and whose ink it is."""
    strokes: list[np.ndarray]  # (N, 2) x-right y-down
    tokens: list[str]
    writer: str  # the writer whose symbols were preferred
    borrowed: int  # symbols drawn from another writer (the writer never wrote them)

    @property
    def latex(self) -> str:
        return " ".join(self.tokens)

    def __str__(self) -> str:  # what manifests and render requests record of the item
        return f"{self.latex} [{self.writer}]"


def synthesise(tokens: list[str], bank: SymbolBank, rng: np.random.Generator, writer: str | None = None) -> Ink:
    """Lay `tokens` out with symbols of one writer (drawn by `rng` unless given); Unsupported if it cannot."""
    tree = parse(tokens)
    drawn = drawn_tokens(tree)
    missing = sorted({t for t in drawn if t not in bank})
    if missing:
        raise Unsupported(f"no handwritten symbol for {missing[0]!r}")
    if writer is None:
        names = sorted(bank.writers)
        writer = names[rng.integers(len(names))]
    box = layout(tree, bank, writer, rng)
    if not box.strokes:
        raise Unsupported("nothing to draw")
    own = bank.writers.get(writer, {})
    borrowed = sum(1 for t in drawn if t not in own)
    return Ink([s.astype(np.float32) for s in box.strokes], list(tokens), writer, borrowed)



def synthesise_many(formulas: Iterable[list[str]], bank: SymbolBank, n: int, seed: int) -> tuple[list[Ink], Counter]:
    """Up to n expressions from `formulas` (token lists, in order; those that cannot be drawn are skipped and
    counted by reason). Formula k's writer and symbol samples follow (seed, k) alone."""
    inks, skipped = [], Counter()
    for k, tokens in enumerate(formulas):
        if len(inks) >= n:
            break
        try:
            inks.append(synthesise(tokens, bank, np.random.default_rng([seed, k])))
        except Unsupported as err:
            skipped[str(err)] += 1
    return inks, skipped
