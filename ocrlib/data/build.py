"""Build a profile's data sets into data/<profile>/ (notebook 00, `make data`, training notebooks).

Printed: formulas from the real exam corpus when it is beside the project (else the generator), split by a
hash of the normalised formula, rendered with mathtext fonts; the training split is typeset again by real TeX
in every TeX font but one (training sees both renderers), and the test split twice more: by TeX in all fonts
(the shifted test set) and in the held-out font alone (a font no training image used), and as screen captures
of KaTeX in a browser when Chromium is installed (skipped otherwise). Handwritten: CROHME ink split by writer, and
training formulas written with the training writers' symbols (ocrlib.data.ink_synth); without CROHME, pseudo-ink
from generated formulas.
A set whose folder already holds a manifest for the same request is reused, not rendered again.
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ocrlib.data.ink_synth import SymbolBank, synthesise_many
from ocrlib.data.render import available_renderer, render_dataset
from ocrlib.data.render_tex import available_fonts
from ocrlib.data.sources import InkExpression, read_formula_list, read_gt, read_inkml
from ocrlib.errors import BadInput
from ocrlib.locking import folder_lock
from ocrlib.data.splits import split_by_writer, split_formulas
from ocrlib.data.synth import generate_formulas
from ocrlib.paths import DATA_DIR, crohme_inkml_dir, exam_formulas_file
from ocrlib.profiles import get_profile
from ocrlib.tokens import Vocab, normalize_latex


HELD_OUT_FONT = "palatino"  # TeX font kept out of training: the tex_heldout/test set is typeset in it alone


@dataclass
class BuiltData:
    root: Path
    sets: dict[str, Path] = field(default_factory=dict)  # "printed/train" -> folder in competition layout
    printed_source: str = ""
    handwritten_source: str = ""
    tex_renderer: str = ""  # "tex", or "mathtext" when TeX is not installed

    @property
    def vocab_path(self) -> Path:
        return self.root / "tokens.txt"

    def describe(self) -> str:
        screen = "KaTeX in Chromium" if "screen/test" in self.sets else "none (Chromium is not installed)"
        return (f"printed formulas: {self.printed_source}; trained on mathtext + {self.tex_renderer} renders "
                f"(TeX font {HELD_OUT_FONT} held out); shifted tests typeset by: {self.tex_renderer}; "
                f"screen captures: {screen}; handwritten: {self.handwritten_source}")

    def summary(self) -> pd.DataFrame:
        rows = []
        for name, folder in self.sets.items():
            manifest = json.loads((folder / "manifest.json").read_text())
            rows.append({"set": name, "images": manifest["n_written"], "failed": manifest["n_failed"],
                         "renderer": manifest["renderer"], "seconds": round(manifest["seconds"], 1)})
        return pd.DataFrame(rows)


def printed_corpus(n: int, seed: int) -> tuple[list[str], str]:
    """n formulas (seeded sample) from the real corpus, or from the generator when the corpus is absent."""
    path = exam_formulas_file()
    if path is None:
        return generate_formulas(n, seed), "generator (ocrlib.data.synth; ../shared/data is absent)"
    formulas = read_formula_list(path)
    rng = random.Random(seed)
    return rng.sample(formulas, min(n, len(formulas))), f"exam corpus {path} ({len(formulas):,} formulas)"


def crohme_splits(n: int, seed: int) -> dict[str, list[InkExpression]]:
    """n CROHME expressions (a seeded sample of ../shared/data's InkML) split by writer: no writer in two splits.
    Unusable files are left out and counted on stderr. Empty splits when CROHME is absent."""
    inkml_dir = crohme_inkml_dir()
    paths = sorted(inkml_dir.glob("*/*.inkml")) if inkml_dir else []
    paths = random.Random(seed).sample(paths, min(n, len(paths)))
    expressions, bad = [], 0
    for path in paths:
        try:
            expressions.append(read_inkml(path))
        except BadInput:
            bad += 1
    if bad:
        print(f"note: {bad} of {len(paths)} InkML files are unusable and left out", file=sys.stderr)
    return split_by_writer(expressions)


def _render_cached(items: list, out: Path, renderer: str, seed: int, workers: int, progress: bool,
                   fonts: tuple[str, ...] | None = None) -> Path:
    """Render unless `out` already holds this request; `fonts` (TeX only) restricts the document fonts."""
    opts = {"fonts": fonts} if fonts and renderer == "tex" else {}
    request = {"renderer": renderer, "seed": seed, "n": len(items), "first": str(items[0]) if items else "",
               **({"fonts": list(fonts)} if opts else {})}
    stamp = out / "request.json"
    if stamp.exists() and (out / "manifest.json").exists() and json.loads(stamp.read_text()) == request:
        return out
    if out.exists():
        shutil.rmtree(out)
    render_dataset(items, out, renderer, seed=seed, workers=workers, progress=progress, **opts)
    stamp.write_text(json.dumps(request))
    return out


def build_datasets(profile: str = "quick", seed: int = 0, workers: int = 2, root: Path | None = None,
                   progress: bool = True) -> BuiltData:
    """Render (or find already rendered) every set of a profile under data/<profile>/ (or `root`)."""
    root = Path(root) if root else DATA_DIR / profile
    with folder_lock(root):  # notebooks run side by side build (or check) one profile's data one at a time
        return _build(get_profile(profile), seed, workers, root, progress)


def _build(prof, seed: int, workers: int, root: Path, progress: bool) -> BuiltData:
    built = BuiltData(root)

    # Printed: hash split of the normalised formula, so val/test hold only formulas never seen in training.
    formulas, built.printed_source = printed_corpus(prof.printed_formulas, seed)
    splits = split_formulas(formulas)
    for split, items in splits.items():
        built.sets[f"printed/{split}"] = _render_cached(items, root / "printed_mathtext" / split, "mathtext",
                                                        seed, workers, progress)

    # The shifted test set: the same test formulas typeset by real TeX (the competition's public->private drop).
    built.tex_renderer, note = available_renderer("tex")
    if note:
        print(f"note: {note} -- the shifted test set is rendered with mathtext instead", file=sys.stderr)
    built.sets["tex/test"] = _render_cached(splits["test"][: prof.tex_test], root / "printed_tex" / "test",
                                            built.tex_renderer, seed + 1, workers, progress)
    fonts = available_fonts() if built.tex_renderer == "tex" else ()
    train_fonts = tuple(font for font in fonts if font != HELD_OUT_FONT) or None
    built.sets["tex/train"] = _render_cached(splits["train"][: prof.tex_train], root / "printed_tex" / "train",
                                             built.tex_renderer, seed + 3, workers, progress, train_fonts)
    heldout = (HELD_OUT_FONT,) if HELD_OUT_FONT in fonts else None
    built.sets["tex_heldout/test"] = _render_cached(splits["test"][: prof.tex_test],
                                                    root / "printed_tex_heldout" / "test", built.tex_renderer,
                                                    seed + 4, workers, progress, heldout)

    # Screen captures: KaTeX in a browser at web-page sizes, what users paste. No stand-in renderer: a screen
    # test set that is not a screen capture would mislead, so without Chromium the set is left out.
    screen, note = available_renderer("screen")
    if screen is None:
        print(f"note: {note} -- the screen/test set is skipped", file=sys.stderr)
    else:
        built.sets["screen/test"] = _render_cached(splits["test"][: prof.tex_test], root / "printed_screen" / "test",
                                                   screen, seed + 5, workers, progress)

    # Handwritten: CROHME split by writer; pseudo-ink from generated formulas when CROHME is absent.
    inkml_dir = crohme_inkml_dir()
    if inkml_dir is not None:
        by_writer = crohme_splits(prof.handwritten, seed)
        hw_splits = {k: [Path(e.path) for e in v] for k, v in by_writer.items()}
        built.handwritten_source = (f"CROHME ink {inkml_dir} ({sum(map(len, hw_splits.values())):,} expressions, "
                                    "split by writer)")
        # More training ink: printed training formulas written with the training writers' own symbols
        bank = SymbolBank.from_expressions(by_writer["train"])
        inks, _ = synthesise_many(map(normalize_latex, splits["train"]), bank, prof.handwritten_synth, seed + 6)
        if inks:
            built.sets["handwritten_synth/train"] = _render_cached(inks, root / "handwritten_synth" / "train", "ink",
                                                                   seed + 6, workers, progress)
    else:
        hw_splits = split_formulas(generate_formulas(prof.handwritten, seed + 2))
        built.handwritten_source = "pseudo-ink from generated formulas (CROHME is absent)"
    for split, items in hw_splits.items():
        built.sets[f"handwritten/{split}"] = _render_cached(items, root / "handwritten" / split, "ink",
                                                            seed, workers, progress)

    # One vocabulary: the tokens of the training splits (val/test tokens outside it are counted as <unk>).
    train_tokens = [s.tokens for key in ("printed/train", "tex/train", "handwritten/train")
                    for s in read_gt(built.sets[key])[0]]
    Vocab.build(train_tokens).save(built.vocab_path)
    (root / "build.json").write_text(json.dumps(
        {"profile": prof.name, "seed": seed, "sets": {k: str(v) for k, v in built.sets.items()},
         "printed_source": built.printed_source, "handwritten_source": built.handwritten_source,
         "tex_renderer": built.tex_renderer}, indent=2))
    return built


def synthetic_sets(n: int, seed: int = 0, renderer: str = "mathtext", val_fraction: float = 0.1,
                   workers: int = 1, progress: bool = True) -> tuple[Path, Path]:
    """Train and val folders rendered from the formula generator (training's `data.source: synth`), split by
    formula hash so that validation formulas are new; cached in data/cache/<hash of the request>."""
    request = json.dumps({"n": n, "seed": seed, "renderer": renderer, "val_fraction": val_fraction}, sort_keys=True)
    root = DATA_DIR / "cache" / hashlib.sha1(request.encode()).hexdigest()[:12]
    formulas = generate_formulas(n, seed, mathtext_safe=renderer == "mathtext")
    splits = split_formulas(formulas, (("train", 1 - val_fraction), ("val", val_fraction)))
    train_dir, val_dir = (_render_cached(splits[split], root / split, renderer, seed + offset, workers, progress)
                          for offset, split in enumerate(("train", "val")))
    return train_dir, val_dir


def inkml_folder_set(folder: str | Path, workers: int = 2, progress: bool = True) -> Path:
    """A folder of InkML files as a competition-layout set to evaluate: drawn once by the ink renderer (seed 0)
    into data/cache/ink-<hash of the file list>, reused while the files are unchanged. Unusable files are left
    out and counted in its manifest.json with their reasons. A folder holding gt.txt is returned as it is."""
    folder = Path(folder)
    if (folder / "gt.txt").exists() or not folder.is_dir():
        return folder
    files = sorted(folder.rglob("*.inkml"))
    if not files:
        raise BadInput(folder, "neither gt.txt nor *.inkml files here")
    listing = "\n".join(f"{p.relative_to(folder)} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in files)
    out = DATA_DIR / "cache" / f"ink-{hashlib.sha1(listing.encode()).hexdigest()[:12]}"
    _render_cached(files, out, "ink", 0, workers, progress)
    manifest = json.loads((out / "manifest.json").read_text())
    if manifest["n_failed"]:
        reasons = ", ".join(f"{k} ({v})" for k, v in manifest["failure_reasons"].items())
        print(f"{folder}: {manifest['n_failed']} of {len(files)} InkML files skipped: {reasons}", file=sys.stderr)
    return out
