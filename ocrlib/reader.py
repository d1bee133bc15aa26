"""Read formulas from images with a trained checkpoint: the one function behind `predict`, `serve` and the demo.

`FormulaReader(checkpoint).read(images)` preprocesses like training (resize, keep-aspect padding), decodes a
batch (greedy or beam) and returns one `Reading` per image: the LaTeX, each token's probability, the beam's
other hypotheses, and the attention map of every token (models that attend). No `--checkpoint`: the shipped
pretrained model.
"""
from __future__ import annotations

import json
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ocrlib.checkpoints import load_checkpoint
from ocrlib.data.dataset import load_gray, model_input, pad_images, width_multiple_of
from ocrlib.errors import BadInput
from ocrlib.evaluate import decode_options, decoding_with, select_device
from ocrlib.pretrained import default_checkpoint
from ocrlib.tokens import join

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
PREDICT_FORMATS = ("tsv", "jsonl")
RUNTIMES = ("torch", "onnx")
# typed formulas for demos: the samples of the page (ocrlib serve) and of the demo notebook
DEMO_FORMULAS = (r"\frac{1}{2}", r"x^{2}+1", r"f(x)=2x+1", r"\sqrt{3}", r"y=kx+b", r"a_{n}")


@dataclass
class Reading:
    """What a recogniser read in one image."""
    latex: str
    tokens: list[str]
    confidence: list[float]  # probability of each token as it was emitted, then of eos when `complete`
    score: float  # mean log-prob per emitted token, eos included (0 is certain)
    complete: bool  # the model ended the formula (eos) before its length limit
    alternatives: list[dict] = field(default_factory=list)  # other beam hypotheses: {"latex", "score"}, best first
    attention: np.ndarray | None = None  # (emitted tokens, h, w) where the model looked for each, or None; the
    # w columns span this image alone (its own padding to a multiple of 16 included, not the batch's)

    def as_dict(self, attention: bool = False) -> dict:
        out = {"latex": self.latex, "tokens": self.tokens, "confidence": [round(p, 4) for p in self.confidence],
               "score": round(self.score, 4), "complete": self.complete, "alternatives": self.alternatives}
        if attention:
            out["attention"] = None if self.attention is None else np.round(self.attention, 4).tolist()
        return out


class FormulaReader:
    """A checkpoint ready to read images: `read([gray, ...])` -> [Reading, ...] (uint8 (H, W), black on white)."""

    def __init__(self, checkpoint: str | Path | None = None, device: str = "auto", beam: int | None = None,
                 brackets: bool | None = None, length_penalty: float | None = None, runtime: str = "torch",
                 onnx_folder: str | Path | None = None):
        """runtime "onnx": decode with onnxruntime from `onnx_folder` (an `ocrlib export --onnx` of this checkpoint;
        exported to a temporary folder when None)."""
        if runtime not in RUNTIMES:
            raise BadInput(runtime, f"unknown runtime (one of {', '.join(RUNTIMES)})")
        self.checkpoint, self.runtime = default_checkpoint(checkpoint), runtime
        self.device = select_device(device) if runtime == "torch" else torch.device("cpu")
        self.model, self.vocab, self.config = load_checkpoint(self.checkpoint, self.device)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        if runtime == "onnx":
            from ocrlib.onnx_export import OnnxRecognizer, export_onnx  # onnxruntime: the serve extra only

            if onnx_folder is None:
                self._exported = tempfile.TemporaryDirectory(prefix="ocrlib-onnx-")
                onnx_folder = export_onnx(self.checkpoint, self._exported.name)
            self.model = OnnxRecognizer(onnx_folder)
        self.decoding = decoding_with(self.config, beam, brackets, length_penalty)

    def show_attention_of_layer(self, layer: int) -> None:
        """Report the cross-attention of this decoder layer (0 = first, -1 = last, the default) in readings'
        `attention`: transformer decoders (SATRN) have one map per layer; other models have one map."""
        decoder = getattr(self.model, "decoder", None)
        if not hasattr(decoder, "attention_layer"):
            raise BadInput(self.checkpoint, f"a {self.config.name} model has one attention map, no layers to choose")
        if not -len(decoder.layers) <= layer < len(decoder.layers):
            raise BadInput(self.checkpoint, f"attention layer {layer} out of range: the decoder has "
                                            f"{len(decoder.layers)} layers")
        decoder.attention_layer = layer

    def describe(self) -> dict:
        return {"checkpoint": str(self.checkpoint), "model": self.config.name, "input_height": self.config.data.height,
                "keep_aspect": self.config.data.width is None, "vocabulary": len(self.vocab),
                "parameters": self.parameters, "beam": self.decoding.beam, "runtime": self.runtime}

    @torch.no_grad()
    def read(self, images: list[np.ndarray], beam: int | None = None) -> list[Reading]:
        """Read images, in batches of similar width; `beam` overrides the reader's beam width for this call.

        Padding every image to the widest would multiply the encoder's work (its self-attention is quadratic in
        the width): a 60-px and a 1,000-px formula decode in different batches (`width_groups`)."""
        decoding = self.decoding if beam is None else decoding_with(self.config, beam)
        tensors = [model_input(gray, self.config.data) for gray in images]  # (C, H, W) each
        readings: list[Reading | None] = [None] * len(images)
        for group in width_groups([t.shape[-1] for t in tensors]):
            for i, reading in zip(group, self._read_batch([tensors[i] for i in group], decoding)):
                readings[i] = reading
        return readings

    def _read_batch(self, tensors: list[torch.Tensor], decoding) -> list[Reading]:
        batch = pad_images(tensors, width_multiple_of(self.config.data)).to(self.device)
        widths = torch.tensor([t.shape[-1] for t in tensors], device=self.device)
        out = self.model.decode(batch, widths=widths, **decode_options(decoding, self.vocab))
        stride = batch.shape[-1] / out.attention.shape[-1] if out.attention is not None else 1.0
        readings = []
        for i, tensor in enumerate(tensors):
            ids = out.tokens[i].tolist()
            complete = self.vocab.eos_id in ids
            emitted = ids.index(self.vocab.eos_id) + 1 if complete else len(ids)
            log_probs = out.token_log_probs[i, :emitted].tolist()
            tokens = self.vocab.decode(ids)
            alternatives = []
            if out.beams is not None:
                for hypothesis, rank in zip(out.beams[i, 1:].tolist(), out.beam_scores[i, 1:].tolist()):
                    if math.isfinite(rank):
                        alternatives.append({"latex": join(self.vocab.decode(hypothesis)), "score": round(rank, 4)})
            readings.append(Reading(
                latex=join(tokens), tokens=tokens, confidence=[math.exp(lp) for lp in log_probs],
                score=sum(log_probs) / max(emitted, 1), complete=complete, alternatives=alternatives,
                attention=None if out.attention is None else
                out.attention[i, :emitted, :, :math.ceil(tensor.shape[-1] / stride)].cpu().numpy()))
        return readings


