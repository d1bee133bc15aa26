"""Helpers shared by the test modules: synthetic glyph batches, sentence accuracy, the overfit loop, tiny models,
and the tiny on-disk dataset and training config.

A plain module (not a test file): pytest puts tests/ on sys.path, so tests say `from helpers import ...`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ocrlib.config import RunConfig, load_config


# ---------------------------------------------------------------- synthetic glyph formulas (models)
def glyph_batch(n: int = 16, seed: int = 0, *, vocab: int, glyph_size: tuple[int, int] = (16, 8),
                image_size: tuple[int, int] = (16, 64), lengths: tuple[int, int] = (3, 8), left: int = 0,
                pitch: int = 8, top: int = 0, jitter: int = 0, lengths_first: bool = True):
    """n random formulas of lengths[0]..lengths[1] tokens (ids 4..vocab-1) and images drawing each token
    as one fixed random glyph bitmap of `glyph_size`, left to right at x = left + pitch * j, y = top,
    each glyph moved up or down by up to `jitter` pixels (no jitter: no random draw).

    Targets are ids + eos (2) + pad (0), as `Vocab.encode_batch` makes them. With `lengths_first` all
    lengths are drawn before the glyph bitmaps and the targets are as wide as the longest formula + 1;
    otherwise the bitmaps are drawn first, each formula's length just before its tokens, and the targets
    are lengths[1] + 1 wide. The two orders keep the random streams (hence the data) of either use.
    """
    g = torch.Generator().manual_seed(seed)
    low, high = lengths
    if lengths_first:
        drawn = torch.randint(low, high + 1, (n,), generator=g).tolist()
        width = max(drawn) + 1
    else:
        drawn, width = None, high + 1
    glyphs = (torch.rand(vocab, *glyph_size, generator=g) > 0.5).float()
    images = torch.zeros(n, 1, *image_size)
    targets = torch.zeros(n, width, dtype=torch.long)
    gh, gw = glyph_size
    for i in range(n):
        length = drawn[i] if drawn is not None else int(torch.randint(low, high + 1, (1,), generator=g))
        tokens = torch.randint(4, vocab, (length,), generator=g)
        for j, tok in enumerate(tokens):
            y = top + (int(torch.randint(-jitter, jitter + 1, (1,), generator=g)) if jitter else 0)
            x = left + pitch * j
            images[i, 0, y:y + gh, x:x + gw] = glyphs[tok]
        targets[i, :length] = tokens
        targets[i, length] = 2  # eos, then pad (0)
    return images, targets


def sentence_accuracy(predicted: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of rows equal in full, after padding both to one length with the pad id 0."""
    width = max(predicted.size(1), targets.size(1))
    a = F.pad(predicted, (0, width - predicted.size(1)))
    b = F.pad(targets, (0, width - targets.size(1)))
    return (a == b).all(1).float().mean().item()


