"""Typeset formulas into a competition-layout data set (images/<id>.png, gt.txt, tokens.txt, source.txt).

Renderers (one module each): `mathtext` (matplotlib, several fonts, always available), `tex` (real
`latex` + `dvipng`, several document fonts), `ink` (CROHME InkML pen strokes, or pseudo-ink typeset
from LaTeX), `screen` (KaTeX in headless Chromium: screen captures of web pages). Rendering runs in a
process pool over fixed chunks; every random choice derives from (seed, index), so the output does not
depend on the number of workers. A formula that cannot be typeset is skipped and counted with its reason
in manifest.json.
"""
from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from ocrlib.data import render_tex
from ocrlib.data.render_screen import ScreenUnavailable, check_screen
from ocrlib.data.render_tex import TexUnavailable, check_tex
from ocrlib.data.sources import read_formula_list, read_inkml
from ocrlib.data.splits import split_of
from ocrlib.data.synth import generate_formulas
from ocrlib.errors import BadInput
from ocrlib.tokens import Vocab, join, normalize_latex

RENDERERS = ("mathtext", "tex", "ink", "screen")
_MODULES = {name: f"ocrlib.data.render_{name}" for name in RENDERERS}
# formulas per pool task: TeX pays a latex start per chunk and font, the screen a browser start (~1 s)
CHUNK_SIZE = {"mathtext": 64, "tex": 2 * render_tex.RUN_BLOCK, "ink": 32, "screen": 250}
# what stands in for a renderer that is not installed: mathtext typesets TeX's formulas too; a screen
# capture has no stand-in (a screen test set that is not a screen capture would mislead)
STAND_INS = {"tex": "mathtext"}
PNG_COMPRESSION = 3  # 0-9: level 3 is near the smallest files at a fraction of level 9's time

Item = str | os.PathLike  # LaTeX, or an InkML file for the ink renderer


def image_id(index: int) -> str:
    return f"{index:06d}"


def render_one(item: Item, renderer: str = "mathtext", seed: int = 0, index: int = 0, **opts) -> np.ndarray:
    """One image (H, W) uint8, drawn exactly as render_dataset would draw item `index`; ValueError on failure."""
    result = _module(renderer).render_batch([(index, item)], seed, **opts)[0]
    if result.error:
        raise ValueError(result.error)
    return result.image


def available_renderer(renderer: str) -> tuple[str | None, str | None]:
    """(renderer to use, note): `renderer` and None when it is usable here; else its stand-in (None when it has
    none) and a note that says what is missing.

    Callers decide what to do with the note (print it to stderr, skip a set, or skip a benchmark rather
    than time mathtext under TeX's name).
    """
    try:
        _check(renderer)
    except (TexUnavailable, ScreenUnavailable) as err:
        return STAND_INS.get(renderer), str(err)
    return renderer, None


def _check(renderer: str) -> None:
    """Raise TexUnavailable / ScreenUnavailable with an install hint when `renderer` cannot run here."""
    if renderer == "tex":
        check_tex()
    elif renderer == "screen":
        check_screen()  # also downloads KaTeX once, here rather than in every worker


def _module(renderer: str):
    if renderer not in _MODULES:
        raise ValueError(f"unknown renderer {renderer!r}; known: {', '.join(RENDERERS)}")
    return importlib.import_module(_MODULES[renderer])


def _render_chunk(job: tuple[str, list[tuple[int, Item]], int, dict, str]) -> list[dict]:
    """Pool task: render a chunk, write its PNGs, return one small record per item (no pixels cross back)."""
    renderer, items, seed, opts, images_dir = job
    records = []
    for result in _module(renderer).render_batch(items, seed, **opts):
        record = {"index": result.index, "style": result.style}
        tokens = normalize_latex(result.latex) if result.error is None else []
        if result.error is None and not tokens:
            result.error = "no tokens after normalisation"
        if result.error is None:
            name = f"{image_id(result.index)}.png"
            cv2.imwrite(os.path.join(images_dir, name), result.image, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
            record.update(image=name, tokens=tokens)
        else:
            record.update(error=result.error, item=str(items[result.index - items[0][0]][1])[:200])
        records.append(record)
    return records


def _select(items: Sequence[Item], n: int | None, seed: int) -> list[Item]:
    """All items, or a seeded sample of n of them in corpus order."""
    if n is None or n >= len(items):
        return list(items)
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=n, replace=False))
    return [items[i] for i in keep]


