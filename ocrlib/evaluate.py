"""Evaluate a recogniser on a data set, load checkpoints safely, and the `eval` / `predict` commands.

`evaluate` returns aggregate `Results` (ocrlib.metrics) and a per-sample DataFrame that the notebooks
slice for breakdowns and error analysis. Checkpoints are read with `torch.load(weights_only=True)`:
they hold tensors and plain Python values only (weights, vocabulary tokens, config), so loading a
checkpoint never runs code from the file.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import sys
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ocrlib.errors import BadInput
from ocrlib.metrics import (Results, aspect_bucket, breakdown, edit_distance, length_bucket, markdown_table,
                            results_of, token_wer)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
COLUMNS = ["path", "gt", "pred", "correct", "edit_distance", "wer", "length", "source", "renderer", "aspect",
           "length_bucket", "aspect_bucket"]
BREAKDOWNS = ("length_bucket", "source", "renderer", "aspect_bucket")


def select_device(name: str = "auto") -> torch.device:
    """'auto': CUDA when available, else CPU (using every core); or an explicit torch device name."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    return device


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """torch.load(weights_only=True) with one-line BadInput errors for missing, unsafe and corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(path, "no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if unsafe:
            raise BadInput(path, f"refused: the checkpoint holds a pickled Python object ({unsafe.group(1)}), "
                                 "not only tensors and plain values (loaded with weights_only=True)") from err
        raise BadInput(path, "corrupt checkpoint (not a torch.save file)") from err
    except Exception as err:  # torch reports damaged files as RuntimeError, EOFError, KeyError...
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise BadInput(path, f"corrupt or truncated checkpoint ({reason})") from err
    if not isinstance(state, dict):
        raise BadInput(path, f"not an ocrlib checkpoint (holds a {type(state).__name__}, not a dict)")
    return state


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """A checkpoint written by `ocrlib.train` -> (model in eval mode, Vocab, config dict)."""
    from ocrlib.models import model_from_config
    from ocrlib.tokens import Vocab

    state = read_checkpoint(path, device)
    missing = [key for key in ("model", "vocab", "config") if key not in state]
    if missing:
        raise BadInput(path, f"not an ocrlib checkpoint (no {', '.join(missing)})")
    vocab = Vocab(state["vocab"])
    try:
        model = model_from_config(state["config"], len(vocab), pad_id=vocab.pad_id, sos_id=vocab.sos_id,
                                  eos_id=vocab.eos_id)
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise BadInput(path, f"its config does not describe a model ({err})") from err
    except RuntimeError as err:
        raise BadInput(path, f"weights do not fit the model of its config ({str(err).splitlines()[0]})") from err
    return model.to(device).eval(), vocab, state["config"]


def _aspect(path: str) -> float:
    """Width / height read from the image header (cheap), NaN when unreadable."""
    try:
        with Image.open(path) as img:
            return img.width / img.height
    except (OSError, ZeroDivisionError):
        return float("nan")


@torch.no_grad()
def evaluate(model, data, vocab, beam: int = 1, max_len: int | None = None, batch_size: int = 32,
             constraints=None) -> tuple[Results, pd.DataFrame]:
    """Decode every sample of a DataLoader or FormulaDataset and compare with the ground truth.

    The ground truth is the sample's own token list when the dataset keeps its samples (so a token
    missing from the vocabulary counts as an error, not as a matching <unk>), else the decoded target.
    Returns Results and one row per sample (COLUMNS); frame.attrs["n_skipped"] counts unreadable samples.
    """
    from ocrlib.data.dataset import make_loader

    loader = data if isinstance(data, DataLoader) else make_loader(data, batch_size, seed=0, shuffle=False)
    device = next(model.parameters()).device
    samples = {str(s.image): s for s in getattr(loader.dataset, "samples", [])}
    rows, n_skipped = [], 0
    for batch in loader:
        n_skipped += batch["n_skipped"]
        if not batch["paths"]:
            continue
        out = model.decode(batch["images"].to(device), max_len=max_len, beam=beam, constraints=constraints)
        for path, pred_ids, target_ids in zip(batch["paths"], out.tokens.tolist(), batch["targets"].tolist()):
            sample = samples.get(str(path))
            gt = list(sample.tokens) if sample else vocab.decode(target_ids)
            pred = vocab.decode(pred_ids)
            distance, aspect = edit_distance(pred, gt), _aspect(path)
            source = sample.source if sample else "unknown"
            rows.append([str(path), " ".join(gt), " ".join(pred), distance == 0, distance, token_wer(pred, gt),
                         len(gt), source, source.split(":")[0], aspect,  # render sources read 'renderer:style'
                         length_bucket(len(gt)), aspect_bucket(aspect)])
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.attrs["n_skipped"] = n_skipped
    return results_of(frame), frame


def bracket_constraint(config: dict, vocab):
    """The decoding.brackets option of a config as a BracketConstraint (None when off)."""
    from ocrlib.decoding import BracketConstraint

    return BracketConstraint(vocab.tokens, vocab.eos_id) if config.get("decoding", {}).get("brackets") else None


def report_tables(name: str, results: Results, frame: pd.DataFrame) -> str:
    """Markdown: the overall row, then one table per breakdown."""
    parts = [markdown_table({name: results})]
    for by in BREAKDOWNS:
        parts.append(f"\nby {by}:\n\n" + markdown_table(breakdown(frame, by)))
    return "\n".join(parts)


def dataset_for(data, vocab, config: dict):
    """A competition-layout folder (or a list of Samples) as the model of `config` sees it: its image size,
    no augmentation."""
    from ocrlib.data.dataset import FormulaDataset

    data_cfg = config.get("data", {})
    return FormulaDataset(data, vocab, height=data_cfg.get("height", 128), width=data_cfg.get("width", 128),
                          augment=None, vertical_fix=data_cfg.get("vertical_fix", True),
                          channels=data_cfg.get("channels", 1))


def cli_eval(args) -> int:
    """`python -m ocrlib eval --checkpoint C --data FOLDER [--beam K] [--limit N] [--out results.json]`."""
    from ocrlib.data.sources import read_gt

    device = select_device()
    model, vocab, config = load_checkpoint(args.checkpoint, device)
    samples, bad_lines = read_gt(args.data)
    for where, problem in bad_lines:
        print(f"{Path(args.data) / where}: skipped ({problem})", file=sys.stderr)
    dataset = dataset_for(samples[: args.limit], vocab, config)
    results, frame = evaluate(model, dataset, vocab, beam=args.beam, batch_size=args.batch_size,
                              constraints=bracket_constraint(config, vocab))
    print(report_tables(Path(args.data).name, results, frame))
    skipped = frame.attrs["n_skipped"]
    if skipped:
        print(f"{skipped} unreadable sample(s) skipped: {dict(getattr(dataset, 'skipped', {}))}", file=sys.stderr)
    if args.out:
        payload = {"checkpoint": str(args.checkpoint), "data": str(args.data), "beam": args.beam, "limit": args.limit,
                   "results": results.as_dict(), "n_skipped": skipped,
                   "breakdowns": {by: breakdown(frame, by).to_dict(orient="index") for by in BREAKDOWNS}}
        Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def image_files(inputs: list[str]) -> list[Path]:
    """Image files named directly, plus every image under named folders (sorted)."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(item)
    return files


