"""Real TeX renderer: many formulas per `latex` run, one `dvipng` call per run.

Every formula is a page of its own (the `preview` package crops each page to its content), so a
chunk of formulas costs one `latex` start per document font, and one `dvipng` start per font and block of
formulas that share a resolution. A formula that
does not compile is found from the log (TeX ships a page as soon as its formula is typeset, so the
pages written before a -halt-on-error stop are sound and the next one is the culprit) or, when the
log cannot say (a timeout, a crash), by bisection; it is recorded with TeX's message and the rest
are compiled again together. Approach after pix2tex's `dataset/latex2png.py`, without its chdir and
its silent failures.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ocrlib.data.render_mathtext import Rendered, crop_to_ink, item_rng

INSTALL_HINT = ("install it with `make setup` or "
                "`apt-get install texlive-latex-base dvipng preview-latex-style texlive-fonts-recommended`")

# document fonts: name -> preamble line (all from texlive-fonts-recommended's psnfss / tx / px fonts)
FONTS = {
    "cm": "",  # Computer Modern, LaTeX's default
    "times": r"\usepackage{mathptmx}",
    "palatino": r"\usepackage{mathpazo}",
    "txfonts": r"\usepackage{txfonts}",  # Times text with its own math symbols
    "pxfonts": r"\usepackage{pxfonts}",  # Palatino text with its own math symbols
}
SIZES = (r"\normalsize", r"\large", r"\Large")  # drawn per formula
DPIS = (110, 150, 200)  # dvipng takes one resolution per call: drawn per (block of indices, font)
# formulas index // RUN_BLOCK share a resolution. A latex start costs ~0.12 s of CPU (loading its format), a page
# ~0.15 ms: render_batch starts latex once per font for all its blocks, and dvipng once per block and font.
RUN_BLOCK = 1000
# dvipng draws the first page of a page range (-p) in the first page's box: each block's pages follow one of these
_SACRIFICE = r"\begin{preview}.\end{preview}"

# things that would break the one-page-per-formula document, touch files, or loop (macro definitions)
_REFUSED = re.compile(r"\\(documentclass|begin\s*\{document\}|end\s*\{(document|preview)\}|input|include"
                      r"|write|openin|openout|read|special|immediate|csname|catcode"
                      r"|[gex]?def|let|futurelet|(re|provide|new)command|loop)(?![a-zA-Z])")
_HEADER = r"""\documentclass{{article}}
\usepackage{{amsmath,amssymb}}
{font}
\usepackage{{bm}}
\providecommand{{\overparen}}[1]{{\overset{{\frown}}{{#1}}}}  % arcs, as the exam corpus writes them (yhmath)
\usepackage[active,tightpage]{{preview}}
\pagestyle{{empty}}
\begin{{document}}
"""
_SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # in memory: latex and dvipng write many small files
# longer log lines, so an error and its context are not wrapped
_TEX_ENV = {"max_print_line": "1000", "error_line": "254", "half_error_line": "238"}


class TexUnavailable(RuntimeError):
    """`latex` or `dvipng` is not installed."""


def check_tex() -> None:
    """Raise TexUnavailable with an install hint when `latex` or `dvipng` is missing."""
    missing = [tool for tool in ("latex", "dvipng") if shutil.which(tool) is None]
    if missing:
        raise TexUnavailable(f"renderer 'tex' needs {' and '.join(missing)}: {INSTALL_HINT}")


@functools.cache
def available_fonts() -> tuple[str, ...]:
    """The FONTS whose package is installed (kpsewhich finds its .sty)."""
    names = []
    for name, line in FONTS.items():
        package = re.search(r"\{(\w+)\}", line)
        if package is None or subprocess.run(["kpsewhich", f"{package.group(1)}.sty"],
                                             capture_output=True).returncode == 0:
            names.append(name)
    return tuple(names)


def _page(latex: str, size: str) -> str:
    return rf"\begin{{preview}}{size}$\displaystyle {latex}$\end{{preview}}"


def _run_latex(workdir: Path, font: str, pages: list[str]) -> tuple[bool, int | None, str]:
    """Compile one document of `pages`: (ok, pages written or None when the log does not say, error)."""
    tex = workdir / "f.tex"
    tex.write_text(_HEADER.format(font=FONTS[font]) + "\n".join(pages) + "\n\\end{document}\n")
    try:
        proc = subprocess.run(["latex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", tex.name],
                              cwd=workdir, capture_output=True, timeout=10 + 0.05 * len(pages),
                              env={**os.environ, **_TEX_ENV})
        ok, reason = proc.returncode == 0, "latex failed (no message in its log)"
    except subprocess.TimeoutExpired:
        ok, reason = False, "latex timed out"
    log = _log(workdir)
    n_written = _pages_written(log)
    message = re.search(r"^! (.*)$", log, re.MULTILINE)
    where = re.search(r"^l\.\d+ (.*)$", log, re.MULTILINE)
    if not ok and message:
        reason = message.group(1) + (f" (at: {where.group(1).strip()[-60:]})" if where else "")
    return ok, n_written, reason


def _log(workdir: Path) -> str:
    path = workdir / "f.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _pages_written(log: str) -> int | None:
    """The pages latex wrote, from its log; None when the log does not say (a timeout, a crash)."""
    written = re.search(r"Output written on .*?\((\d+) pages?", log)
    return int(written.group(1)) if written else 0 if "No pages of output" in log else None


def _isolate_failures(workdir: Path, font: str, pages: list[str], batch: list[int]) -> dict[int, str] | None:
    """Reasons for the positions in `batch` that do not compile; None when the whole batch compiles.

    TeX ships each page at its \\end{preview}, so when the log gives the page count the first page not
    written is the culprit; when it does not (a timeout, a crash), bisect.
    """
    failures: dict[int, str] = {}
    pending, first_run = [batch], True
    while pending:
        batch = pending.pop()
        ok, n_written, reason = _run_latex(workdir, font, [pages[i] for i in batch])
        if ok and first_run:
            return None
        first_run = False
        if ok:
            continue
        if n_written is not None and n_written < len(batch):
            failures[batch[n_written]] = reason
            pending.extend([batch[n_written + 1:]] if n_written + 1 < len(batch) else [])
        elif len(batch) == 1:
            failures[batch[0]] = reason
        else:  # the log cannot say which page: bisect
            half = len(batch) // 2
            pending.extend([batch[half:], batch[:half]])
    return failures


def _compile_all(workdir: Path, font: str, pages: list[str]) -> tuple[list[int], dict[int, str]]:
    """Positions of `pages` that compile together, and reasons for the others.

    On return f.dvi in `workdir` holds exactly the returned positions, in order.
    """
    failures: dict[int, str] = {}
    candidates = list(range(len(pages)))
    while candidates:
        found = _isolate_failures(workdir, font, pages, candidates)
        if found is None:  # one run compiled all candidates: f.dvi holds exactly them
            break
        # every page compiles alone but not together: blame them all rather than loop
        found = found or dict.fromkeys(candidates, "compiles alone but not together with its batch")
        failures.update(found)
        candidates = [i for i in candidates if i not in found]  # compile the survivors together again
    n_pages = _pages_written(_log(workdir)) if candidates else 0
    if n_pages != len(candidates):  # a formula that made two pages would shift every page after it
        failures.update(dict.fromkeys(candidates, f"latex wrote {n_pages} pages for {len(candidates)} formulas"))
        candidates = []
    return candidates, failures


def _dvipng(workdir: Path, dpi: int, first: int, n_pages: int) -> tuple[list[np.ndarray | None], str | None]:
    """Pages first+1 .. first+n_pages of f.dvi as grayscale arrays in one dvipng call, or ([], the reason it
    failed). Page `first` (a _SACRIFICE) starts the range and is dropped."""
    try:
        subprocess.run(["dvipng", "-q", "-D", str(dpi), "-T", "tight", "-bg", "White", "-fg", "Black",
                        "--gamma", "1.5", "-z", "1", "-p", f"={first}", "-l", f"={first + n_pages}",
                        "-o", "p%d.png", "f.dvi"],
                       cwd=workdir, capture_output=True, check=True, timeout=30 + 0.05 * n_pages)
    except subprocess.CalledProcessError as err:
        return [], f"dvipng failed: {err.stderr.decode(errors='replace').strip()[-200:]}"
    except subprocess.TimeoutExpired:
        return [], "dvipng timed out"
    files = list(workdir.glob("p*.png"))
    images = [cv2.imread(str(workdir / f"p{k}.png"), cv2.IMREAD_GRAYSCALE)
              for k in range(first + 1, first + n_pages + 1)]
    for file in files:
        file.unlink()
    if len(files) != n_pages + 1 or any(image is None for image in images):
        return [], f"dvipng wrote {max(len(files) - 1, 0)} of {n_pages} pages"
    return images, None


def render_batch(items: list[tuple[int, str]], seed: int, fonts: tuple[str, ...] | None = None,
                 dpis: tuple[int, ...] = DPIS) -> list[Rendered]:
    """Render (index, latex) items: font and size per item from (seed, index); one latex run per font, one dvipng
    run per font and block of RUN_BLOCK indices (the resolution is drawn per block and font)."""
    check_tex()
    fonts = fonts or available_fonts()
    unknown = set(fonts) - set(FONTS)
    if unknown:
        raise ValueError(f"unknown TeX fonts {sorted(unknown)}; known: {sorted(FONTS)}")
    results, groups = [], {}
    for index, latex in items:
        rng = item_rng(seed, index)
        result = Rendered(index, latex, fonts[rng.integers(len(fonts))])
        refused = _REFUSED.search(latex)
        if refused:
            result.error = f"refused: contains \\{refused.group(1)}"
        else:
            page = _page(" ".join(latex.split()), SIZES[rng.integers(len(SIZES))])  # one line per page
            groups.setdefault(result.style, {}).setdefault(index // RUN_BLOCK, []).append((result, page))
        results.append(result)
    for font, blocks in groups.items():
        _render_font(font, blocks, seed, dpis)
    return results


def _render_font(font: str, blocks: dict[int, list[tuple[Rendered, str]]], seed: int, dpis: tuple[int, ...]) -> None:
    """One font's (result, page) items by block of RUN_BLOCK indices: one latex run for all, one dvipng run per block
    at the block's resolution; sets each result's image or error."""
    entries = [entry for group in blocks.values() for entry in [None, *group]]  # None: a block's _SACRIFICE
    with tempfile.TemporaryDirectory(prefix="ocrlib-tex-", dir=_SCRATCH) as tmp:
        good, failures = _compile_all(Path(tmp), font, [_SACRIFICE if e is None else e[1] for e in entries])
        for position, reason in failures.items():
            if entries[position] is not None:
                entries[position][0].error = reason
        starts = [page for page, position in enumerate(good, 1) if entries[position] is None]
        for block, first, end in zip(blocks, starts, [*starts[1:], len(good) + 1]):
            dpi = int(item_rng(seed, block, len(FONTS), list(FONTS).index(font)).choice(dpis))
            n = end - first - 1  # the block's formulas that compiled
            images, error = _dvipng(Path(tmp), dpi, first, n) if n else ([], None)
            for position, gray in zip(good[first:end - 1], images or [None] * n):
                result = entries[position][0]
                margin = int(item_rng(seed, result.index, 1).integers(2, 9))
                result.image = None if gray is None else crop_to_ink(gray, margin)
                if result.image is None:
                    result.error = error or "empty image (no ink)"
