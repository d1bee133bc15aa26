"""Small plotting helpers shared by the notebooks (seaborn style, matplotlib figures returned to the caller)."""
from __future__ import annotations

import random
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from PIL import Image

sns.set_theme(style="whitegrid", context="notebook")


def image_grid(images: list[np.ndarray], titles: list[str] | None = None, ncols: int = 4,
               cell: tuple[float, float] = (3.2, 1.3), suptitle: str | None = None):
    """Grayscale images in a grid, each titled (titles are shortened to fit)."""
    nrows = max(1, -(-len(images) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell[0] * ncols, cell[1] * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        if titles:  # each line shortened to what fits the cell at font size 8
            width = int(cell[0] * 15)
            lines = [line if len(line) <= width else line[: width - 3] + "..." for line in titles[i].splitlines()]
            ax.set_title("\n".join(lines), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def sample_images(folder: str | Path, n: int = 8, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """n random (image, label) pairs from a competition-layout folder, chosen by seed."""
    from ocrlib.data.sources import read_gt

    samples, _ = read_gt(folder)
    chosen = random.Random(seed).sample(samples, min(n, len(samples)))
    images = [np.asarray(Image.open(s.image).convert("L")) for s in chosen]
    return images, [" ".join(s.tokens) for s in chosen]


def show_samples(folder: str | Path, n: int = 8, seed: int = 0, ncols: int = 4, title: str | None = None):
    images, labels = sample_images(folder, n, seed)
    return image_grid(images, labels, ncols=ncols, suptitle=title or Path(folder).name)


def training_log(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run's metrics.jsonl: every logged step, and the steps that ran a validation (none: an empty frame)."""
    log = pd.read_json(Path(run_dir) / "metrics.jsonl", lines=True)
    if "val_sa" not in log:
        log["val_sa"] = np.nan
    return log, log.dropna(subset=["val_sa"])


def validation_curves(ax, runs: dict[str, str | Path], x: str = "minutes", y: str = "val_sa", ylabel: str = "SA",
                      title: str | None = None):
    """Validation `y` of each run (legend label -> run folder) against wall-clock minutes or steps (x: "minutes" or
    "step")."""
    if x not in ("minutes", "step"):
        raise ValueError(f"x must be 'minutes' or 'step', not {x!r}")
    for label, run_dir in runs.items():
        _, val = training_log(run_dir)
        ax.plot(val["elapsed_s"] / 60 if x == "minutes" else val["step"], val[y], marker="o", label=label)
    against = "wall-clock time" if x == "minutes" else "steps"
    ax.set(title=title or f"validation {ylabel} against {against}", xlabel=x, ylabel=ylabel)
    if len(runs) > 1:
        ax.legend(fontsize=8)
    return ax


def confusion_heatmap(confusion, ax=None, title: str = "substituted tokens"):
    """A `metrics.token_confusion` frame as an annotated heat map (rows true, columns predicted); returns the Axes."""
    if ax is None:
        size = 1.0 + 0.45 * len(confusion)
        _, ax = plt.subplots(figsize=(size + 1.5, size))
    ax.set_title(title)
    if confusion.empty:  # a perfect (or empty) evaluation: seaborn cannot draw a 0x0 map
        ax.text(0.5, 0.5, "no substitutions", ha="center", va="center", transform=ax.transAxes)
        return ax

    def shown(tokens):  # tokens as written: a '$' in a LaTeX token must not switch matplotlib into mathtext
        return [str(t).replace("$", r"\$") for t in tokens]

    sns.heatmap(confusion, annot=True, fmt="d", cmap="Reds", cbar=False, square=True, ax=ax,
                xticklabels=shown(confusion.columns), yticklabels=shown(confusion.index))
    ax.set(xlabel="predicted", ylabel="true")  # after seaborn, which would label the axes by the index names
    return ax


def confidence_html(reading) -> str:
    """A Reading's tokens as HTML, each on a background from red (unsure) to green (sure), its probability on hover;
    the end-of-formula token shown as ⏎ when the model emitted it."""
    from html import escape

    tokens = reading.tokens + (["⏎"] if reading.complete else [])
    spans = [f'<span title="p = {p:.3f}" style="background:hsl({round(120 * p)},70%,82%);padding:0 .3em;'
             f'margin:0 .1em;border-radius:3px;font-family:monospace">{escape(t)}</span>'
             for t, p in zip(tokens, reading.confidence)]
    return "<div>" + "".join(spans) + "</div>"


def attention_overlays(gray: np.ndarray, reading, max_tokens: int = 12, ncols: int = 4):
    """Where the model looked for each token: its attention map stretched over the image (first `max_tokens`)."""
    if reading.attention is None:
        raise ValueError("this reading has no attention maps (the model does not attend)")
    tokens = (reading.tokens + ["⏎"])[:min(max_tokens, len(reading.attention))]
    nrows = -(-len(tokens) // ncols)
    aspect = gray.shape[1] / gray.shape[0]
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * min(1.2 * aspect, 6), nrows * 1.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    extent = (0, gray.shape[1], gray.shape[0], 0)  # the map's grid stretched over the whole image
    for ax, token, attention, p in zip(axes.flat, tokens, reading.attention, reading.confidence):
        ax.imshow(gray, cmap="gray", vmin=0, vmax=255, extent=extent)
        ax.imshow(attention, cmap="inferno", alpha=0.55, extent=extent, interpolation="bilinear")
        ax.set_title(f"{token}  (p {p:.2f})", fontsize=9)
    fig.tight_layout()
    return fig
