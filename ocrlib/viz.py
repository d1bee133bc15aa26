"""Small plotting helpers shared by the notebooks (seaborn style, matplotlib figures returned to the caller)."""
from __future__ import annotations

import random
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
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
