"""Checkpoint files: written atomically, read without executing code, turned back into a model.

A checkpoint is a dict of tensors and plain values (weights, vocabulary tokens, the config as plain
dicts, training state), so `torch.load(weights_only=True)` reads it and loading never runs code from
the file. `format` names the layout: 2 since the typed config (ocrlib.config); files without it are
format 1, whose keys are the same, so they load and resume unchanged.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from ocrlib.config import RunConfig
from ocrlib.errors import BadInput
from ocrlib.models import model_from_config
from ocrlib.tokens import Vocab

FORMAT = 2
KNOWN_FORMATS = (1, 2)


def save_checkpoint(state: dict, path: Path) -> None:
    """Write to a temporary file, fsync, then os.replace: a crash mid-write leaves the old checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """torch.load(weights_only=True) with one-line BadInput errors for missing, unsafe, corrupt and unknown files."""
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
    if state.get("format", 1) not in KNOWN_FORMATS:
        raise BadInput(path, f"checkpoint format {state['format']!r} is not one this ocrlib reads "
                             f"({', '.join(map(str, KNOWN_FORMATS))}); it was written by a newer version")
    return state


def config_of(state: dict, path: str | Path) -> RunConfig:
    """The run config a checkpoint was trained with."""
    if "config" not in state:
        raise BadInput(path, "not an ocrlib checkpoint (no config)")
    return RunConfig.from_dict(state["config"], path)


def export_weights(checkpoint: str | Path, out: str | Path, dtype: torch.dtype = torch.float16) -> dict:
    """A checkpoint's weights (floating tensors cast to `dtype`), vocabulary and config, without optimiser or
    training state: what `ocrlib/pretrained/model.pt` holds. Returns {"path", "bytes", "parameters", "step"}."""
    state = read_checkpoint(checkpoint)
    config_of(state, checkpoint)  # refuse a file that is not a model checkpoint before writing anything
    weights = {key: value.to(dtype) if value.is_floating_point() else value for key, value in state["model"].items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": weights, "vocab": state["vocab"], "config": state["config"],
                     "step": state.get("step"), "val": state.get("val"), "exported_from": str(checkpoint)}, out)
    return {"path": str(out), "bytes": out.stat().st_size, "step": state.get("step"),
            "parameters": sum(v.numel() for v in weights.values() if v.is_floating_point())}


def read_model_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                          needs: tuple[str, ...] = ("model", "vocab", "config")) -> dict:
    """`read_checkpoint`, refusing a file without the model parts named in `needs`."""
    state = read_checkpoint(path, map_location)
    missing = [key for key in needs if key not in state]
    if missing:
        raise BadInput(path, f"not an ocrlib checkpoint (no {', '.join(missing)})")
    return state


def load_weights(model, state: dict, path: str | Path, target: str = "the model of its config") -> None:
    """state["model"] into `model` (fp16 weights, as a shipped model holds, are cast to the model's fp32); weights
    of other shapes are a one-line BadInput naming `target`."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise BadInput(path, f"weights do not fit {target} ({str(err).splitlines()[0]})") from err


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """A checkpoint written by `ocrlib.train` -> (model in eval mode, Vocab, RunConfig)."""
    state = read_model_checkpoint(path, device)
    vocab, config = Vocab(state["vocab"]), config_of(state, path)
    model = model_from_config(config, vocab)
    load_weights(model, state, path)
    return model.to(device).eval(), vocab, config