def width_groups(widths: list[int], ratio: float = 1.3, max_size: int = 32) -> list[list[int]]:
    """Indices of `widths` in groups of at most `max_size` whose widest is at most `ratio` times the narrowest."""
    groups: list[list[int]] = []
    for i in sorted(range(len(widths)), key=widths.__getitem__):
        if groups and len(groups[-1]) < max_size and widths[i] <= ratio * widths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def image_files(inputs: list[str]) -> list[Path]:
    """Image files named directly, plus every image under named folders (sorted)."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(item)
    return files


def tsv_problem(path: Path) -> str | None:
    """Why `path` cannot be written as the first column of a tsv line (None when it can)."""
    text = str(path)
    if any(c in text for c in "\t\n\r"):
        return "its name holds a tab or line break, which tsv cannot hold; use --format jsonl"
    try:  # as print would write it: a name with undecodable bytes, or outside a non-UTF-8 stdout's charset
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8", getattr(sys.stdout, "errors", None) or "strict")
    except (UnicodeEncodeError, LookupError):
        return f"its name cannot be written in {sys.stdout.encoding}; use --format jsonl"
    return None


def prediction_line(path: Path, reading: Reading, fmt: str = "tsv") -> str:
    """One output line of `predict`: `path<TAB>latex` (tsv) or {"path", "latex", "tokens", "confidence", "score",
    "complete", "alternatives"} as JSON (jsonl)."""
    if fmt == "jsonl":
        return json.dumps({"path": str(path), **reading.as_dict()})
    return f"{path}\t{reading.latex}"


def cli_predict(args) -> int:
    """Print `image<TAB>latex` (--format tsv) or one JSON object (--format jsonl) per image; an unusable image
    (or a file name tsv cannot hold) gets one line on stderr and the rest go on.

    Exit status: 0 all recognised, 1 some failed, 2 none recognised.
    """
    fmt = getattr(args, "format", "tsv")
    if fmt not in PREDICT_FORMATS:
        raise BadInput(fmt, f"unknown output format (one of {', '.join(PREDICT_FORMATS)})")
    reader = FormulaReader(args.checkpoint, beam=args.beam, brackets=args.brackets, length_penalty=args.length_penalty)
    files = image_files(args.inputs)
    if not files:
        print("error: no image files in the inputs", file=sys.stderr)
        return 2
    n_ok = 0
    for path in files:
        problem = tsv_problem(path) if fmt == "tsv" else None
        if problem:  # the name, escaped, keeps the error on one line
            print(f"error: {json.dumps(str(path))}: {problem}", file=sys.stderr)
            continue
        try:
            reading = reader.read([load_gray(path)])[0]
        except BadInput as err:
            print(f"error: {err}", file=sys.stderr)
            continue
        print(prediction_line(path, reading, fmt), flush=True)
        n_ok += 1
    return 0 if n_ok == len(files) else (1 if n_ok else 2)
