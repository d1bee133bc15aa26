"""Matplotlib mathtext renderer, plus the small raster helpers every renderer shares.

Mathtext is matplotlib's own TeX-subset typesetter: always installed and fast because it skips the
Figure machinery entirely: ``MathTextParser("agg").parse`` lays the formula out and rasterises the
glyphs with FreeType straight into a bitmap, as the Agg backend does for text, without touching the
backend setting (so importing this module in a notebook leaves its plots alone).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.font_manager import FontProperties
from matplotlib.mathtext import MathTextParser

from ocrlib.errors import FontsUnavailable

# mathtext.fontset values that look different from each other (cm = Computer Modern look-alike).
FONTSETS = ("cm", "stix", "stixsans", "dejavusans", "dejavuserif")
SIZES_PT = (10.0, 16.0)  # font size range in points
DPIS = (100, 120, 150, 200)

_PARSER = MathTextParser("agg")

# The font families each fontset draws its glyphs from. When matplotlib's font cache is stale (it lists the
# fonts of a deleted environment), font lookup falls back to DejaVu Sans with a log line and every fontset
# is drawn in it: plausible images in the wrong fonts. check_fontset refuses that instead.
FONTSET_FAMILIES = {"cm": ("cmr10", "cmmi10", "cmsy10", "cmex10"), "stix": ("STIXGeneral", "STIXSizeOneSym"),
                    "stixsans": ("STIXGeneral", "STIXSizeOneSym"), "dejavusans": ("DejaVu Sans",),
                    "dejavuserif": ("DejaVu Serif",)}


@dataclass
class Rendered:
    """One renderer result: an image, or the reason there is none."""

    index: int  # position in the data set (also the image id)
    latex: str  # ground-truth LaTeX (an InkML file's truth annotation for real ink)
    style: str = ""  # font / ink kind, written to source.txt as "<renderer>:<style>"
    image: np.ndarray | None = None  # (H, W) uint8, black ink on white
    error: str | None = None

    def checked(self) -> "Rendered":
        """The result, with a reason when a renderer produced no ink and no error."""
        if self.image is None and self.error is None:
            self.error = "empty image (no ink)"
        return self


def item_rng(seed: int, index: int, *salt: int) -> np.random.Generator:
    """Random parameters of one item derive from (seed, index), never from worker scheduling."""
    return np.random.default_rng([seed, index, *salt])


def crop_to_ink(gray: np.ndarray, margin: int, threshold: int = 250) -> np.ndarray | None:
    """Crop a white-background uint8 image to its ink plus `margin` white pixels; None without ink."""
    ink = gray < threshold
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return None
    crop = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return np.pad(crop, margin, constant_values=255)


def error_line(err: Exception) -> str:
    """Mathtext errors span several lines (formula, caret, message); the last one says what failed."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"[:300]


def missing_fonts(fontset: str, manager=None) -> list[str]:
    """The families of `fontset` that `manager` (matplotlib's font manager) cannot find as a file."""
    manager = manager or font_manager.fontManager
    missing = []
    for family in FONTSET_FAMILIES.get(fontset, ()):
        try:
            path = manager.findfont(FontProperties(family=family), fallback_to_default=False)
        except ValueError:
            path = None
        if not (path and os.path.isfile(path)):
            missing.append(family)
    return missing


@functools.cache  # once per fontset and process: a failed check is not cached, so it is asked again
def check_fontset(fontset: str) -> None:
    """Raise FontsUnavailable when matplotlib would draw `fontset` in fallback fonts."""
    missing = missing_fonts(fontset)
    if missing:
        raise FontsUnavailable(f"mathtext fontset {fontset!r}: matplotlib finds no font file for {', '.join(missing)} "
                               f"(a stale font cache? delete {matplotlib.get_cachedir()}/fontlist-*.json and retry)")


def rasterize(latex: str, fontset: str, size_pt: float, dpi: int) -> np.ndarray:
    """Typeset `latex` (without $) with mathtext; (H, W) uint8 ink coverage, 255 = full ink.

    Raises ValueError (or another parser error) when mathtext cannot parse the formula, FontsUnavailable when
    the fontset's fonts are missing.
    """
    check_fontset(fontset)
    prop = FontProperties(size=size_pt, math_fontfamily=fontset)
    parsed = _PARSER.parse(f"${latex}$", dpi=dpi, prop=prop)
    return np.asarray(parsed.image)


def render_mathtext(latex: str, fontset: str = "cm", size_pt: float = 12.0, dpi: int = 150,
                    margin: int = 4) -> np.ndarray | None:
    """Black-on-white uint8 image of `latex`, cropped to the ink with `margin`; None when it has no ink."""
    return crop_to_ink(255 - rasterize(latex, fontset, size_pt, dpi), margin)


def render_batch(items: list[tuple[int, str]], seed: int, fonts: tuple[str, ...] = FONTSETS,
                 dpis: tuple[int, ...] = DPIS, sizes_pt: tuple[float, float] = SIZES_PT) -> list[Rendered]:
    """Render (index, latex) items; font, size, dpi and margin drawn per item from (seed, index)."""
    results = []
    for index, latex in items:
        rng = item_rng(seed, index)
        font = fonts[rng.integers(len(fonts))]
        # half-point sizes: matplotlib's font lookup is cached per size, and a miss costs ~1 ms
        size = round(2 * rng.uniform(*sizes_pt)) / 2
        dpi, margin = int(rng.choice(dpis)), int(rng.integers(2, 9))
        result = Rendered(index, latex, font)
        check_fontset(font)  # missing fonts stop the run: not a per-formula error to skip and count
        try:
            result.image = render_mathtext(latex, font, size, dpi, margin)
        except Exception as err:  # mathtext raises ValueError, KeyError, RuntimeError... for bad input
            result.error = error_line(err)
        results.append(result.checked())
    return results
