"""The command line: `ocrlib render|train|eval|predict|serve|load|export|models|bench|report` (or `python -m ocrlib ...`).

This module only parses arguments; each command lives in the module that does the work
(imported lazily so `--help` stays fast). Bad input ends with a one-line error and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from ocrlib.errors import BadInput, FontsUnavailable

# Packages of the `notebooks` extra (pip install 'ocrlib[notebooks]'), not of the runtime.
NOTEBOOK_PACKAGES = {"papermill", "nbconvert", "nbformat", "nbclient", "jupyter_client", "ipykernel", "ipywidgets"}

# command -> (module, function); each function takes the parsed args and returns an exit status.
COMMANDS = {
    "render": ("ocrlib.data.render", "cli_render"),
    "train": ("ocrlib.train", "cli_train"),
    "eval": ("ocrlib.evaluate", "cli_eval"),
    "predict": ("ocrlib.reader", "cli_predict"),
    "serve": ("ocrlib.serve", "cli_serve"),
    "load": ("ocrlib.load", "cli_load"),
    "export": ("ocrlib.onnx_export", "cli_export"),
    "models": ("ocrlib.models.catalog", "cli_models"),
    "bench": ("ocrlib.bench", "cli_bench"),
    "report": ("ocrlib.reports", "cli_report"),
}


def prog_name(argv0: str | None = None) -> str:
    """How the command was invoked: `ocrlib` for the console script, `python -m ocrlib` otherwise (-m, torchrun)."""
    name = os.path.basename(sys.argv[0] if argv0 is None else argv0)
    return "ocrlib" if re.fullmatch(r"ocrlib(\.exe|-script\.pyw?)?", name) else "python -m ocrlib"


def version() -> str:
    """The installed distribution's version; the pyproject.toml version for a checkout that is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("ocrlib")
    except PackageNotFoundError:
        from ocrlib.paths import PROJECT_ROOT

        found = re.search(r'^version\s*=\s*"([^"]+)"', (PROJECT_ROOT / "pyproject.toml").read_text(), re.M)
        return found.group(1) if found else "unknown"


def add_decoding_flags(p: argparse.ArgumentParser) -> None:
    """--beam, --[no-]brackets, --length-penalty; each left out (None) is the checkpoint's `decoding:` value."""
    p.add_argument("--beam", type=int, default=None, help="beam width (default: the checkpoint's decoding.beam)")
    p.add_argument("--brackets", action=argparse.BooleanOptionalAction, default=None,
                   help="bracket-balance constraint on or off (default: the checkpoint's decoding.brackets)")
    p.add_argument("--length-penalty", type=float, default=None, metavar="FLOAT",
                   help="beam ranking: sum log p / length ** FLOAT (default: the checkpoint's decoding.length_penalty)")


