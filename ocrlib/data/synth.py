"""Synthetic exam-style math formulas from a small probabilistic grammar.

The grammar mimics the printed high-school exam corpus (functions and
derivatives, sequences, sets, vectors, conics, solid geometry, trigonometry,
probability, a little calculus) and writes LaTeX in the same spelling as the
corpus (``\\frac{1}{2}``, ``\\left( \\right)``, braced scripts, ``\\leqslant``).
Its weights were tuned so that token frequencies and lengths (as tokenised by
``ocrlib.tokens.normalize_latex``) come close to the real corpus; see
``ocrlib.data.eda.compare_corpora``.

``mathtext_safe=True`` avoids the constructs that matplotlib's mathtext
(3.10) cannot typeset: matrix environments (``pmatrix``, ``bmatrix``,
``vmatrix``) are never drawn and arcs use ``\\widehat`` instead of
``\\overparen``. Everything else the grammar writes parses with mathtext and
compiles with LaTeX (amsmath, amssymb).
"""
from __future__ import annotations

import random
import re

# Weighted choices: {option: weight}. Letters and digits follow the corpus shares.
LOWER = {"x": 30, "a": 24, "n": 3, "y": 11, "b": 12, "m": 2.5, "c": 4.5, "k": 1, "t": 2.5, "p": 3, "q": 0.5,
         "z": 1.5, "e": 1, "r": 0.6, "s": 0.3, "h": 0.3, "d": 0.4, "u": 0.3, "v": 0.3, "l": 0.5, "i": 0.5}
UPPER = {"A": 18, "B": 15, "C": 12, "P": 7, "D": 6, "F": 5, "M": 4, "E": 3, "N": 3, "O": 3, "Q": 1.5,
         "S": 1, "T": 0.4, "G": 0.5, "H": 0.5, "K": 0.3, "R": 0.3, "V": 0.2, "X": 0.2, "Y": 0.1, "Z": 0.1,
         "U": 0.1, "L": 0.1, "W": 0.05, "I": 0.2, "J": 0.05}
COEF = {"2": 10, "3": 5, "4": 3, "5": 1.5, "6": 1, "8": 0.5, "9": 0.3, "7": 0.3, "12": 0.3}
SMALL_INT = {"1": 34, "2": 30, "3": 6, "4": 9, "0": 16, "5": 6, "6": 4, "8": 3, "7": 2, "9": 2}
LEADING_DIGIT = {k: v for k, v in SMALL_INT.items() if k != "0"}
GREEK = {r"\alpha": 24, r"\beta": 11, r"\theta": 10, r"\lambda": 9, r"\omega": 7, r"\varphi": 3,
         r"\mu": 8, r"\xi": 4, r"\sigma": 3.5, r"\rho": 2.5, r"\gamma": 1.2, r"\Delta": 0.8,
         r"\varepsilon": 0.2, r"\eta": 0.3, r"\delta": 0.1, r"\tau": 0.2, r"\Omega": 0.3, r"\chi": 0.3, r"\Lambda": 0.6}
TRIG = {r"\sin": 26, r"\cos": 18, r"\tan": 7}
LOGS = {r"\ln": 17, r"\lg": 4, r"\log": 10}
FUNCS = {"f": 62, "g": 9, "h": 0.7, "F": 2, "P": 3, "E": 1, "D": 1}
INEQ = {"<": 17, ">": 30, r"\leqslant": 16, r"\geqslant": 12, r"\neq": 5, r"\leq": 0.2, r"\geq": 0.2}
SETS = {"R": 12, "N": 6, "Z": 4, "Q": 1, "C": 0.5}
UNITS = {"cm": 5, "m": 1.5, "kg": 0.7, "s": 1, "km": 0.5, "g": 0.3, "mL": 0.2}
ANGLES = {"30": 3, "45": 3, "60": 4, "90": 4, "120": 2, "150": 1, "135": 1, "180": 0.5, "360": 0.3}
OPTION_LABELS = ["A.", "B.", "C.", "D."]
EVENTS = ["A", "B", "X=1", "X=0", "A B", "X=2", "X=k", r"\xi=2"]

# Top-level formula kinds; weights tuned against the corpus (see module docstring).
KINDS = {
    "atom": 43, "equation": 15, "list": 6.3, "geometry": 6, "condition": 4.6, "function": 4.5, "set": 3.1,
    "fragment": 3.1, "vector": 2.5, "option": 2.4, "conic": 1.6, "trig": 1.1, "sequence": 1.5, "chain": 1.2,
    "probability": 1, "calculus": 1, "logic": 1, "complex": 0.9, "statistics": 0.4, "operation": 0.3, "matrix": 0.1,
}
UNSAFE_KINDS = {"matrix"}
MATHTEXT_UNSUPPORTED = (r"\begin{", r"\overparen")  # what only the full (LaTeX) mode writes
ATOMS = {
    "frac": 22.8, "funcall": 17.6, "subscripted": 11.2, "interval": 8, "vector": 6.1, "segment": 5.9,
    "seq_braces": 4.3, "sqrt": 2.5, "unit": 3, "two_points": 2.3, "in_set": 1.7, "triangle": 1.7, "trig": 1.7,
    "greek": 1.5, "power": 1.1, "var": 0.8, "point": 0.8, "number": 0.7, "angle": 0.7, "percent": 0.7, "pi": 0.7,
    "log": 0.7, "coef_sqrt": 0.7, "two_subscripted": 0.7,
}

