"""Evaluate a recogniser on a data set, and the `eval` command (`predict` is in ocrlib.reader).

`evaluate` returns aggregate `Results` (ocrlib.metrics) and a per-sample DataFrame that the notebooks
slice for breakdowns and error analysis. Checkpoints are read by ocrlib.checkpoints (weights_only=True).
A checkpoint's `decoding:` section (beam, length_penalty, brackets) is how it decodes unless a flag says
otherwise.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ocrlib.checkpoints import load_checkpoint
from ocrlib.config import DecodingConfig, RunConfig
from ocrlib.data.build import inkml_folder_set
from ocrlib.data.dataset import FormulaDataset, make_loader
from ocrlib.data.sources import read_gt
from ocrlib.decoding import BracketConstraint
from ocrlib.errors import BadInput
from ocrlib.models.layers import ColumnPadding
from ocrlib.metrics import (Results, aspect_bucket, breakdown, by_symbol_class, edit_distance, length_bucket,
                            markdown_table, results_of, summary_frame, summary_of, token_wer)
from ocrlib.pretrained import default_checkpoint

COLUMNS = ["path", "gt", "pred", "correct", "edit_distance", "wer", "length", "source", "renderer", "aspect",
           "length_bucket", "aspect_bucket"]
BREAKDOWNS = ("length_bucket", "source", "renderer", "aspect_bucket")


def select_device(name: str = "auto") -> torch.device:
    """'auto': CUDA when available, else CPU (every core, or OMP_NUM_THREADS when set: side-by-side runs);
    or an explicit torch device name."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    return device


def _aspect(path: str) -> float:
    """Width / height read from the image header (cheap), NaN when unreadable."""
    try:
        with Image.open(path) as img:
            return img.width / img.height
    except (OSError, ZeroDivisionError):
        return float("nan")


@torch.no_grad()
def evaluate(model, data, vocab, decoding: DecodingConfig | None = None, max_len: int | None = None,
             batch_size: int = 32, progress: bool = False) -> tuple[Results, pd.DataFrame]:
    """Decode every sample of a DataLoader or FormulaDataset and compare with the ground truth.

    decoding: beam width, length penalty and bracket constraint (default: greedy, unconstrained).

    The ground truth is the sample's own token list when the dataset keeps its samples (so a token
    missing from the vocabulary counts as an error, not as a matching <unk>), else the decoded target.
    Returns Results and one row per sample (COLUMNS); frame.attrs["n_skipped"] counts unreadable samples and
    frame.attrs["ms_per_image"] is the decoding time per image (model calls only, not image loading).
    `progress`: a progress bar over the batches on stderr.
    """
    loader = data if isinstance(data, DataLoader) else make_loader(data, batch_size, seed=0, shuffle=False)
    device = next(model.parameters()).device
    samples = {str(s.image): s for s in getattr(loader.dataset, "samples", [])}
    rows, n_skipped, options = [], 0, decode_options(decoding or DecodingConfig(), vocab)
    decode_seconds = 0.0
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, file=sys.stderr):
        n_skipped += batch["n_skipped"]
        if not batch["paths"]:
            continue
        started = time.perf_counter()
        out = model.decode(batch["images"].to(device), max_len=max_len, widths=batch["widths"].to(device), **options)
        decode_seconds += time.perf_counter() - started
        for path, pred_ids, target_ids in zip(batch["paths"], out.tokens.tolist(), batch["targets"].tolist()):
            sample = samples.get(str(path))
            gt = list(sample.tokens) if sample else vocab.decode(target_ids)
            rows.append(sample_row(path, gt, vocab.decode(pred_ids), sample.source if sample else "unknown"))
    return frame_of(rows, n_skipped, decode_seconds)


def sample_row(path, gt: list[str], pred: list[str], source: str) -> list:
    """One row of COLUMNS: a sample's truth and reading compared."""
    distance, aspect = edit_distance(pred, gt), _aspect(path)
    return [str(path), " ".join(gt), " ".join(pred), distance == 0, distance, token_wer(pred, gt), len(gt), source,
            source.split(":")[0], aspect,  # render sources read 'renderer:style'
            length_bucket(len(gt)), aspect_bucket(aspect)]


def frame_of(rows: list[list], n_skipped: int, decode_seconds: float) -> tuple[Results, pd.DataFrame]:
    """Results and the per-sample frame of `sample_row`s (attrs: n_skipped, ms_per_image)."""
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.attrs["n_skipped"] = n_skipped
    frame.attrs["ms_per_image"] = round(1000 * decode_seconds / max(len(frame), 1), 2)
    return results_of(frame), frame


