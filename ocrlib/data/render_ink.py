"""Pen-stroke renderer: CROHME InkML, or pseudo-ink typeset from LaTeX when CROHME is absent.

Strokes are drawn anti-aliased (cv2 LINE_AA) on a 4x supersampled canvas and shrunk with area
averaging, so pen widths need not be whole pixels. Per expression: target height, pen width, slant
(shear) and jitter are drawn from (seed, index); per stroke the pen width varies a little.

Pseudo-ink: the formula is typeset by mathtext, thinned to a one-pixel skeleton (Zhang & Suen, "A fast
parallel algorithm for thinning digital patterns", CACM 1984), and the skeleton is traced into
polylines that the same pen then draws, wobbling - so handwritten-looking data exists on a fresh clone.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from ocrlib.data.ink_synth import Ink
from ocrlib.data.render_mathtext import FONTSETS, Rendered, crop_to_ink, error_line, item_rng, rasterize
from ocrlib.data.sources import read_inkml
from ocrlib.errors import BadInput, FontsUnavailable

HEIGHTS = (40, 112)  # target ink height range, pixels
PEN = (0.025, 0.06)  # pen width range, as a fraction of the target height
SLANT = (-0.3, 0.3)  # shear: x += slant * (height above the bottom)
JITTER = (0.0, 0.012)  # per-point wobble, as a fraction of the target height
SUPERSAMPLE = 4
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel stroke coordinates


def render_strokes(strokes: list[np.ndarray], rng: np.random.Generator, heights: tuple[int, int] = HEIGHTS,
                   pen: tuple[float, float] = PEN, slant: tuple[float, float] = SLANT,
                   jitter: tuple[float, float] = JITTER) -> np.ndarray | None:
    """Draw (N, 2) x-right y-down point arrays as ink; (H, W) uint8 black on white, None without points."""
    strokes = [np.asarray(s, dtype=np.float64)[:, :2] for s in strokes if len(s)]
    if not strokes:
        return None
    height = rng.uniform(*heights)
    pen_px = rng.uniform(*pen) * height
    points = np.concatenate(strokes)
    low, extent = points.min(axis=0), np.ptp(points, axis=0)
    # a flat expression ("-", "...") would blow up: cap the aspect ratio used for scaling at 16:1
    scale = height / max(extent[1], extent[0] / 16, 1e-9)
    shear, wobble = rng.uniform(*slant), rng.uniform(*jitter) * height
    drawn = []
    for stroke in strokes:
        xy = (stroke - low) * scale  # (N, 2)
        xy[:, 0] += shear * (height - xy[:, 1])
        xy += rng.normal(0, height * 0.01, size=2)  # the stroke lands a little off
        if len(xy) >= 5:  # smooth wobble: averaged noise, not pixel speckle
            noise = rng.normal(0, wobble, size=xy.shape)
            kernel = np.ones(5) / 5
            xy += np.stack([np.convolve(noise[:, k], kernel, mode="same") for k in range(2)], axis=1)
        drawn.append((xy, pen_px * rng.uniform(0.8, 1.2)))
    return _draw(drawn, margin=pen_px + 2)


def _draw(strokes: list[tuple[np.ndarray, float]], margin: float) -> np.ndarray | None:
    """Rasterise (points, width) strokes on a supersampled white canvas and shrink it."""
    low = np.min([xy.min(axis=0) for xy, _ in strokes], axis=0) - margin
    high = np.max([xy.max(axis=0) for xy, _ in strokes], axis=0) + margin
    width, height = np.ceil((high - low) * SUPERSAMPLE).astype(int) + 1
    canvas = np.full((height, width), 255, np.uint8)
    for xy, pen_px in strokes:
        fixed = np.round((xy - low) * SUPERSAMPLE * (1 << _SHIFT)).astype(np.int32)  # (N, 2)
        thickness = max(1, round(pen_px * SUPERSAMPLE))
        if len(fixed) == 1:  # a dot; with `shift` the radius is fixed-point too
            radius = max(1, round(pen_px * SUPERSAMPLE / 2 * (1 << _SHIFT)))
            cv2.circle(canvas, tuple(int(v) for v in fixed[0]), radius, 0, -1, cv2.LINE_AA, _SHIFT)
        else:
            cv2.polylines(canvas, [fixed], False, 0, thickness, cv2.LINE_AA, _SHIFT)
    small = cv2.resize(canvas, (max(1, width // SUPERSAMPLE), max(1, height // SUPERSAMPLE)),
                       interpolation=cv2.INTER_AREA)
    return crop_to_ink(small, margin=2)


# ---------------------------------------------------------------- pseudo-ink

def _thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a bool image to a one-pixel-wide skeleton (vectorised sub-iterations)."""
    img = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = img
            # neighbours P2..P9, clockwise from north
            n = [np.roll(np.roll(p, dy, 0), dx, 1) for dy, dx in
                 ((1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1))]
            count = sum(n)
            ring = n + n[:1]
            transitions = sum((ring[k] == 0) & (ring[k + 1] == 1) for k in range(8))
            p2, p4, p6, p8 = n[0], n[2], n[4], n[6]
            if step == 0:
                cond = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                cond = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            remove = (p == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & cond
            if remove.any():
                img = np.where(remove, 0, img).astype(np.uint8)
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


_NEIGHBOURS = ((0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))  # 4-neighbours first


def _trace(skeleton: np.ndarray) -> list[np.ndarray]:
    """Walk a skeleton into polylines of (x, y) points, starting from its end points.

    At a junction the walk goes on in the straightest direction, so a "+" becomes two strokes
    (as a pen writes it) rather than two bent ones.
    """
    todo = set(zip(*np.nonzero(skeleton)))
    pixels = set(todo)

    def neighbours(pixel, pool):
        return [(pixel[0] + dy, pixel[1] + dx) for dy, dx in _NEIGHBOURS if (pixel[0] + dy, pixel[1] + dx) in pool]

    def straightness(path, pixel):  # cosine between the recent heading and the step to `pixel`
        (y0, x0), (y1, x1) = path[-min(len(path), 4)], path[-1]
        heading, step = np.array([y1 - y0, x1 - x0]), np.array([pixel[0] - y1, pixel[1] - x1])
        return heading @ step / (np.linalg.norm(heading) * np.linalg.norm(step) + 1e-9)

    ends = sorted(p for p in todo if len(neighbours(p, pixels)) == 1)
    strokes = []
    while todo:
        start = next((p for p in ends if p in todo), None) or min(todo)
        path = [start]
        todo.discard(start)
        while nxt := neighbours(path[-1], todo):
            step = max(nxt, key=lambda p: straightness(path, p)) if len(nxt) > 1 else nxt[0]
            path.append(step)
            todo.discard(step)
        joined = neighbours(path[-1], pixels - set(path[-3:]))  # close the gap to a junction walked before
        if joined and len(path) <= 3:
            continue  # a thinning spur, not a stroke (an isolated dot, as on an i, stays)
        path += joined[:1]
        strokes.append(np.array([(x, y) for y, x in path], dtype=np.float64))  # (N, 2) as x, y
    return strokes


def _smooth(stroke: np.ndarray, step: int = 3) -> np.ndarray:
    """Take the pixel staircase out of a traced stroke: moving average, then every `step`-th point."""
    if len(stroke) < 4:
        return stroke
    kernel = np.ones(3) / 3
    inner = np.stack([np.convolve(stroke[:, k], kernel, mode="valid") for k in range(2)], axis=1)
    return np.concatenate([stroke[:1], inner[::step], stroke[-1:]])


def pseudo_strokes(latex: str, fontset: str = "cm", size_pt: float = 20.0) -> list[np.ndarray]:
    """Pen strokes ((N, 2) x-right y-down arrays) that follow the skeleton of `latex` typeset by mathtext."""
    # ~55 px per em (strokes 4-8 px thick): coarser rasters thin into skeletons that lose stroke ends
    coverage = rasterize(latex, fontset, size_pt, dpi=200)
    return [_smooth(s) for s in _trace(_thin(coverage > 96))]


def render_pseudo_ink(latex: str, rng: np.random.Generator, fonts: tuple[str, ...] = FONTSETS) -> tuple[np.ndarray | None, str]:
    """Handwritten-looking image of `latex`, and the font its skeleton came from."""
    font = fonts[rng.integers(len(fonts))]
    return render_strokes(pseudo_strokes(latex, font), rng), font


def render_batch(items: list[tuple[int, str | os.PathLike | Ink]], seed: int,
                 fonts: tuple[str, ...] = FONTSETS) -> list[Rendered]:
    """Render (index, item) pairs: an InkML path is real ink (truth from the file), an Ink synthesised ink,
    a string pseudo-ink."""
    results = []
    for index, item in items:
        rng = item_rng(seed, index)
        if isinstance(item, os.PathLike):
            result = Rendered(index, "", "crohme")
            try:
                expression = read_inkml(item)
                result.latex, result.style = expression.truth, f"crohme-{expression.source}"
                result.image = render_strokes(expression.strokes, rng)
            except BadInput as err:
                result.error = err.problem  # the manifest names the file beside the reason
            except OSError as err:
                result.error = f"cannot read: {err.strerror or err}"
        elif isinstance(item, Ink):  # assembled from real handwritten symbols (ocrlib.data.ink_synth)
            result = Rendered(index, item.latex, f"synth-{item.writer.partition('/')[0]}",
                              render_strokes(item.strokes, rng))
        else:
            result = Rendered(index, item)
            try:
                result.image, font = render_pseudo_ink(item, rng, fonts)
                result.style = f"pseudo-{font}"
            except FontsUnavailable:
                raise  # the machine's fonts, not this formula
            except Exception as err:  # mathtext raises ValueError, KeyError, RuntimeError... for bad input
                result.error = error_line(err)
        results.append(result.checked())
    return results
