"""`ocrlib export`: fp16 weights for shipping, or ONNX graphs of a transformer-decoder recogniser (SATRN) with an
onnxruntime model behind the decoding step API.

`export_onnx(checkpoint, folder)` writes two graphs and a small JSON:
    encoder.onnx  images (B, C, H, W), widths (B,) -> mask (B, S), then each decoder layer's memory keys and values
    step.onnx     prev (N,), mask, memory keys/values, self-attention caches (N, heads, t, dh) ->
                  log_probs (N, V), attention (N, S), caches extended to t + 1
    model.json    token ids, vocabulary, the feature grid's height, layer count
`OnnxRecognizer(folder)` runs them with onnxruntime and offers `init_state` / `step`, so
ocrlib.decoding's greedy and beam search (and `FormulaReader(runtime="onnx")`, `serve --runtime onnx`) use it as
they use the torch model. Only models whose decoder is ocrlib.models.layers.TransformerDecoder export.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ocrlib.checkpoints import export_weights, load_checkpoint
from ocrlib.decoding import beam_search, greedy
from ocrlib.errors import BadInput
from ocrlib.models.layers import ColumnPadding, TransformerDecoder, key_mask
from ocrlib.pretrained import MAX_BYTES, WEIGHTS, default_checkpoint

OPSET = 17


class _Encoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, widths: torch.Tensor):
        pad = ColumnPadding(widths, images.size(-1))  # always the masked path: an unpadded image is all valid
        memory, hw = self.model.encode(images, pad)
        kv = [t for pair in self.model.decoder.memory_kv(memory) for t in pair]
        return (key_mask(pad, hw), *kv)


class _Step(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.decoder: TransformerDecoder = model.decoder
        self.layers = len(self.decoder.layers)

    def forward(self, prev: torch.Tensor, mask: torch.Tensor, *tensors: torch.Tensor):
        n = self.layers
        memory_kv = [(tensors[2 * i], tensors[2 * i + 1]) for i in range(n)]
        caches = [(tensors[2 * n + 2 * i], tensors[2 * n + 2 * i + 1]) for i in range(n)]
        logits, new_caches, weights = self.decoder.run(prev[:, None], memory_kv, caches, True, mask)
        return (logits[:, 0].log_softmax(-1), weights[:, 0], *[t for pair in new_caches for t in pair])


def _names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}_{kind}{i}" for i in range(layers) for kind in ("k", "v")]


def export_onnx(checkpoint: str | Path | None, folder: str | Path) -> Path:
    """Export a checkpoint (default: the shipped model) to `folder`/{encoder,step}.onnx + model.json."""
    model, vocab, config = load_checkpoint(default_checkpoint(checkpoint))
    if not isinstance(model.decoder, TransformerDecoder):
        raise BadInput(str(checkpoint), f"ONNX export needs a transformer decoder; {config.name} has "
                                        f"{type(model.decoder).__name__}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers, data = len(model.decoder.layers), config.data
    width = 4 * data.height if data.width is None else data.width
    images = torch.rand(2, data.channels, data.height, width)
    widths = torch.tensor([width, width // 2])
    encoder = _Encoder(model).eval()
    with torch.no_grad():
        mask, *memory = encoder(images, widths)
        h = model.encode(images[:1])[1][0]
    heads, head_dim = memory[0].shape[1], memory[0].shape[3]
    mem_names, cache_names, new_names = _names("memory", layers), _names("cache", layers), _names("new_cache", layers)
    caches = [torch.zeros(2, heads, 3, head_dim) for _ in range(2 * layers)]
    with warnings.catch_warnings():
        # The TorchScript-based exporter (the torch.export-based one needs onnxscript, which is not installed) warns
        # that it is deprecated, and that two Python checks become constants: a position-table bound and "one new
        # token" (no causal mask), both true at every decoding step. tests/test_onnx_export.py compares with torch.
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder, (images, widths), folder / "encoder.onnx", dynamo=False, opset_version=OPSET,
                          input_names=["images", "widths"], output_names=["mask", *mem_names],
                          dynamic_axes={"images": {0: "batch", 3: "width"}, "widths": {0: "batch"},
                                        "mask": {0: "batch", 1: "positions"},
                                        **{name: {0: "batch", 2: "positions"} for name in mem_names}})
        torch.onnx.export(_Step(model).eval(), (torch.tensor([vocab.sos_id] * 2), mask, *memory, *caches),
                          folder / "step.onnx", dynamo=False, opset_version=OPSET,
                          input_names=["prev", "mask", *mem_names, *cache_names],
                          output_names=["log_probs", "attention", *new_names],
                          dynamic_axes={"prev": {0: "batch"}, "mask": {0: "batch", 1: "positions"},
                                        "attention": {0: "batch", 1: "positions"}, "log_probs": {0: "batch"},
                                        **{n: {0: "batch", 2: "positions"} for n in mem_names},
                                        **{n: {0: "batch", 2: "steps"} for n in cache_names},
                                        **{n: {0: "batch", 2: "steps_plus_one"} for n in new_names}})
    meta = {"name": config.name, "config": config.to_dict(), "vocab": vocab.tokens, "layers": layers,
            "heads": heads, "head_dim": head_dim, "feature_height": h, "max_len": model.max_len,
            "pad_id": model.pad_id, "sos_id": model.sos_id, "eos_id": model.eos_id}
    (folder / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
    return folder


class OnnxRecognizer:
    """The exported graphs run by onnxruntime, behind the step API that ocrlib.decoding drives."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        import onnxruntime as ort

        folder = Path(folder)
        if not (folder / "model.json").is_file():
            raise BadInput(folder, "not an ONNX export (no model.json); write one with `ocrlib export --onnx`")
        self.folder = folder
        self.meta = json.loads((folder / "model.json").read_text())
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(folder / "encoder.onnx"), options, providers=providers)
        self.stepper = ort.InferenceSession(str(folder / "step.onnx"), options, providers=providers)
        self.layers, self.max_len = self.meta["layers"], self.meta["max_len"]
        self.pad_id, self.sos_id, self.eos_id = self.meta["pad_id"], self.meta["sos_id"], self.meta["eos_id"]
        self.mem_names, self.cache_names = _names("memory", self.layers), _names("cache", self.layers)

    def init_state(self, images: torch.Tensor, widths: torch.Tensor | None = None) -> dict:
        if widths is None:
            widths = torch.full((images.size(0),), images.size(-1))
        mask, *memory = self.encoder.run(None, {"images": images.numpy().astype(np.float32),
                                                 "widths": widths.numpy().astype(np.int64)})
        n = images.size(0)
        empty = np.zeros((n, self.meta["heads"], 0, self.meta["head_dim"]), np.float32)
        h = self.meta["feature_height"]
        return {"mask": torch.from_numpy(mask), "memory": [torch.from_numpy(m) for m in memory],
                "caches": [torch.from_numpy(empty) for _ in range(2 * self.layers)], "hw": (h, mask.shape[1] // h)}

    def step(self, state: dict, prev: torch.Tensor) -> tuple[torch.Tensor, dict]:
        feeds = {"prev": prev.numpy().astype(np.int64), "mask": state["mask"].numpy()}
        feeds.update({name: t.numpy() for name, t in zip(self.mem_names, state["memory"])})
        feeds.update({name: t.numpy() for name, t in zip(self.cache_names, state["caches"])})
        log_probs, attention, *caches = self.stepper.run(None, feeds)
        return torch.from_numpy(log_probs), dict(state, caches=[torch.from_numpy(c) for c in caches],
                                                 attn=torch.from_numpy(attention))

    def decode(self, images: torch.Tensor, max_len: int | None = None, beam: int = 1, constraints=None,
               length_penalty: float = 1.0, widths: torch.Tensor | None = None):
        max_len = max_len or self.max_len
        if beam == 1:
            return greedy(self, images, max_len, constraints, widths)
        return beam_search(self, images, max_len, beam, constraints, length_penalty, widths)


def cli_export(args) -> int:
    """`ocrlib export --checkpoint runs/x/best.pt [--out ocrlib/pretrained/model.pt]`: fp16 weights for shipping;
    `ocrlib export --onnx FOLDER [--checkpoint C]`: the ONNX graphs (default: of the shipped model)."""
    if args.onnx:
        folder = export_onnx(args.checkpoint, args.onnx)
        sizes = {p.name: p.stat().st_size / 2**20 for p in sorted(folder.iterdir())}
        print(f"{folder}: " + ", ".join(f"{name} {mb:.1f} MiB" for name, mb in sizes.items()))
        return 0
    if not args.checkpoint:
        raise BadInput("export", "--checkpoint is required for a weights export (or give --onnx FOLDER)")
    info = export_weights(args.checkpoint, args.out or WEIGHTS)
    print(f"{info['path']}: {info['parameters']:,} parameters, {info['bytes'] / 2**20:.1f} MiB (fp16), "
          f"step {info['step']}")
    if info["bytes"] > MAX_BYTES:
        print(f"warning: larger than the {MAX_BYTES // 2**20} MiB the repository ships", file=sys.stderr)
    return 0