@torch.no_grad()
def branch_results(model, data, vocab, batch_size: int = 32) -> dict[str, Results]:
    """SRN: the per-position argmax of each branch (visual = PVAM, semantic = GSRM, fused = VSFD) against the
    ground truth: which part reads, and which spoils the reading."""
    loader = data if isinstance(data, DataLoader) else make_loader(data, batch_size, seed=0, shuffle=False)
    device = next(model.parameters()).device
    preds, gts = {"visual": [], "semantic": [], "fused": []}, []
    for batch in loader:
        if not batch["paths"]:
            continue
        images = batch["images"].to(device)
        out = model.forward_all(images, ColumnPadding.of(batch["widths"].to(device), images.size(-1)))
        for branch, found in preds.items():
            found += [vocab.decode(row) for row in out[branch].argmax(-1).tolist()]
        gts += [vocab.decode(row) for row in batch["targets"].tolist()]
    return {branch: Results.from_pairs(found, gts) for branch, found in preds.items()}


def decode_options(decoding: DecodingConfig, vocab) -> dict:
    """A DecodingConfig as keyword arguments of Recognizer.decode (beam, length_penalty, constraints)."""
    constraints = BracketConstraint(vocab.tokens, vocab.eos_id) if decoding.brackets else None
    return {"beam": decoding.beam, "length_penalty": decoding.length_penalty, "constraints": constraints}


def decoding_with(config: RunConfig, beam: int | None = None, brackets: bool | None = None,
                  length_penalty: float | None = None) -> DecodingConfig:
    """The config's decoding options, with those of command-line flags that were given (not None)."""
    if beam is not None and beam < 1:
        raise BadInput("--beam", f"must be at least 1, got {beam}")
    if length_penalty is not None and not length_penalty >= 0:  # `not >=` refuses NaN too
        raise BadInput("--length-penalty", f"must be at least 0, got {length_penalty}")
    given = {"beam": beam, "brackets": brackets, "length_penalty": length_penalty}
    return dataclasses.replace(config.decoding, **{k: v for k, v in given.items() if v is not None})


def decoding_of(args, config: RunConfig) -> DecodingConfig:
    """The decoding that `eval` or `predict` uses: the checkpoint's, with --beam, --brackets, --length-penalty."""
    return decoding_with(config, args.beam, args.brackets, args.length_penalty)


def report_tables(name: str, frame: pd.DataFrame) -> str:
    """Markdown: the overall row, then one table per breakdown."""
    parts = [markdown_table(summary_frame({name: frame}))]
    for by in BREAKDOWNS:
        parts.append(f"\nby {by}:\n\n" + markdown_table(breakdown(frame, by)))
    parts.append("\nby symbol class (a formula counts in every class it holds):\n\n"
                 + markdown_table(by_symbol_class(frame)))
    return "\n".join(parts)


def dataset_for(data, vocab, config: RunConfig):
    """A competition-layout folder (or a list of Samples) as the model of `config` sees it: its image size,
    no augmentation."""
    return FormulaDataset.for_config(data, vocab, config.data)


def cli_eval(args) -> int:
    """`ocrlib eval --checkpoint C --data FOLDER|INKML_FOLDER [--beam K] [--[no-]brackets] [--length-penalty P] [--limit N]
    [--out results.json]`; a decoding option without its flag is the checkpoint's."""
    device = select_device()
    model, vocab, config = load_checkpoint(default_checkpoint(args.checkpoint), device)
    folder = inkml_folder_set(args.data)  # an InkML folder is drawn by the ink renderer first (cached)
    samples, bad_lines = read_gt(folder)
    for where, problem in bad_lines:
        print(f"{folder / where}: skipped ({problem})", file=sys.stderr)
    dataset = dataset_for(samples[: args.limit], vocab, config)
    decoding = decoding_of(args, config)
    results, frame = evaluate(model, dataset, vocab, decoding, batch_size=args.batch_size, progress=True)
    print(report_tables(Path(args.data).name, frame))
    print(f"\ndecoding {decoding}: {frame.attrs['ms_per_image']} ms per image at batch {args.batch_size} "
          f"({torch.get_num_threads()} threads)")
    skipped = frame.attrs["n_skipped"]
    if skipped:
        print(f"{skipped} unreadable sample(s) skipped: {dict(getattr(dataset, 'skipped', {}))}", file=sys.stderr)
    if args.out:
        payload = {"checkpoint": str(default_checkpoint(args.checkpoint)), "data": str(args.data),
                   "decoding": dataclasses.asdict(decoding), "limit": args.limit,
                   "ms_per_image": frame.attrs["ms_per_image"], "batch_size": args.batch_size,
                   "results": {**results.as_dict(), **summary_of(frame)}, "n_skipped": skipped,
                   "breakdowns": {**{by: breakdown(frame, by).to_dict(orient="index") for by in BREAKDOWNS},
                                  "symbol_class": by_symbol_class(frame).to_dict(orient="index")}}
        Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    return 0
