"""LaTeX tokens: tokenizer, normaliser and vocabulary.

Token conventions follow the competition's `gt.txt` (space-separated tokens):
commands (`\\frac`), `\\left(`-style delimiter pairs, `\\begin{matrix}`-style
environment markers (with the column spec for `array`), escaped characters
(`\\{`, `\\|`, `\\%`), `&`, `\\\\`, and one token per other character.

`normalize` maps the spellings of the exam corpus and of CROHME onto one form,
so that `tokenize(join(normalize(t))) == normalize(t)` and normalising twice
changes nothing (tests check both on every real formula).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ocrlib.errors import BadInput

if TYPE_CHECKING:
    import torch

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS = (PAD, SOS, EOS, UNK)

# ---------------------------------------------------------------- tokenizer

_DELIM_NAMES = ("langle rangle lfloor rfloor lceil rceil lbrace rbrace lbrack rbrack vert Vert lvert rvert "
                "lVert rVert uparrow downarrow Uparrow Downarrow updownarrow backslash lt gt")
_DELIM = r"(?:[()\[\]|./<>]|\\[{}|]|\\(?:" + "|".join(_DELIM_NAMES.split()) + r")(?![a-zA-Z]))"
_TOKEN_RE = re.compile(
    r"\\(?P<lr>left|right|middle)\s*(?P<delim>" + _DELIM + r")"
    r"|\\(?P<be>begin|end)\s*\{\s*(?P<env>[a-zA-Z]+\*?)\s*\}(?P<spec>(?<=\{array\})\s*\{[^{}]*\})?"
    r"|(?P<cmd>\\[a-zA-Z]+)"
    r"|(?P<esc>\\[^a-zA-Z\s])"
    r"|(?P<ctrlspace>\\\s)"
    r"|(?P<ws>\s+)"
    r"|(?P<char>[^\\])"
    r"|(?P<lone>\\)",
)
_AS_IS = frozenset({"cmd", "esc", "char"})


def tokenize(latex: str) -> list[str]:
    """Split LaTeX into tokens; whitespace is dropped (it only separates tokens)."""
    tokens = []
    for m in _TOKEN_RE.finditer(latex):
        kind = m.lastgroup  # the last group that matched: delim for \left(, env or spec for \begin
        if kind in _AS_IS:
            tokens.append(m.group())
        elif kind == "delim":
            tokens.append("\\" + m.group("lr") + m.group("delim"))
        elif kind in ("env", "spec"):
            spec = re.sub(r"\s+", "", m.group("spec") or "")
            tokens.append(f"\\{m.group('be')}{{{m.group('env')}}}{spec}")
        elif kind == "ctrlspace":
            tokens.append("\\ ")  # backslash + newline or tab is TeX's control space too
        elif kind == "lone":
            # a trailing backslash: spelled out so that joining cannot glue it to the next token
            tokens.append("\\backslash")
    return tokens


def join(tokens: Iterable[str]) -> str:
    """Space-separated LaTeX (the `gt.txt` label format); `tokenize` reads it back."""
    return " ".join(tokens)


# ---------------------------------------------------------------- normaliser tables

# Same meaning, one spelling (the first column is CROHME's or an alias).
SPELLINGS = {
    "\\lt": "<", "\\gt": ">", "\\le": "\\leq", "\\ge": "\\geq", "\\ne": "\\neq",
    "\\ldots": "\\cdots", "\\dots": "\\cdots", "\\dotsc": "\\cdots", "\\dotsb": "\\cdots", "\\hdots": "\\cdots",
    "\\to": "\\rightarrow", "\\gets": "\\leftarrow", "\\lbrace": "\\{", "\\rbrace": "\\}",
    "\\lbrack": "[", "\\rbrack": "]", "\\vert": "|", "\\lvert": "|", "\\rvert": "|",
    "\\Vert": "\\|", "\\lVert": "\\|", "\\rVert": "\\|", "\\land": "\\wedge", "\\lor": "\\vee",
    "\\lnot": "\\neg", "\\dfrac": "\\frac", "\\tfrac": "\\frac", "\\dbinom": "\\binom", "\\tbinom": "\\binom",
    "\\mbox": "\\mathrm", "\\bm": "\\boldsymbol", "\\emph": "\\text", "\\textrm": "\\text",
}
# Inside \left / \right / \middle the LaTeX angle brackets may be spelled < and >.
_DELIM_SPELLINGS = {**SPELLINGS, "<": "\\langle", ">": "\\rangle", "\\lt": "\\langle", "\\gt": "\\rangle"}
# Tokens that change spacing, size or style only.
DROPPED = frozenset(
    "\\limits \\nolimits \\displaystyle \\textstyle \\scriptstyle \\scriptscriptstyle "
    "\\, \\; \\: \\! \\> \\quad \\qquad \\enspace \\thinspace \\medspace \\thickspace ~ "
    "\\big \\Big \\bigg \\Bigg \\bigl \\Bigl \\biggl \\Biggl \\bigr \\Bigr \\biggr \\Biggr \\bigm \\Bigm".split()
) | {"\\ "}
_NOT = {"=": "\\neq", "\\in": "\\notin"}  # `\not` + other tokens stays two tokens
_LR = ("\\left", "\\right", "\\middle")

# Commands and how many brace arguments they take.
ARITY = {
    **dict.fromkeys(
        "\\sqrt \\overrightarrow \\overleftarrow \\overline \\underline \\bar \\hat \\widehat \\tilde \\widetilde "
        "\\vec \\dot \\ddot \\check \\breve \\acute \\grave \\mathring \\overparen \\underparen \\overbrace "
        "\\underbrace \\boxed \\mathrm \\mathbf \\mathit \\mathsf \\mathtt \\mathcal \\mathbb \\mathfrak \\mathscr "
        "\\boldsymbol \\pmb \\operatorname \\text \\textbf \\textit \\hspace \\vspace".split(), 1),
    **dict.fromkeys("\\frac \\binom \\cfrac \\stackrel \\overset \\underset".split(), 2),
}
TEXT_COMMANDS = frozenset("\\text \\textbf \\textit".split())  # arguments in text mode: left as written
_SPACE_COMMANDS = frozenset({"\\hspace", "\\vspace"})  # dropped together with their argument
# \operatorname{sin} -> \sin for the operators LaTeX already names.
OPERATOR_NAMES = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh coth exp log ln lg lim max min sup inf "
    "arg det dim gcd deg hom ker Pr".split()
)
# Zero-argument commands seen in the corpora (a brace group after any other command may be its argument).
SYMBOLS = frozenset(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi pi varpi rho "
    "varrho sigma varsigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi "
    "Psi Omega infty cdot cdots vdots ddots times div pm mp leq geq leqslant geqslant neq approx equiv sim simeq "
    "cong doteq propto in notin ni subset subseteq supset supseteq subsetneq supsetneq subsetneqq supsetneqq "
    "varsubsetneqq nsubseteq nsupseteq cup cap bigcup bigcap setminus emptyset varnothing complement forall "
    "exists neg wedge vee bigvee bigwedge oplus otimes odot bigoplus bigodot bigotimes circ bullet star ast "
    "perp parallel angle triangle square bigcirc prime partial nabla sum prod coprod int iint oint "
    "rightarrow leftarrow Rightarrow Leftarrow leftrightarrow Leftrightarrow longrightarrow Longrightarrow "
    "uparrow downarrow mapsto because therefore mid nmid ll gg langle rangle lfloor rfloor lceil rceil "
    "backslash top bot ell hbar imath jmath dagger Perp nvdash vdash lrcorner llbracket rrbracket curlywedge "
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh exp log ln lg max min sup inf arg det dim gcd "
    "deg ker Pr lim not".split()
)

# ---------------------------------------------------------------- normaliser


def normalize(tokens: list[str]) -> list[str]:
    """One spelling per meaning. Returns a new list; rules, applied until nothing changes:

    - spellings (SPELLINGS: `\\lt`->`<`, `\\le`->`\\leq`, `\\ldots`->`\\cdots`, `\\mbox`->`\\mathrm`, ...),
      `\\not =`->`\\neq`, `\\left \\lbrace`->`\\left\\{`, `\\left<`->`\\left\\langle`;
    - DROPPED tokens (`\\limits`, `\\displaystyle`, spacing, `\\big`-sizing) and `\\hspace{..}`;
    - `a \\over b` -> `\\frac { a } { b }` (`\\choose` -> `\\binom`);
    - arguments and scripts always braced (`x^2` -> `x ^ { 2 }`, `\\frac12` -> `\\frac { 1 } { 2 }`);
    - primes: `x'`, `x \\prime` -> `x ^ { \\prime }`, `x'^2` -> `x ^ { \\prime 2 }`; sub before sup;
    - `\\operatorname { s i n }` -> `\\sin` for operators LaTeX names;
    - free brace groups removed unless they are a script base (`{ a + b } ^ { 2 }`, `{ } ^ { 1 4 }`)
      or may be an unknown command's argument; text-mode arguments (`\\text`) are kept as written;
    - truncated input (unclosed `{`, stray `}`, `x ^` at the end) is kept as it is.
    """
    for _ in range(8):  # rules applied until nothing changes (usually one or two passes)
        out = tokenize(join(_flatten(_norm_level(_parse(_map_tokens(tokens))))))
        if out == tokens:
            return out
        tokens = out
    return out


def normalize_latex(latex: str) -> list[str]:
    return normalize(tokenize(latex))


def _map_tokens(tokens: list[str]) -> list[str]:
    """Token-level rules: spellings, dropped tokens, `\\not` pairs, bare `\\left` + delimiter."""
    out: list[str] = []
    for tok in tokens:
        if tok in DROPPED:
            continue
        if tok.startswith(_LR) and not tok[1:].isalpha():
            lr = next(p for p in _LR if tok.startswith(p))
            tok = lr + _DELIM_SPELLINGS.get(tok[len(lr):], tok[len(lr):])
        tok = SPELLINGS.get(tok, tok)
        if out and out[-1] == "\\not" and tok in _NOT:
            out[-1] = _NOT[tok]
        elif out and out[-1] in _LR and _is_delim(tok):
            out[-1] += _DELIM_SPELLINGS.get(tok, tok)
        else:
            out.append(tok)
    return out


def _is_delim(tok: str) -> bool:
    return re.fullmatch(_DELIM, tok) is not None


@dataclass
class _Group:
    items: list = field(default_factory=list)  # str | _Group | _Cmd | _Script
    closed: bool = True  # False: a `{` never closed (truncated formula)


@dataclass
class _Cmd:
    name: str
    args: list  # list[_Group]
    opt: list | None = None  # \sqrt[n]: the items between [ and ]

    @property
    def complete(self) -> bool:
        return len(self.args) == ARITY[self.name]


@dataclass
class _Script:
    op: str  # ^ or _
    arg: _Group | None  # None: nothing to attach (truncated formula)


def _parse(tokens: list[str]) -> list:
    """Nest brace groups; a stray `}` stays a plain token, an unclosed `{` an open group."""
    stack = [_Group()]
    for tok in tokens:
        if tok == "{":
            stack.append(_Group())
        elif tok == "}" and len(stack) > 1:
            group = stack.pop()
            stack[-1].items.append(group)
        else:
            stack[-1].items.append(tok)
    while len(stack) > 1:
        group = stack.pop()
        group.closed = False
        stack[-1].items.append(group)
    return stack[0].items


def _flatten(items: list) -> list[str]:
    out: list[str] = []
    for it in items:
        if isinstance(it, str):
            out.append(it)
        elif isinstance(it, _Group):
            out += ["{", *_flatten(it.items)] + (["}"] if it.closed else [])
        elif isinstance(it, _Cmd):
            out.append(it.name)
            if it.opt is not None:
                out += ["[", *_flatten(it.opt), "]"]
            out += _flatten(it.args)
        else:
            out += [it.op, *(_flatten([it.arg]) if it.arg else [])]
    return out


_NOT_ARG = frozenset({"}", "&", "\\\\", "^", "_", "'"})


def _can_be_arg(item) -> bool:
    return not isinstance(item, str) or not (item in _NOT_ARG or item.startswith("\\end{"))


def _split_over(items: list) -> list:
    """`a \\over b` -> `\\frac {a} {b}` (TeX's infix fraction takes its whole group)."""
    for k, it in enumerate(items):
        if type(it) is str and it in ("\\over", "\\choose"):
            name = "\\frac" if it == "\\over" else "\\binom"
            return [name, _Group(items[:k]), _Group(items[k + 1:])]
    return items


def _take_atom(items: list, i: int, script: bool = False):
    """The piece starting at items[i] (a command takes its arguments); returns (piece or None, next index).

    script: the piece is a script argument (there a bare `\\prime` is the prime itself).
    """
    it = items[i]
    if isinstance(it, _Group):
        return _Group(_norm_level(it.items, script), it.closed), i + 1
    if not isinstance(it, str) or it not in ARITY:
        return it, i + 1
    j, opt = i + 1, None
    if it == "\\sqrt" and j < len(items) and items[j] == "[" and "]" in items[j:]:
        end = items.index("]", j)
        opt, j = _norm_level(items[j + 1:end]), end + 1
    args = []
    while len(args) < ARITY[it]:
        if it in TEXT_COMMANDS and j < len(items) and isinstance(items[j], _Group):
            arg, j = items[j], j + 1  # text mode: no math rules inside
        else:
            arg, j = _take_arg(items, j)
        if arg is None:
            break
        args.append(arg)
    if it in _SPACE_COMMANDS and args:
        return None, j
    cmd = _Cmd(it, args, opt)
    if it == "\\operatorname" and cmd.complete and all(isinstance(t, str) for t in args[0].items):
        name = "".join(args[0].items)
        if name in OPERATOR_NAMES:
            return "\\" + name, j
    return cmd, j


def _take_arg(items: list, i: int, script: bool = False):
    """The argument starting at items[i], braced; (None, i) when there is none."""
    while i < len(items) and _can_be_arg(items[i]):
        arg, i = _take_atom(items, i, script)
        if arg is not None:  # None: a dropped \\hspace{..}; the argument follows it
            return (arg if isinstance(arg, _Group) else _Group([arg])), i
    return None, i


def _norm_level(items: list, script: bool = False) -> list:
    """Rules for one brace level: \\over, arguments and scripts braced, primes, sub before sup, braces.

    script: the level is a script argument, where `\\prime` stays as written.
    """
    items = _split_over(items)
    out: list = []
    i = 0
    while i < len(items):
        if items[i] == "'" or (items[i] == "\\prime" and out and not script):
            # x' and CROHME's x \prime are x^{\prime}
            n = 1
            while i + n < len(items) and items[i + n] in ("'", "\\prime"):
                n += 1
            piece, i = _Script("^", _Group(["\\prime"] * n)), i + n
        elif items[i] in ("^", "_"):
            op = items[i]
            arg, i = _take_arg(items, i + 1, script=True)
            piece = _Script(op, arg)
        else:
            piece, i = _take_atom(items, i)
            if piece is None:
                continue
        if isinstance(piece, _Script) and out and isinstance(out[-1], _Script) and piece.arg and out[-1].arg:
            last = out[-1]
            if last.op == "^" and piece.op == "^" and _is_primes(last.arg):
                # x'^{2} is x^{\prime 2}
                out[-1] = _Script("^", _Group(last.arg.items + piece.arg.items))
                continue
            if last.op == "^" and piece.op == "_" and not (len(out) > 1 and _is_script(out[-2], "_")):
                out.insert(len(out) - 1, piece)  # x^{a}_{b} -> x_{b}^{a}
                continue
        out.append(piece)
    return _drop_braces(out)


def _is_primes(group: _Group) -> bool:
    return bool(group.items) and all(t == "\\prime" for t in group.items)


def _is_script(piece, op: str) -> bool:
    return isinstance(piece, _Script) and piece.op == op


def _complete(piece) -> bool:
    if isinstance(piece, _Cmd):
        return piece.complete
    if isinstance(piece, _Script):
        return piece.arg is not None
    return not (isinstance(piece, str) and (piece in ARITY or piece in _LR or piece == "\\not"))


def _drop_braces(pieces: list) -> list:
    """Remove free brace groups that change nothing; keep a group that is a script base or may be an argument."""
    out: list = []
    for k, piece in enumerate(pieces):
        if not isinstance(piece, _Group) or not piece.closed:
            out.append(piece)
            continue
        prev = out[-1] if out else None
        if isinstance(prev, str) and re.fullmatch(r"\\[a-zA-Z]+", prev) and prev[1:] not in SYMBOLS:
            out.append(piece)  # after an unknown command the group may be its argument
            continue
        before_script = k + 1 < len(pieces) and isinstance(pieces[k + 1], _Script)
        content = piece.items
        if not content:
            if before_script:
                out.append(piece)  # `{ } ^ { 14 }`: empty base
            continue
        if isinstance(content[0], _Script) or not _complete(content[-1]) or not _complete(prev):
            out.append(piece)
        elif len(content) == 1 or not before_script:
            out += content
        else:
            out.append(piece)
    return out


# ---------------------------------------------------------------- vocabulary


class Vocab:
    """Token <-> id. Specials first: <pad>=0, <sos>=1, <eos>=2, <unk>=3."""

    def __init__(self, tokens: Iterable[str]):
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            tokens = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
        self.tokens: list[str] = tokens
        self.index = {t: i for i, t in enumerate(tokens)}
        if len(self.index) != len(tokens):
            dup = next(t for t, n in Counter(tokens).items() if n > 1)
            raise ValueError(f"duplicate token {dup!r}")
        self.pad_id, self.sos_id, self.eos_id, self.unk_id = (self.index[t] for t in SPECIALS)
        self.unknown_counts: Counter = Counter()

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    @classmethod
    def build(cls, sequences: Iterable[list[str]], min_freq: int = 1) -> "Vocab":
        """Tokens seen at least min_freq times, most frequent first (ties alphabetical, so builds are stable)."""
        counts = Counter(t for seq in sequences for t in seq)
        kept = sorted((t for t, n in counts.items() if n >= min_freq and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))
        return cls(list(SPECIALS) + kept)

    def save(self, path: str | Path) -> None:
        Path(path).write_text("".join(t + "\n" for t in self.tokens), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        """Read tokens.txt; duplicates, blank lines or missing specials raise BadInput naming the line."""
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        seen: dict[str, int] = {}
        for n, line in enumerate(lines, 1):
            tok = line.lstrip("\ufeff") if n == 1 else line
            if not tok.strip():
                raise BadInput(path, f"line {n}: blank line")
            if tok in seen:
                raise BadInput(path, f"line {n}: duplicate token {tok!r} (first on line {seen[tok]})")
            seen[tok] = n
        tokens = list(seen)
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise BadInput(path, f"the first lines must be the specials {' '.join(SPECIALS)}")
        return cls(tokens)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids; a token not in the vocabulary becomes unk and is counted in `unknown_counts`."""
        ids = []
        for t in tokens:
            i = self.index.get(t)
            if i is None:
                self.unknown_counts[t] += 1
                i = self.unk_id
            ids.append(i)
        return ids

    def encode_batch(self, sequences: list[list[str]], max_len: int | None = None) -> torch.Tensor:
        """LongTensor (B, T): each row ids + eos, padded with pad; rows longer than max_len are cut (eos kept last)."""
        import torch  # here, not at the top: tokenizing and rendering need no torch (a 2-5 s import)

        rows = [self.encode(seq) + [self.eos_id] for seq in sequences]
        if max_len is not None:
            rows = [r if len(r) <= max_len else r[: max_len - 1] + [self.eos_id] for r in rows]
        width = max((len(r) for r in rows), default=0)
        batch = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # (B, T)
        for b, r in enumerate(rows):
            batch[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        return batch

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens up to the first eos; pad and sos skipped."""
        out = []
        for i in (int(x) for x in ids):
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.sos_id):
                out.append(self.tokens[i])
        return out