def overfit(model, images, targets, lr: float, max_steps: int, check_every: int, clip: float | None = None):
    """Adam on one batch until greedy sentence accuracy is 1.0 (checked every `check_every` steps) or
    `max_steps`; gradients clipped to norm `clip` if given. Returns (accuracy, step, loss)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    accuracy, step, loss = 0.0, 0, float("nan")
    for step in range(1, max_steps + 1):
        _, loss = model.forward_logits_loss(images, targets)
        optimizer.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if step % check_every == 0:
            accuracy = sentence_accuracy(model.decode(images).tokens, targets)
            if accuracy == 1.0:
                break
    return accuracy, step, loss.item() if torch.is_tensor(loss) else loss


# ---------------------------------------------------------------- tiny models of all five recognisers
VOCAB, MAX_LEN, H, W = 14, 8, 32, 96  # ids 0-3 are pad, sos, eos, unk; glyph tokens 4..13
TINY = {  # small enough to train in seconds on one CPU thread
    "satrn": dict(hidden=32, filter=64, encoder_layers=1, decoder_layers=1, heads=4, dropout=0.0),
    "attention": dict(channels=(8, 16, 16, 32), blocks=(1, 1, 1, 1), stem_channels=8, hidden=64, embed_dim=16,
                      attn_dim=32, dropout=0.0),
    "aster": dict(rectified_size=(H, W), loc_size=(16, 32), channels=(16, 32, 32), blocks=(1, 1, 1),
                  strides=((2, 2), (2, 2), (2, 1)), stem_channels=8, feature_height=1, lstm_hidden=32,
                  lstm_layers=1, dec_hidden=64, embed_dim=16, attn_dim=32, dropout=0.0),
    "srn": dict(channels=(16, 32, 32), blocks=(1, 1, 1), strides=((2, 2), (2, 2), (2, 2)), stem_channels=8,
                hidden=32, heads=4, filter=64, encoder_layers=1, gsrm_layers=1, dropout=0.0),
    "cstr": dict(channels=(16, 32, 32), blocks=(1, 1, 1), strides=((2, 2), (2, 2), (2, 2)), stem_channels=8,
                 head_channels=32, dropout=0.0),
}


def glyph_formulas(n: int = 16, max_tokens: int = 5, seed: int = 0):
    """n images of 2..max_tokens random glyphs (one fixed random 12x10 bitmap per token) in reading order,
    each glyph jittered vertically; targets = ids + eos + pad, as `Vocab.encode_batch` makes them."""
    return glyph_batch(n, seed, vocab=VOCAB, glyph_size=(12, 10), image_size=(H, W), lengths=(2, max_tokens),
                       left=4, pitch=18, top=10, jitter=6, lengths_first=False)


# ---------------------------------------------------------------- tiny dataset on disk and training config
ALPHABET = ["x", "y", "1", "2", "+", "=", "{", "}", "^", "(", ")"]


def write_dataset(folder: Path, n: int, seed: int, bad: int = 0) -> Path:
    """n images 32x96 whose stripes encode the tokens, gt.txt, source.txt; `bad` extra corrupt image files."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    lines, sources = [], []
    for i in range(n):
        tokens = list(rng.choice(ALPHABET, size=rng.integers(2, 7)))
        img = np.full((32, 96), 255, np.uint8)
        for j, token in enumerate(tokens):
            k = ALPHABET.index(token)
            img[4 + k: 28 - k // 2, 4 + 14 * j: 12 + 14 * j] = 0
        Image.fromarray(img).save(folder / "images" / f"{i:03d}.png")
        lines.append(f"{i:03d}.png\t{' '.join(tokens)}")
        sources.append(f"{i:03d}.png\t{'mathtext:dejavusans' if i % 2 else 'tex:cm'}")
    for i in range(bad):
        (folder / "images" / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        lines.append(f"bad{i}.png\tx + 1")
    (folder / "gt.txt").write_text("\n".join(lines) + "\n")
    (folder / "source.txt").write_text("\n".join(sources) + "\n")
    return folder


def tiny_config(train_dir, val_dir, **training) -> RunConfig:
    """Smoke SATRN with dropout, scheduled sampling and augmentation on, so resume must restore every RNG."""
    overrides = {"model.dropout": 0.1, "model.max_len": 12, "data.train": str(train_dir), "data.val": str(val_dir),
                 "data.augment": "light"}
    overrides.update({f"training.{key}": value for key, value in dict(
        dict(max_steps=6, batch_size=4, warmup_steps=2, eval_every=3, log_every=1, checkpoint_every=1,
             tf_ratio_start=0.9, tf_ratio_end=0.6, val_samples=0, budget_min=None, optimizer="adamp",
             bracket_penalty=0.1), **training).items()})
    return load_config("satrn", preset="smoke", overrides=overrides)


def save_tiny_checkpoint(folder: Path, vocab, path: Path):
    """A smoke SATRN (seeded weights) for `vocab`, saved as ocrlib.train would: (path, model)."""
    import torch

    from ocrlib.checkpoints import save_checkpoint
    from ocrlib.models import model_from_config

    config = tiny_config(folder, folder)
    torch.manual_seed(0)
    model = model_from_config(config, vocab)
    save_checkpoint({"model": model.state_dict(), "vocab": vocab.tokens, "config": config.to_dict()}, path)
    return path, model


# ---------------------------------------------------------------- InkML files (sources, eval)
INK = """<ink xmlns="http://www.w3.org/2003/InkML">
<traceFormat><channel name="X" type="decimal"/><channel name="Y" type="decimal"/>{extra_channel}</traceFormat>
<annotation type="writer">w7</annotation>
{truth}
<trace id="0">{t0}</trace>
<trace id="1">{t1}</trace>
<traceGroup xml:id="9"><annotation type="truth">Segmentation</annotation>
  <traceGroup xml:id="10"><annotation type="truth">x</annotation><traceView traceDataRef="0"/></traceGroup>
  <traceGroup xml:id="11"><annotation type="truth">\\lt</annotation>
    <traceView traceDataRef="1"/><traceView traceDataRef="{ref}"/></traceGroup>
</traceGroup>
</ink>
"""


def write_ink(tmp_path, name="KAIST/e1.inkml", truth='<annotation type="truth">$x \\lt 1$</annotation>',
              t0="10 20, 11.5 21, 12 22", t1="1 2, 3 4", ref="0", extra_channel=""):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(INK.format(truth=truth, t0=t0, t1=t1, ref=ref, extra_channel=extra_channel), encoding="utf-8")
    return path