def build_parser() -> argparse.ArgumentParser:
    prog = prog_name()
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ocrlib {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("render", help="typeset formulas into a competition-layout data set")
    p.add_argument("--corpus", default="synth",
                   help="formula list file (one LaTeX a line), 'synth' (the generator), or an InkML folder for --renderer ink")
    p.add_argument("--renderer", choices=("mathtext", "tex", "ink", "screen"), default="mathtext")
    p.add_argument("--out", required=True, help="output folder (images/, gt.txt, tokens.txt, manifest.json)")
    p.add_argument("--n", type=int, default=None, help="number of formulas (default: all of the corpus; 1000 for synth)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default=None, help="keep only formulas of this hash split (train/val/test)")

    p = sub.add_parser("train", help="train a recogniser (works under torchrun too)")
    p.add_argument("--config", required=True, help="model name (satrn, aster, attention, srn, cstr) or a YAML path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. training.lr=3e-4 (repeatable)")
    p.add_argument("--preset", default=None,
                   help="a named section of the model's YAML: smoke | quick | full (budgets), competition, paper...")
    p.add_argument("--run-dir", default=None, help="run folder (default runs/<model>-<hash>)")
    p.add_argument("--resume", action="store_true", help="continue from run-dir/checkpoint.pt")
    p.add_argument("--budget-min", type=float, default=None, help="stop after this many wall-clock minutes")

    p = sub.add_parser("eval", help="evaluate a checkpoint on a competition-layout folder")
    p.add_argument("--checkpoint", default=None, help="default: the shipped pretrained model")
    p.add_argument("--data", required=True,
                   help="a competition-layout folder (gt.txt + images/), or a folder of InkML files (drawn as ink)")
    add_decoding_flags(p)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples of gt.txt")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default=None, help="write the results as JSON here")

    p = sub.add_parser("predict", help="print image<TAB>latex (or JSON lines) for images or folders")
    p.add_argument("--checkpoint", default=None, help="default: the shipped pretrained model")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    add_decoding_flags(p)
    p.add_argument("--format", choices=("tsv", "jsonl"), default="tsv",
                   help="tsv: path<TAB>latex a line (refuses paths with a tab or newline); "
                        'jsonl: {"path", "latex", "tokens", "confidence", "score", "complete", "alternatives"} a line')

    p = sub.add_parser("serve", help="an HTTP API (POST /predict) and a paste-a-screenshot page (needs '.[serve]')")
    p.add_argument("--checkpoint", default=None, help="default: the shipped pretrained model")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--beam", type=int, default=None, help="beam width (default: the checkpoint's decoding.beam)")
    p.add_argument("--workers", type=int, default=1, help="server processes (each loads the model)")
    p.add_argument("--token", default=None, help="require `Authorization: Bearer TOKEN` (or set OCRLIB_SERVE_TOKEN)")
    p.add_argument("--max-batch", type=int, default=16, help="most images decoded together")
    p.add_argument("--window-ms", type=float, default=10.0, help="how long a request waits for others to batch with")
    p.add_argument("--queue-size", type=int, default=64, help="waiting images beyond this get 503")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a waiting request gets 504")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="larger uploads get 413")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch", help="onnx: decode with onnxruntime")
    p.add_argument("--onnx", default=None, metavar="FOLDER", help="an `export --onnx` folder (default: export now)")

    p = sub.add_parser("load", help="concurrent clients against `ocrlib serve` on loopback: req/s, latency, memory")
    p.add_argument("--checkpoint", default=None, help="default: the shipped pretrained model")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="client counts, one run each")
    p.add_argument("--seconds", type=float, default=30.0, help="duration of each run")
    p.add_argument("--soak-min", type=float, default=0.0, help="then 8 clients for this many minutes (memory)")
    p.add_argument("--out", default=None, help="default: reports/load.json (and load.md)")

    p = sub.add_parser("export", help="a checkpoint's weights in fp16 for shipping (ocrlib/pretrained/model.pt), "
                                      "or its ONNX graphs (--onnx)")
    p.add_argument("--checkpoint", default=None, help="a training checkpoint (--onnx: default the shipped model)")
    p.add_argument("--out", default=None, help="default: ocrlib/pretrained/model.pt")
    p.add_argument("--onnx", default=None, metavar="FOLDER",
                   help="write encoder.onnx, step.onnx and model.json here instead (needs '.[serve]')")

    sub.add_parser("models", help="table of the registered models and their parameter counts")

    p = sub.add_parser("bench", help="benchmarks: JSON + markdown table in reports/")
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--only", nargs="*", default=None, metavar="TEXT", help="only the cases whose name contains a TEXT")

    p = sub.add_parser("report", help="run the numbered notebooks with papermill into reports/")
    p.add_argument("--profile", default="quick")
    p.add_argument("--only", nargs="*", default=None, help="notebook name prefixes to run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a notebook parameter for every notebook run, VALUE read as YAML (e.g. "
                        "'checkpoints={satrn: pretrained}'); repeatable")
    p.add_argument("--tag", default=None, help="written as <notebook>_<TAG> beside the plain run (e.g. 60min)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = COMMANDS[args.command]
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(args) or 0)
    except (BadInput, FileNotFoundError, FontsUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in NOTEBOOK_PACKAGES:
            raise
        print(f"error: `{prog_name()} {args.command}` needs the notebook packages ({err.name} is not installed): "
              "pip install 'ocrlib[notebooks]'", file=sys.stderr)
        return 2