_NEEDS_SPACE_AFTER = re.compile(r"(\\[A-Za-z]+|[A-Za-z0-9.])$")
_STARTS_WORDLIKE = re.compile(r"^[A-Za-z0-9\\]")


def join(*parts: str) -> str:
    """Concatenate LaTeX pieces in the corpus spacing: a space only between word-like neighbours."""
    out = ""
    for part in parts:
        if not part:
            continue
        if out and _NEEDS_SPACE_AFTER.search(out) and _STARTS_WORDLIKE.match(part):
            out += " "
        out += part
    return out


class FormulaGenerator:
    """Draws exam-style LaTeX formulas; all randomness comes from one ``random.Random(seed)``."""

    def __init__(self, seed: int = 0, mathtext_safe: bool = False):
        self.rng = random.Random(seed)
        self.mathtext_safe = mathtext_safe
        kinds = {k: w for k, w in KINDS.items() if not (mathtext_safe and k in UNSAFE_KINDS)}
        self._kinds = (list(kinds), list(kinds.values()))
        self._atoms = self.atom_makers()
        self._atom_weights = (list(ATOMS), list(ATOMS.values()))

    # ---- random helpers -------------------------------------------------
    def pick(self, table: dict[str, float]) -> str:
        return self.rng.choices(list(table), weights=list(table.values()))[0]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def one(self, options: list) -> str:
        return self.rng.choice(options)

    # ---- atoms ----------------------------------------------------------
    def integer(self) -> str:
        r = self.rng.random()
        if r < 0.84:
            return self.pick(SMALL_INT)
        if r < 0.97:
            # digits follow the corpus: many 1s, 2s and 0s
            return self.pick(LEADING_DIGIT) + self.pick(SMALL_INT)
        return str(self.rng.randint(100, 2025))

    def number(self) -> str:
        r = self.rng.random()
        if r < 0.88:
            return self.integer()
        return f"{self.rng.randint(0, 9)}.{self.rng.randint(1, 99)}"

    def var(self) -> str:
        v = self.pick(LOWER)
        return r"\mathrm{e}" if v == "e" and self.chance(0.7) else v

    def point(self) -> str:
        return self.pick(UPPER)

    def points(self, k: int) -> str:
        names: list[str] = []
        while len(names) < k:
            name = self.point()
            if name not in names:
                names.append(name)
        return " ".join(names)

    def index(self) -> str:
        """A subscript body: n, 1, n+1, 2 n-1, i."""
        r = self.rng.random()
        if r < 0.38:
            return self.pick({"1": 8, "2": 6, "3": 2, "0": 1.5, "4": 0.5, "10": 0.3})
        if r < 0.72:
            return self.pick({"n": 2.5, "i": 1, "k": 0.7, "m": 0.6})
        n = self.pick({"n": 10, "k": 1})
        return self.one([f"{n}+1", f"{n}-1", f"2 {n}", f"2 {n}-1", f"{n}+2", f"2 {n}+1", f"3 {n}"])

    def subscripted(self) -> str:
        base = self.pick({"a": 30, "S": 10, "b": 8, "x": 8, "F": 5, "A": 4, "T": 1.5, "c": 2, "l": 3, "C": 3,
                          "y": 3, "B": 2, "P": 1, "e": 1, "d": 0.5, "k": 1, "z": 1, "O": 0.5, "M": 0.5})
        return f"{base}_{{{self.index()}}}"

    def greek(self) -> str:
        return self.pick(GREEK)

    def symbol(self) -> str:
        """A leaf that can stand in an expression."""
        r = self.rng.random()
        if r < 0.38:
            return self.var()
        if r < 0.6:
            return self.subscripted()
        if r < 0.68:
            return self.greek() if self.chance(0.7) else r"\pi"
        if r < 0.8:
            return self.point() if self.chance(0.3) else self.var()
        return self.funcall()

    def funcall(self, depth: int = 1) -> str:
        name = self.pick(FUNCS)
        if self.chance(0.09):
            name += r"^{\prime}"
        arg = self.pick({"x": 60, "other": 25, "expr": 15}) if depth > 0 else "x"
        if arg == "x":
            inner = "x"
        elif arg == "other":
            inner = self.one([self.integer(), "-x", self.subscripted(), "t", "a", "0", "1", r"\frac{1}{2}", "x+1"])
        else:
            inner = self.linear()
        return self.paren(f"{name}", inner)

    def paren(self, head: str, inner: str) -> str:
        big = any(s in inner for s in (r"\frac", r"_{", r"^{", r"\sqrt"))
        if big and self.chance(0.9):
            return join(head, rf"\left({inner}\right)")
        return join(head, f"({inner})")

    def frac(self, depth: int = 1) -> str:
        r = self.rng.random()
        if r < 0.45:
            num, den = self.integer(), self.integer()
            num = self.one(["1", "1", "1", "2", "3", num if num != "0" else "5"])
            den = self.one(["2", "2", "3", "4", "5", den])
        elif r < 0.5:
            num, den = r"\pi", self.one(["2", "3", "4", "6", "12"])
            num = self.one([r"\pi", r"\pi", rf"{self.pick({'2': 2, '3': 2, '5': 1})} \pi"])
        elif r < 0.6:
            num = self.one([rf"\sqrt{{{self.one(['2', '3', '5', '6'])}}}",
                            rf"{self.integer()} \sqrt{{{self.one(['2', '3', '5'])}}}"])
            den = self.one(["2", "3", "2", "4", "5", "6"])
        elif r < 0.78:
            num, den = self.one(["1", "1", self.integer()]), self.term(depth - 1)
        elif r < 0.88:
            num, den = self.power_term(), self.one([f"{self.var()}^{{2}}", self.integer(), self.subscripted()])
        else:
            num, den = self.expr(depth - 1, max_terms=3), self.expr(depth - 1, max_terms=2)
        if num == den:
            den = self.one(["2", "3", "4"]) if num != "2" else "3"
        out = rf"\frac{{{num}}}{{{den}}}"
        if r < 0.6 and self.chance(0.12):
            out = "-" + out
        return out

    def sqrt(self, depth: int = 1, coef: bool = True) -> str:
        if self.chance(0.55):
            body = self.one(["2", "3", "2", "3", "5", "6", "7", "10", "13", "17", str(self.rng.randint(2, 30))])
        else:
            body = self.expr(depth - 1, max_terms=3) if depth > 0 else self.power_term()
        if self.chance(0.06):
            return rf"\sqrt[{self.one(['3', '3', 'n', '4'])}]{{{body}}}"
        lead = self.one(["2", "3", "4"]) if coef and self.chance(0.25) else ""
        return join(lead, rf"\sqrt{{{body}}}")

    def power_term(self) -> str:
        base = self.pick({"x": 30, "y": 6, "a": 8, "b": 4, "e": 4, "2": 6, "3": 2, "q": 1, "t": 1,
                          "sub": 5, "paren": 6, "n": 2, "m": 1, "paren_frac": 2})
        if base == "e":
            base = r"\mathrm{e}" if self.chance(0.7) else "e"
        elif base == "sub":
            base = self.subscripted()
        elif base == "paren":
            base = self.paren("", self.linear())
        elif base == "paren_frac":
            base = rf"\left(\frac{{{self.one(['1', '1', '2', '3'])}}}{{{self.one(['2', '3', '4'])}}}\right)"
        exp = self.pick({"2": 55, "3": 10, "x": 8, "n": 3, "-1": 3, "n-1": 2, "4": 2, "k": 1, "*": 0.1,
                         "frac": 3, "2 x": 2, "n+1": 1.5})
        if exp == "frac":
            exp = rf"\frac{{1}}{{{self.one(['2', '3'])}}}"
        if base[0].isdigit() and exp.startswith("-"):
            exp = "x"
        return f"{base}^{{{exp}}}"

    def trig_call(self) -> str:
        fn = self.pick(TRIG)
        if self.chance(0.12):
            fn += "^{2}"
        r = self.rng.random()
        if r < 0.45:
            return join(fn, self.one(["x", r"\alpha", r"\alpha", r"\theta", r"\beta", "A", "B", "C", "2 x",
                                      r"2 \alpha", "x"]))
        if r < 0.7:
            inner = join(self.one(["2 x", "x", r"\omega x", r"2 \alpha", "x"]), self.one(["+", "-"]),
                         self.frac_pi())
            return join(fn, rf"\left({inner}\right)")
        if r < 0.85:
            return join(fn, self.frac_pi())
        return join(fn, f"{self.one(['30', '45', '60', '120'])}^{{\\circ}}")

    def frac_pi(self) -> str:
        return self.one([r"\frac{\pi}{6}", r"\frac{\pi}{3}", r"\frac{\pi}{4}", r"\frac{\pi}{2}", r"\frac{2 \pi}{3}"])

    def log_call(self) -> str:
        fn = self.pick(LOGS)
        if fn == r"\log":
            fn += "_{" + self.one(["2", "2", "3", "a", "1/2", "4"]).replace("1/2", r"\frac{1}{2}") + "}"
        return join(fn, self.one(["x", "x", "a", "2", "3", self.subscripted(), "(x+1)", "|x|"]))

    def factor(self, depth: int = 1) -> str:
        """One multiplicative factor."""
        r = self.rng.random()
        if r < 0.32:
            return self.symbol()
        if r < 0.43:
            return self.power_term()
        if r < 0.55 and depth > 0:
            return self.frac(depth)
        if r < 0.57:
            return self.sqrt(depth)
        if r < 0.64:
            return self.trig_call()
        if r < 0.68:
            return self.log_call()
        if r < 0.75 and depth > 0:
            inner = self.expr(depth - 1, max_terms=3)
            return self.paren("", inner) + ("^{2}" if self.chance(0.3) else "")
        if r < 0.77:
            return self.abs(self.linear())
        return self.number()

    def term(self, depth: int = 1) -> str:
        coef = self.pick(COEF) if self.chance(0.35) else ""
        parts = [self.factor(depth)]
        if self.chance(0.15):
            second = self.factor(depth - 1)
            if not second[0].isdigit():  # 'x^{2} 3' would read as a product with a trailing number
                parts.append(second)
        if coef and parts[0][0].isdigit():
            coef = ""
        out = join(coef, *parts)
        if self.chance(0.03):
            a, b = self.factor(0), self.factor(0)
            out = join(a, self.pick({r"\cdot": 5, r"\times": 1}), b)
        return out

    def linear(self) -> str:
        """Short linear expression: 2 x+1, x-a, a_{n}+1."""
        a = self.one(["x", "x", "2 x", "a", self.subscripted(), "3 x", "n", "k x"])
        return join(a, self.one(["+", "-"]), self.one(["1", "1", "2", "3", "a", "m", "b", "1"]))

    def expr(self, depth: int = 1, max_terms: int = 4) -> str:
        n = min(max_terms, self.rng.choices([1, 2, 3, 4], weights=[42, 35, 17, 6])[0])
        out = self.term(depth)
        if self.chance(0.1):
            out = "-" + out
        for _ in range(n - 1):
            op = self.pick({"+": 50, "-": 40, r"\pm": 0.5, r"\cdot": 3, r"\times": 0.5})
            out = join(out, op, self.term(depth))
        return out

    def abs(self, inner: str) -> str:
        if any(s in inner for s in (r"\frac", "_{", r"\overrightarrow")) and self.chance(0.8):
            return rf"\left|{inner}\right|"
        return f"|{inner}|"

    def interval(self) -> str:
        lo = self.one(["0", "0", "1", "-1", "-2", r"-\infty", r"-\infty", r"-\infty", "a", r"\frac{1}{2}", "-3", "2",
                       "m"])
        hi = self.one(["1", "2", r"+\infty", r"+\infty", r"+\infty", "3", "4", r"\frac{\pi}{2}", "e", r"\pi"])
        if lo == hi:
            hi = r"+\infty"
        left = "(" if lo == r"-\infty" or self.chance(0.3) else "["
        right = ")" if hi == r"+\infty" or self.chance(0.35) else "]"
        body = f"{lo}, {hi}"
        if self.chance(0.8 if any(s in body for s in (r"\frac", r"\pi")) else 0.15):
            return rf"\left{left}{body}\right{right}"
        return f"{left}{body}{right}"

    def point_coords(self, named: bool = True) -> str:
        name = self.point() if named and self.chance(0.85) else ""
        coords = ", ".join(self.one([self.number(), self.number(), "0", "-1", self.var(), self.subscripted(),
                                     r"\frac{1}{2}", "-2", "t", "m", f"{self.var()}_{{0}}"])
                           for _ in range(self.rng.choices([2, 3], weights=[6, 1])[0]))
        coords = coords.replace(", -", ",-") if self.chance(0.7) else coords
        if any(s in coords for s in (r"\frac", "_{")) and self.chance(0.85):
            return name + rf"\left({coords}\right)"
        return f"{name}({coords})"

    def set_name(self) -> str:
        font = r"\mathbf" if self.chance(0.97) else r"\mathbb"
        name = self.pick(SETS)
        return rf"{font}{{{name}}}" + ("^{*}" if self.chance(0.25) else "") + ("_{+}" if self.chance(0.03) else "")

    def seq_braces(self) -> str:
        body = self.one([self.subscripted(), r"a_{n}", r"a_{n}", r"b_{n}", rf"\frac{{1}}{{{self.subscripted()}}}",
                         r"a_{n}+1", r"\frac{a_{n}}{n}"])
        return rf"\left\{{{body}\right\}}"

    def angle(self) -> str:
        return f"{self.pick(ANGLES)}^{{\\circ}}"

    def vector(self) -> str:
        r = self.rng.random()
        if r < 0.72:
            return rf"\overrightarrow{{{self.points(2)}}}"
        if r < 0.97:
            name = self.one(["a", "b", "a", "b", "c", "e", "m", "n"])
            return rf"\boldsymbol{{{name}}}" + ("_{1}" if self.chance(0.1) else "")
        if r < 0.985:
            return rf"\vec{{{self.one(['a', 'b', 'e'])}}}"
        return rf"\overline{{{self.points(2)}}}"

    def condition(self) -> str:
        """A side condition: a>0, x \\in R, n \\in N*, 0<x<1, k \\neq 0."""
        r = self.rng.random()
        v = self.one([self.var(), self.var(), self.subscripted(), self.greek()])
        if r < 0.4:
            return join(v, self.pick(INEQ), self.one(["0", "0", "0", "1", "2", "-1", self.var(), r"\frac{1}{2}"]))
        if r < 0.62:
            return join(v, r"\in", self.one([self.set_name(), self.set_name(), self.interval()]))
        if r < 0.8:
            ops = self.pick({"<": 3, r"\leqslant": 1})
            lo, hi = self.one(["0", "0", "-1", "1", "a"]), self.one(["1", "2", r"\pi", r"\frac{\pi}{2}", "b"])
            return join(lo, ops, v, ops, hi)
        if r < 0.9:
            a, b, c = self.rng.sample(["a", "b", "c", "x", "y", "m", "n"], 3)
            op = self.pick({">": 3, "<": 3})
            return join(a, op, b, op, c) if self.chance(0.5) else join(a, op, b, op, "0")
        return f"{self.condition_simple()}, {self.condition_simple()}"

    def condition_simple(self) -> str:
        return join(self.var(), self.pick(INEQ), self.one(["0", "1", "0"]))

    def maybe_condition(self, p: float) -> str:
        if not self.chance(p):
            return ""
        c = self.condition()
        if self.chance(0.75):
            return self.paren("", c)
        return ", " + c

    # ---- formula kinds ----------------------------------------------------
    def atom_makers(self) -> dict:
        """The single objects of the 'atom' kind, by name (weights in ATOMS)."""
        return {
            "funcall": self.funcall, "seq_braces": self.seq_braces, "subscripted": self.subscripted,
            "frac": lambda: self.frac(0), "sqrt": lambda: self.sqrt(0), "interval": self.interval,
            "point": self.point_coords, "angle": self.angle, "greek": self.greek,
            "segment": lambda: self.points(self.rng.choice([2, 2, 3])), "var": self.var, "number": self.number,
            "two_points": lambda: f"{self.point()}, {self.point()}", "power": self.power_term,
            "triangle": lambda: rf"\triangle {self.points(3)}", "vector": self.vector, "pi": lambda: r"\pi",
            "two_subscripted": lambda: f"{self.subscripted()}, {self.subscripted()}", "trig": self.trig_call,
            "coef_sqrt": lambda: join(self.one("23456"), self.sqrt(0, coef=False)), "log": self.log_call,
            "percent": lambda: f"{self.rng.randint(5, 95)} \\%",
            "in_set": lambda: join(self.var(), r"\in", self.set_name()),
            "unit": lambda: f"{self.number()} \\mathrm{{~{self.pick(UNITS)}}}",
        }

    def k_atom(self) -> str:
        return self._atoms[self.rng.choices(*self._atom_weights)[0]]()

    def pick_call(self, table: dict) -> str:
        return self.rng.choices(list(table), weights=list(table.values()))[0]()

    def lhs(self) -> str:
        return self.pick_call({
            lambda: "y": 14, lambda: self.funcall(0): 22, lambda: self.var(): 12, lambda: self.subscripted(): 14,
            lambda: self.greek(): 2, lambda: self.points(2): 4, lambda: self.abs(self.points(2)): 2,
            lambda: self.power_term(): 4, lambda: self.trig_call(): 3, lambda: self.expr(0, max_terms=2): 8,
        })

    def k_equation(self) -> str:
        rel = self.pick({"=": 80, "<": 5, ">": 5, r"\leqslant": 3, r"\geqslant": 3, r"\neq": 1, r"\approx": 1.5})
        rhs = self.expr(self.rng.choice([1, 1, 2]), max_terms=self.rng.choice([1, 2, 3, 4]))
        if self.chance(0.18):
            rhs = self.one(["0", "1", "0", self.integer()])
        out = join(self.label(), self.lhs(), rel, rhs)
        if self.chance(0.08):
            out = join(self.expr(1, 3), rel, self.one(["0", "0", self.integer()]))
        return out + self.maybe_condition(0.1)

    def label(self) -> str:
        """A curve or statement name before an equation: 'C:', 'l_{1}:', 'p:'."""
        if not self.chance(0.1):
            return ""
        return self.one(["C:", "l:", "C_{1}:", "l_{1}:", "C_{2}:", "p:", "q:", "E:", "l_{2}:"])

    def k_condition(self) -> str:
        return self.condition()

    def k_sequence(self) -> str:
        a = self.one(["a", "a", "a", "b", "c"])
        return self.pick_call({
            lambda: rf"{a}_{{n+1}}=" + join(self.one(["2", "3", "", r"\frac{1}{2}", "q"]), rf"{a}_{{n}}",
                                             self.one(["+", "-"]), self.one(["1", "2", "n", "3"])): 3,
            lambda: rf"{a}_{{{self.one(['1', '2', '3', '5', 'n'])}}}={self.number()}": 3,
            lambda: r"S_{n}=" + self.expr(1, 3): 2,
            lambda: rf"S_{{n}}=\frac{{n({a}_{{1}}+{a}_{{n}})}}{{2}}": 0.4,
            lambda: rf"{a}_{{n}}={a}_{{1}}+(n-1) d": 0.5, lambda: rf"{a}_{{n}}={a}_{{1}} q^{{n-1}}": 0.5,
            lambda: rf"{a}_{{1}}+{a}_{{2}}+\cdots+{a}_{{n}}": 0.5,
            lambda: rf"{a}_{{1}}={self.integer()}, {a}_{{n+1}}=" + self.expr(1, 2): 1,
            lambda: rf"{a}_{{n}}=" + self.expr(1, 3): 3,
            lambda: rf"\left\{{{a}_{{n}}\right\}}" + ", " + r"\left\{b_{n}\right\}": 0.5,
        })

    def k_function(self) -> str:
        f = self.one(["f(x)", "f(x)", "g(x)", "h(x)", "y"])
        rhs = self.pick_call({
            lambda: self.expr(1, 3): 5, lambda: join(self.log_call(), self.one(["+", "-"]), self.term(1)): 2,
            lambda: join(self.power_term(), self.one(["+", "-"]), self.expr(0, 2)): 3,
            lambda: join(rf"\mathrm{{e}}^{{{self.one(['x', '2 x', '-x', 'x-1'])}}}", self.one(["+", "-"]),
                         self.term(0)): 1.2,
            lambda: self.frac(2): 2, lambda: join(self.integer(), self.trig_call()): 1,
            lambda: join(self.var(), self.log_call()): 0.6,
            lambda: join(self.pick({r"\max": 2, r"\min": 3}), rf"\left\{{{self.term(0)}, {self.term(0)}\right\}}"): 0.4,
        })
        if f != "y" and self.chance(0.04):
            f += self.one([r"_{\max }", r"_{\min }"])
        out = f"{f}={rhs}"
        if f.startswith(("f", "g")) and self.chance(0.15):
            out = f"{f[0]}^{{\\prime}}(x)={rhs}"
        return out + self.maybe_condition(0.2)

    def k_trig(self) -> str:
        return self.pick_call({
            lambda: join(self.trig_call(), "=", self.one([self.frac(0), self.frac(0), self.sqrt(0), "1", "0"])): 4,
            lambda: join("f(x)=", self.one(["2", "", r"\sqrt{3}", "A"]), self.trig_call(),
                         self.one(["+", "-"]), self.term(0)): 2,
            lambda: join(self.trig_call(), self.one(["+", "-"]), self.trig_call()): 1.5,
            lambda: join(self.one([r"\alpha", r"\theta", "x", "A"]), r"\in", self.interval()): 1,
            lambda: r"f(x)=\sin \left(\omega x+\varphi\right)\left(\omega>0,|\varphi|<\frac{\pi}{2}\right)": 0.4,
            lambda: join("T=", self.frac_pi()): 0.5,
        })

    def k_set(self) -> str:
        name = self.one(["A", "B", "A", "B", "M", "N", "P"])
        body = self.pick_call({
            lambda: join("x", r"\mid", self.condition()): 4,
            lambda: join("x", r"\mid", self.expr(1, 3), self.pick(INEQ), "0"): 3,
            lambda: ", ".join(sorted({self.one(["-2", "-1", "0", "1", "2", "3", "4", "a", "5"]) for _ in range(4)})): 3,
            lambda: join("(x, y)", r"\mid", "y=", self.expr(1, 2)): 1,
        })
        braced = rf"\left\{{{body}\right\}}" if self.chance(0.5) else rf"\{{{body}\}}"
        other = self.one(["A", "B", "M", "N"])
        return self.pick_call({
            lambda: f"{name}={braced}": 6,
            lambda: join(name, self.pick({r"\cap": 3, r"\cup": 4}), other, "=",
                         self.one([braced, r"\varnothing", "A", self.interval()])): 2,
            lambda: join(rf"\complement_{{{self.one(['U', 'R'])}}}", name): 0.6,
            lambda: join(name, self.pick({r"\subseteq": 2, r"\subset": 2, r"\cap": 1, r"\cup": 1}), other): 1,
            lambda: join(self.var(), self.one([r"\in", r"\notin"]), name): 0.5,
        })

    def k_geometry(self) -> str:
        return self.pick_call({
            lambda: "A B C D-A_{1} B_{1} C_{1} D_{1}": 2, lambda: "A B C-A_{1} B_{1} C_{1}": 1,
            lambda: f"P-{self.one(['A B C D', 'A B C'])}": 1.2,
            lambda: rf"\triangle {self.points(3)}": 1.5,
            lambda: join(rf"\angle {self.points(self.rng.choice([1, 3]))}", "=",
                         self.one([self.angle(), self.frac_pi()])): 3,
            lambda: join(self.points(2), r"\perp", self.points(self.rng.choice([2, 2, 3]))): 4,
            lambda: join(self.points(2), "/ /", self.points(2)): 2.5,
            lambda: join(self.points(2), "=",
                         self.one([self.integer(), self.sqrt(0), join(self.integer(), self.sqrt(0))])): 2.5,
            lambda: join(self.abs(self.points(2)), "=", self.one([self.integer(), self.sqrt(0), self.frac(0)])): 1.5,
            lambda: join(self.points(2), "=", self.points(2), "=", self.integer()): 0.8,
            lambda: join(r"\left|P F_{1}\right|", "+", r"\left|P F_{2}\right|", "=", self.integer(), "a"): 0.5,
            lambda: "F_{1}, F_{2}": 1.5, lambda: f"{self.point()} {self.point()}_{{1}}": 1,
            lambda: join("l:", "y=", self.linear()): 0.8,
            lambda: join(self.subscripted(), r"\perp", self.subscripted()): 0.5,
            lambda: "x O y": 0.3,
            lambda: join(self.arc(), "=", self.one([self.frac_pi(), self.angle()])): 0.3,
            lambda: join(r"\angle", self.points(3), "=", r"\angle", self.points(3)): 0.3,
        })

    def arc(self) -> str:
        """An arc AB: \\overparen (corpus spelling) unless mathtext must typeset it."""
        cmd = r"\widehat" if self.mathtext_safe or self.chance(0.2) else r"\overparen"
        return rf"{cmd}{{{self.points(2)}}}"

    def k_vector(self) -> str:
        a, b = self.vector(), self.vector()
        return self.pick_call({
            lambda: join(a, r"\cdot", b, "=", self.one(["0", self.integer(), self.frac(0)])): 3,
            lambda: join(a, "=", self.one(["", self.pick(COEF), r"\lambda", self.frac(0)]), b): 2,
            lambda: join(a, "=", self.point_coords(named=False)): 1.5,
            lambda: join(self.abs(a), "=", self.one([self.integer(), self.sqrt(0)])): 1.5,
            lambda: join(a, "+", b): 1, lambda: join(a, r"\perp", b): 1, lambda: join(a, "/ /", b): 0.6,
            lambda: join(a, "=", b, "+", r"\lambda", self.vector()): 0.6,
            lambda: join(rf"\langle {a}, {b}\rangle", "=", self.frac_pi()): 0.3,
        })

    def k_conic(self) -> str:
        return self.pick_call({
            lambda: join(self.one(["", "C:"]),
                         r"\frac{x^{2}}{a^{2}}" + self.one(["+", "-"]) + r"\frac{y^{2}}{b^{2}}=1(a>b>0)"): 3,
            lambda: join(rf"\frac{{x^{{2}}}}{{{self.integer()}}}", self.one(["+", "-"]),
                         rf"\frac{{y^{{2}}}}{{{self.integer()}}}=1"): 2,
            lambda: join("y^{2}=", self.one(["4 x", "2 p x(p>0)", "8 x", "-4 x", "2 x"])): 2,
            lambda: join("x^{2}=", self.one(["4 y", "2 p y(p>0)", "8 y"])): 0.5,
            lambda: join(f"(x-{self.integer()})^{{2}}+(y{self.one(['-', '+'])}{self.integer()})^{{2}}=",
                         self.integer()): 1,
            lambda: join("x^{2}+y^{2}=", self.one(["1", "4", "r^{2}", "2"])): 1,
            lambda: join("e=", self.one([r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt{2}}{2}", r"\frac{1}{2}", r"\sqrt{2}",
                                         "2"])): 1,
            lambda: join("y=", self.one([r"\pm", ""]), self.frac(0), "x"): 0.6,
        })

    def k_probability(self) -> str:
        return self.pick_call({
            lambda: join(self.paren("P", self.one(EVENTS)), "=", self.frac(0)): 3,
            lambda: join(self.paren("E", self.one(["X", r"\xi"])), "=", self.one([self.number(), self.frac(0)])): 1.5,
            lambda: join(self.paren("D", self.one(["X", r"\xi"])), "=", self.one([self.number(), self.frac(0)])): 0.8,
            lambda: join(f"X \\sim B\\left(n, {self.frac(0)}\\right)"): 0.5,
            lambda: rf"\mathrm{{C}}_{{{self.integer()}}}^{{{self.one(['1', '2', '3', 'k'])}}}": 1,
            lambda: join(rf"\mathrm{{C}}_{{{self.integer()}}}^{{{self.one(['1', '2', 'k'])}}}",
                         rf"\left({self.frac(0)}\right)^{{{self.one(['2', '3', 'k'])}}}"): 0.5,
            lambda: rf"\mathrm{{A}}_{{{self.integer()}}}^{{{self.one(['2', '3'])}}}": 0.4,
            lambda: join(self.one(["n!", "3!", "5!", "(n-1)!"]), "=", self.integer()): 0.2,
        })

    def k_calculus(self) -> str:
        lo, hi = self.one(["0", "1", "-1", "a"]), self.one(["1", "2", r"\pi", "e", r"\frac{\pi}{2}", "3"])
        d = self.one([r"\mathrm{d} x", "d x", r"\mathrm{~d} x"])
        return self.pick_call({
            lambda: join(rf"\int_{{{lo}}}^{{{hi}}}", self.term(1), d): 0.8,
            lambda: join(rf"\int_{{{lo}}}^{{{hi}}}", self.paren("", self.expr(0, 3)), d, "=", self.integer()): 0.4,
            lambda: join(self.limit(), self.one([self.frac(1), self.subscripted(), self.expr(0, 2)])): 0.4,
            lambda: join(rf"\sum_{{{self.one(['i', 'k'])}=1}}^{{{self.one(['n', '10', 'n'])}}}", self.one([
                r"x_{i}", r"a_{k}", r"\left(x_{i}-\bar{x}\right)^{2}", r"x_{i} y_{i}", "k", r"\frac{1}{k(k+1)}"])): 2.4,
            lambda: r"\prod_{k=1}^{n} a_{k}": 0.1,
            lambda: join(r"f^{\prime}(x)=", self.expr(1, 3)): 3,
            lambda: join(r"f^{\prime}(", self.integer(), ")=", self.integer()): 1,
            lambda: join(r"f^{\prime}(x)", self.pick(INEQ), "0"): 1,
        })

    def limit(self) -> str:
        var = self.one(["x", "n", r"\Delta x"])
        to = self.one(["0", r"\infty", "1"])
        return rf"\lim _{{{var} \rightarrow {to}}}"

    def k_chain(self) -> str:
        """Long derivations: a=b=c=..., the corpus' long tail."""
        n = self.rng.choices([2, 3, 4, 5, 6, 8], weights=[20, 30, 20, 12, 6, 3])[0]
        steps = [self.expr(self.rng.choice([1, 2]), max_terms=self.rng.choice([2, 3, 4])) for _ in range(n)]
        out = join(self.lhs(), "=", steps[0])
        for s in steps[1:]:
            out = join(out, self.pick({"=": 10, "<": 0.5, r"\leqslant": 0.5, r"\geqslant": 0.5, ">": 0.5}), s)
        return out + self.maybe_condition(0.15)

    def k_list(self) -> str:
        item = self.one([self.point_coords, self.k_condition, lambda: join(self.subscripted(), "=", self.integer()),
                         self.subscripted, self.var, lambda: self.k_equation()])
        k = self.rng.choices([2, 3, 4, 5], weights=[10, 5, 2, 1])[0]
        out = ", ".join(item() for _ in range(k))
        if self.chance(0.2):
            out += r", \cdots"
        return out

    def k_fragment(self) -> str:
        """Pieces cut out of running text: 'f(x)=', 'x^{2}+', '\\text { , }'."""
        return self.pick_call({
            lambda: join(self.lhs(), "="): 4,
            lambda: join(self.term(0), self.one(["+", "-"])): 2,
            lambda: join(self.k_condition(), rf"\text {{ {self.one([',', ')', ';', '.'])} }}"): 1,
            lambda: join("=", self.expr(1, 2)): 1.5,
            lambda: join(self.expr(0, 2), ")"): 0.6,
            lambda: join(self.points(2), "/ /"): 0.5,
            lambda: rf"\left\{{x \mid {self.condition()}\right.": 0.8,
            lambda: rf"\left.{self.condition()}\right)": 0.8,
            lambda: rf"\left.{self.funcall(0)}\right|_{{x={self.integer()}}}": 0.2,
        })

    def k_logic(self) -> str:
        """Propositions and quantifiers: p \\wedge q, \\neg p, \\forall x \\in R, p \\Rightarrow q."""
        p, q = self.rng.sample(["p", "q", "r", "p", "q"], 2) if self.chance(0.8) else ("p_{1}", "p_{2}")
        return self.pick_call({
            lambda: join(p, self.pick({r"\wedge": 3, r"\vee": 1.5}),
                         self.one([q, rf"\left(\neg {q}\right)", rf"(\neg {q})"])): 2,
            lambda: join(r"\neg", p): 1,
            lambda: join(self.pick({r"\forall": 2, r"\exists": 1.5}), self.one(["x", "x_{0}", "x"]), r"\in",
                         self.set_name(), ",", self.condition()): 2.5,
            lambda: join(p, self.pick({r"\Rightarrow": 3, r"\Leftrightarrow": 0.5}), q): 1.5,
            lambda: join(self.condition(), r"\Rightarrow", self.condition()): 1,
            lambda: join(self.pick({r"\because": 1, r"\therefore": 0.4}), self.k_equation()): 0.5,
        })

    def k_operation(self) -> str:
        """A made-up binary operation, as exam problems define them: a \\oplus b=a b+1."""
        op = self.pick({r"\oplus": 4, r"\odot": 4, r"\otimes": 3, "*": 6})
        return join("a", op, "b=", self.expr(0, 3)) if self.chance(0.6) else join(self.integer(), op, self.integer())

    def k_complex(self) -> str:
        z = self.one(["z", "z", r"\bar{z}", "z_{1}"])
        return self.pick_call({
            lambda: join(z, "=", self.integer(), self.one(["+", "-"]), self.one(["i", "2 i", "3 i"])): 3,
            lambda: join(self.abs(z), "=", self.one([self.integer(), self.sqrt(0)])): 1,
            lambda: join(z, "=", rf"\frac{{{self.integer()}+i}}{{1-i}}"): 1,
        })

    def k_statistics(self) -> str:
        return self.pick_call({
            lambda: r"\hat{y}=\hat{b} x+\hat{a}": 1,
            lambda: join(r"\bar{x}=", self.number()): 1,
            lambda: join("K^{2}=", r"\frac{n(a d-b c)^{2}}{(a+b)(c+d)(a+c)(b+d)}"): 0.5,
            lambda: join(r"\hat{b}=", self.number()): 0.5,
        })

    def k_option(self) -> str:
        label = rf"\text {{ {self.one(OPTION_LABELS)} }}"
        return join(label, self.one([self.frac(0), self.sqrt(0), self.integer(), self.interval()]))

    def k_matrix(self) -> str:
        env = self.one(["pmatrix", "pmatrix", "bmatrix", "vmatrix"])
        rows = [" & ".join(self.one([self.integer(), self.var(), f"-{self.pick(LEADING_DIGIT)}"]) for _ in range(2))
                for _ in range(2)]
        m = rf"\begin{{{env}}} {rows[0]} \\ {rows[1]} \end{{{env}}}"
        return join(self.one(["A=", "", "M="]), m)

    def formula(self) -> str:
        kind = self.rng.choices(*self._kinds)[0]
        return getattr(self, f"k_{kind}")()


def generate_formulas(n: int, seed: int, mathtext_safe: bool = False) -> list[str]:
    """``n`` exam-style LaTeX formulas, deterministic for a given ``seed``.

    ``mathtext_safe``: leave out what matplotlib mathtext cannot typeset (see the module docstring).
    """
    gen = FormulaGenerator(seed, mathtext_safe=mathtext_safe)
    return [gen.formula() for _ in range(n)]