def render_dataset(formulas: Sequence[Item], out_dir: str | Path, renderer: str, seed: int = 0, workers: int = 2,
                   n: int | None = None, progress: bool = True, **opts) -> dict:
    """Render `formulas` (LaTeX strings; for 'ink' also InkML paths) into the competition layout at `out_dir`.

    `n` keeps a seeded sample of n formulas; `opts` go to the renderer's render_batch (e.g. fonts=...).
    Returns the manifest (also written to out_dir/manifest.json). Raises TexUnavailable for 'tex'
    without `latex`/`dvipng`, ScreenUnavailable for 'screen' without Chromium, its driver, selenium or KaTeX.
    """
    _module(renderer)  # fail early on an unknown name
    if renderer != "ink" and any(isinstance(item, os.PathLike) for item in formulas):
        raise ValueError(f"renderer {renderer!r} typesets LaTeX strings; InkML files need renderer 'ink'")
    _check(renderer)
    started = time.perf_counter()
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    items = _select(formulas, n, seed)
    # smaller chunks when there are too few to keep every worker busy (the output does not change)
    size = max(1, min(CHUNK_SIZE[renderer], -(-len(items) // max(workers, 1))))
    indexed = list(enumerate(items))
    jobs = [(renderer, indexed[start:start + size], seed, opts, str(images_dir))
            for start in range(0, len(items), size)]
    records = []
    with tqdm(total=len(items), desc=f"render {renderer}", unit="img", disable=not progress) as bar:
        if workers > 1 and len(jobs) > 1:
            with multiprocessing.get_context(_start_method()).Pool(min(workers, len(jobs))) as pool:
                for chunk in pool.imap_unordered(_render_chunk, jobs):
                    records += chunk
                    bar.update(len(chunk))
        else:
            for job in jobs:
                records += _render_chunk(job)
                bar.update(len(job[1]))
    records.sort(key=lambda r: r["index"])
    manifest = _write_layout(out_dir, renderer, records)
    seconds = time.perf_counter() - started
    manifest.update(
        renderer=renderer, seed=seed, workers=workers, n_input=len(formulas), n_requested=n or len(formulas),
        seconds=round(seconds, 3), images_per_s=round(manifest["n_written"] / seconds, 1),
        options=opts,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False, default=str) + "\n")
    return manifest


def _start_method() -> str:
    # fork starts workers in milliseconds with matplotlib and fonts already loaded; spawn elsewhere
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _write_layout(out_dir: Path, renderer: str, records: list[dict]) -> dict:
    """gt.txt, source.txt, tokens.txt from the records; the counting part of the manifest."""
    written = [r for r in records if "image" in r]
    failed = [r for r in records if "error" in r]
    (out_dir / "gt.txt").write_text("".join(f"{r['image']}\t{join(r['tokens'])}\n" for r in written))
    (out_dir / "source.txt").write_text("".join(f"{r['image']}\t{renderer}:{r['style']}\n" for r in written))
    vocab = Vocab.build(r["tokens"] for r in written)
    vocab.save(out_dir / "tokens.txt")
    reasons = Counter(r["error"].split(" (at")[0][:80] for r in failed)  # without the position: groups alike
    return {
        "n_written": len(written),
        "n_failed": len(failed),
        "fonts": dict(Counter(r["style"] for r in written).most_common()),
        "failure_reasons": dict(reasons.most_common()),
        "failures": [{"id": image_id(r["index"]), "item": r["item"], "reason": r["error"]} for r in failed],
        "vocab_size": len(vocab),
    }


def _corpus(args, renderer: str) -> list[Item]:
    """The items --corpus names: an InkML folder (ink), 'synth', or a formula list file; --split applied."""
    corpus = Path(args.corpus)
    keep = (lambda latex: split_of(normalize_latex(latex)) == args.split) if args.split else (lambda latex: True)
    if renderer == "ink" and corpus.is_dir():
        paths = sorted(corpus.rglob("*.inkml"))
        if not paths:
            raise BadInput(corpus, "no *.inkml files in this folder")
        if not args.split:
            return paths
        # --split needs each file's truth; unreadable files stay in so that the manifest counts them
        truths = {path: _inkml_truth(path) for path in paths}
        return [path for path in paths if truths[path] is None or keep(truths[path])]
    if args.corpus == "synth":
        # pseudo-ink is typeset by mathtext too: ask the generator for what mathtext can typeset
        n, formulas = args.n or 1000, []
        for extra_seed in range(100):  # a split keeps a fraction of each round: generate until there are n
            batch = generate_formulas(n, args.seed + extra_seed, mathtext_safe=renderer in ("mathtext", "ink"))
            formulas += [f for f in batch if keep(f)]
            if len(formulas) >= n:
                break
        return formulas[:n]
    if corpus.is_dir():
        raise BadInput(corpus, "a folder is only a corpus for --renderer ink (InkML files)")
    return [f for f in read_formula_list(corpus) if keep(f)]


def _inkml_truth(path: Path) -> str | None:
    try:
        return read_inkml(path).truth
    except (BadInput, OSError):
        return None


def cli_render(args) -> int:
    """`python -m ocrlib render`: --corpus, --renderer, --out, --n, --workers, --seed, --split."""
    renderer, note = available_renderer(args.renderer)
    if renderer is None:
        print(f"error: {note}", file=sys.stderr)
        return 1
    if note:
        print(f"note: {note} -- rendering with {renderer} instead", file=sys.stderr)
    items = _corpus(args, renderer)
    if not items:
        raise BadInput(args.corpus, f"no formulas{' in split ' + args.split if args.split else ''}")
    manifest = render_dataset(items, args.out, renderer, seed=args.seed, workers=args.workers, n=args.n)
    print(f"{args.out}: {manifest['n_written']} images, {manifest['n_failed']} failed "
          f"({manifest['images_per_s']:.0f} images/s); see manifest.json")
    if manifest["n_written"] == 0:
        reasons = ", ".join(list(manifest["failure_reasons"])[:3])
        print(f"error: nothing could be rendered ({reasons})", file=sys.stderr)
        return 1
    return 0