def cli_predict(args) -> int:
    """Print `image<TAB>latex` per image; an unusable image gets one line on stderr and the rest go on.

    Exit status: 0 all recognised, 1 some failed, 2 none recognised.
    """
    from ocrlib.data.dataset import load_gray
    from ocrlib.data.sources import Sample
    from ocrlib.tokens import join

    device = select_device()
    model, vocab, config = load_checkpoint(args.checkpoint, device)
    files = image_files(args.inputs)
    if not files:
        print("error: no image files in the inputs", file=sys.stderr)
        return 2
    # the images as an unlabelled data set: the same preprocessing as in training (vertical fix, resize)
    dataset = dataset_for([Sample(path, []) for path in files], vocab, config)
    constraints, n_ok = bracket_constraint(config, vocab), 0
    for path in files:
        try:
            image = dataset.preprocess(load_gray(path))  # (C, H, W)
        except BadInput as err:
            print(f"error: {err}", file=sys.stderr)
            continue
        out = model.decode(image.unsqueeze(0).to(device), beam=args.beam, constraints=constraints)  # tokens (1, L)
        print(f"{path}\t{join(vocab.decode(out.tokens[0].tolist()))}", flush=True)
        n_ok += 1
    return 0 if n_ok == len(files) else (1 if n_ok else 2)
