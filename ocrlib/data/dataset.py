"""FormulaDataset (images + token ids), collate, bucketed resumable batches, make_loader.

Batches are bucketed by `FormulaDataset.bucket_keys`: the resized image width for keep-aspect inputs
(so a batch pads little), the target length for fixed-size ones.

Bad input never stops a loop: a sample whose image cannot be used makes
`__getitem__` return None and counts one short reason in `dataset.skipped`;
`collate` drops the Nones and reports how many in `n_skipped`. In DataLoader
workers the counters live in the worker processes, so loops should sum the
batches' `n_skipped`; `dataset.skipped` is exact only with num_workers=0.
Batching by length follows pix2tex's `Im2LatexDataset` (lukas-blecher/LaTeX-OCR).
"""
from __future__ import annotations

import io
import logging
import math
import random
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from ocrlib.config import DataConfig
from ocrlib.data.augment import VERTICAL_RATIO, Augmenter, build_augment, vertical_fix as rotate_if_vertical
from ocrlib.data.sources import Sample, read_gt
from ocrlib.errors import BadInput
from ocrlib.tokens import Vocab

log = logging.getLogger(__name__)

MAX_PIXELS = 40_000_000  # refuse larger images from their header, before decoding (decompression bombs)
MIN_SIDE = 4  # a side shorter than this holds no readable symbol
MAX_WIDTH = DataConfig.max_width  # keep-aspect cap: wider images are squeezed to this width
WIDTH_MULTIPLE = 16  # keep-aspect batches are padded to a multiple of the backbones' largest stride
SKIP_LOG_LIMIT = 5  # log this many bad files per reason, then only count them
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


class BadImage(BadInput):
    """An image that cannot be used; `reason` is the short category counted in `FormulaDataset.skipped`."""

    def __init__(self, path: str | Path, reason: str, detail: str = ""):
        super().__init__(path, f"{reason} ({detail})" if detail else reason)
        self.reason = reason


def _to_gray(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 (H, W), black ink on white; transparency is composited on white paper."""
    if image.mode in _SIXTEEN_BIT or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        full = 65535.0 if image.mode in _SIXTEEN_BIT or values.max() > 255 else 255.0
        return np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8)
    if "A" in image.mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.array(image.convert("L"), dtype=np.uint8)


def load_gray(path: str | Path, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """Read an image file as uint8 (H, W), black ink on white; raise BadImage (with a short `reason`) when unusable.

    The pixel count is checked from the header before decoding, and PIL's own
    decompression-bomb warning/error is turned into the same BadImage.
    """
    path = Path(path)
    if not path.is_file():
        raise BadImage(path, "missing file")
    if path.stat().st_size == 0:
        raise BadImage(path, "empty file")
    return _decode_gray(path, path, max_pixels, min_side)


def gray_from_bytes(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS,
                    min_side: int = MIN_SIDE) -> np.ndarray:
    """`load_gray` for an image held in memory (an upload); `name` is what errors call it."""
    if not data:
        raise BadImage(name, "empty file")
    return _decode_gray(io.BytesIO(data), name, max_pixels, min_side)


def png_bytes(gray: np.ndarray) -> bytes:
    """A uint8 (H, W) image as PNG file bytes (what an upload carries; `gray_from_bytes` reads it back)."""
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG")
    return buffer.getvalue()


def _decode_gray(source, name: str | Path, max_pixels: int, min_side: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImage(name, "too many pixels", str(err)) from None
    except UnidentifiedImageError:
        raise BadImage(name, "not an image") from None
    except OSError as err:  # e.g. no permission to read
        raise BadImage(name, "unreadable file", str(err)) from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise BadImage(name, "too many pixels", f"{width}x{height} > {max_pixels}")
        if min(width, height) < min_side:
            raise BadImage(name, "too small", f"{width}x{height}")
        try:
            image.load()
            gray = _to_gray(ImageOps.exif_transpose(image))
        except Exception as err:  # PIL decoders raise OSError, SyntaxError, ValueError, EOFError, zlib.error...
            reason = "truncated image" if "truncated" in str(err).lower() else "corrupt image"
            raise BadImage(name, reason, f"{type(err).__name__}: {err}") from None
    if gray.min() == gray.max():
        raise BadImage(name, "blank image")
    return gray


def keep_aspect_width(w: int, h: int, height: int, max_width: int = MAX_WIDTH) -> int:
    """The width a w x h image gets when resized to `height` with its aspect ratio, capped at max_width."""
    return min(max_width, max(1, round(w * height / h)))


def padded_width(width: int, multiple: int = WIDTH_MULTIPLE) -> int:
    """`width` rounded up to a multiple of the backbones' largest stride, as batches are padded."""
    return math.ceil(width / multiple) * multiple


def resize(gray: np.ndarray, height: int, width: int | None = None, max_width: int = MAX_WIDTH) -> np.ndarray:
    """To (height, width), or keep-aspect when width is None: height fixed, width scaled, capped at max_width."""
    h, w = gray.shape
    if width is None:
        width = keep_aspect_width(w, h, height, max_width)
    shrink = width < w and height < h
    return cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_tensor(gray: np.ndarray, channels: int = 1) -> torch.Tensor:
    """uint8 (H, W) black-on-white -> float (C, H, W) in [0, 1] with bright ink, so zero padding is background."""
    ink = torch.from_numpy(1.0 - gray.astype(np.float32) / 255.0)  # (H, W)
    return ink.unsqueeze(0).repeat(channels, 1, 1)  # (C, H, W)


def prepare_image(gray: np.ndarray, height: int, width: int | None, max_width: int = MAX_WIDTH, channels: int = 1,
                  vertical_fix: bool = False, augment: Callable[[np.ndarray], np.ndarray] | None = None) -> torch.Tensor:
    """uint8 (H, W) black-on-white -> the model's (C, H, W): vertical fix, augmentation, resize, ink-bright."""
    if vertical_fix:
        gray = rotate_if_vertical(gray)
    if augment is not None:
        gray = augment(gray)
    return to_tensor(resize(gray, height, width, max_width), channels)


def model_input(gray: np.ndarray, config: DataConfig) -> torch.Tensor:
    """An image as a model trained with `config` sees it at inference (no augmentation)."""
    return prepare_image(gray, config.height, config.width, config.max_width, config.channels, config.vertical_fix)


def width_multiple_of(config: DataConfig) -> int:
    """What keep-aspect batches are padded to (fixed-size images need no rounding)."""
    return WIDTH_MULTIPLE if config.width is None else 1


class FormulaDataset(Dataset):
    """Formula images and their token ids, from a competition-layout folder or a list of Samples.

    Item: dict(image FloatTensor (C, H, W) in [0, 1], ink bright; target list[int] = ids + [eos];
    path str; source str; width int) or None for an unusable image (counted in `skipped`).
    Tokens missing from the vocabulary are encoded as unk and counted in `unknown_tokens`.
    Augmentation draws from a seed of (seed, epoch, index): the same item looks the
    same whichever worker loads it, and different in the next epoch (`set_epoch`).
    """

    def __init__(self, data: str | Path | Sequence[Sample], vocab: Vocab, height: int = DataConfig.height,
                 width: int | None = DataConfig.width, augment: str | Callable[[np.ndarray], np.ndarray] | None = None,
                 vertical_fix: bool = DataConfig.vertical_fix, channels: int = DataConfig.channels,
                 max_width: int = MAX_WIDTH, width_multiple: int = WIDTH_MULTIPLE, seed: int = 0,
                 max_pixels: int = MAX_PIXELS):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.root = None if isinstance(data, Sequence) and not isinstance(data, str) else Path(data)
        self.problems: list[tuple[str, str]] = []  # gt.txt lines read_gt refused
        if self.root is None:
            self.samples = list(data)
        else:
            self.samples, self.problems = read_gt(self.root)
            if self.problems:
                log.warning("%s: %d gt.txt lines skipped, e.g. %s", self.root, len(self.problems), self.problems[0])
        if not self.samples:
            detail = f": {len(self.problems)} gt.txt lines refused, e.g. {self.problems[0]}" if self.problems else ""
            raise BadInput(self.root or "<samples>", "no usable samples" + detail)
        self.vocab = vocab
        self.height, self.width, self.max_width, self.channels = height, width, max_width, channels
        self.width_multiple = width_multiple if width is None else 1  # fixed-size images need no rounding
        self.vertical_fix = vertical_fix
        self.augment = build_augment(augment, seed) if isinstance(augment, str) else augment
        self.seed, self.epoch, self.max_pixels = seed, 0, max_pixels
        self.unknown_tokens: Counter[str] = Counter()
        self.targets = [self._encode(sample.tokens) for sample in self.samples]
        if self.unknown_tokens:
            log.warning("%s tokens not in the vocabulary, encoded as unk: %s", sum(self.unknown_tokens.values()),
                        dict(self.unknown_tokens.most_common(10)))
        self.lengths = [len(target) for target in self.targets]
        self.skipped: Counter[str] = Counter()
        self._n_loaded = 0

    @classmethod
    def for_config(cls, data: str | Path | Sequence[Sample], vocab: Vocab, config: DataConfig,
                   augment: str | None = None, seed: int = 0) -> FormulaDataset:
        """The images as a model trained with this DataConfig sees them (augmented only when asked)."""
        return cls(data, vocab, height=config.height, width=config.width, augment=augment,
                   vertical_fix=config.vertical_fix, channels=config.channels, max_width=config.max_width, seed=seed)

    def _encode(self, tokens: list[str]) -> list[int]:
        ids = self.vocab.encode(tokens)
        unk_token = self.vocab.tokens[self.vocab.unk_id]
        self.unknown_tokens.update(t for t, i in zip(tokens, ids) if i == self.vocab.unk_id and t != unk_token)
        return ids + [self.vocab.eos_id]

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws (make_loader's sampler calls this for you)."""
        self.epoch = epoch

    def preprocess(self, gray: np.ndarray, index: int | None = None) -> torch.Tensor:
        """uint8 (H, W) -> (C, H, W): vertical fix, augmentation (seeded by index and epoch), resize, ink-bright."""
        augment = self.augment
        if isinstance(augment, Augmenter):
            augment = partial(augment, seed=None if index is None else self._sample_seed(index))
        return prepare_image(gray, self.height, self.width, self.max_width, self.channels, self.vertical_fix, augment)

    @cached_property
    def bucket_keys(self) -> list[int]:
        """Per sample, what batches are bucketed by: the width after the keep-aspect resize (read from the image
        header, vertical fix included; 0 when unreadable), or the target length for fixed-size inputs."""
        if self.width is not None:
            return self.lengths
        keys = []
        for sample in self.samples:
            try:
                with Image.open(sample.image) as img:
                    w, h = img.size
            except (OSError, Image.DecompressionBombError):
                keys.append(0)
                continue
            if self.vertical_fix and w / h < VERTICAL_RATIO:
                w, h = h, w
            keys.append(keep_aspect_width(w, h, self.height, self.max_width))
        return keys

    def _sample_seed(self, index: int) -> int:
        return int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        sample = self.samples[index]
        try:
            gray = load_gray(sample.image, self.max_pixels)
        except BadImage as err:
            self._skip(err)
            return None
        self._n_loaded += 1
        image = self.preprocess(gray, index)
        return {"image": image, "target": self.targets[index], "path": str(sample.image),
                "source": sample.source, "width": image.shape[-1]}

    def _skip(self, err: BadImage) -> None:
        self.skipped[err.reason] += 1
        if self.skipped[err.reason] <= SKIP_LOG_LIMIT:
            log.warning("skipped %s", err)
        if self._n_loaded == 0 and sum(self.skipped.values()) >= len(self):
            raise BadInput(self.root or "<samples>", f"no usable image among {len(self)} samples: {dict(self.skipped)}")


def pad_images(images: Sequence[torch.Tensor], width_multiple: int = WIDTH_MULTIPLE) -> torch.Tensor:
    """(C, H, W) images -> (B, C, H, W) zero-padded right/bottom to the largest, width rounded up to `width_multiple`
    (the backbones' stride, so an image alone and in a batch meet the same feature grid)."""
    height = max(image.shape[1] for image in images)
    width = padded_width(max(image.shape[2] for image in images), width_multiple)
    batch = torch.zeros(len(images), images[0].shape[0], height, width)  # zero = background
    for row, image in enumerate(images):
        batch[row, :, :image.shape[1], :image.shape[2]] = image
    return batch


def collate(batch: Sequence[dict[str, Any] | None], pad_id: int,
            width_multiple: int = WIDTH_MULTIPLE) -> dict[str, Any]:
    """Items -> dict(images (B, C, H, W) zero-padded right/bottom to the batch's max size (width rounded up to
    `width_multiple`), targets LongTensor (B, T) ids+eos padded with pad_id, lengths (B,), widths (B,) image widths
    before padding, paths, sources, n_skipped). Nones are dropped; when all are, B = 0."""
    items = [item for item in batch if item is not None]
    n_skipped = len(batch) - len(items)
    if not items:
        empty = torch.zeros(0, dtype=torch.long)
        return {"images": torch.zeros(0, 1, 0, 0), "targets": empty.view(0, 0), "lengths": empty,
                "widths": empty, "paths": [], "sources": [], "n_skipped": n_skipped}
    images = pad_images([item["image"] for item in items], width_multiple)  # (B, C, H, W)
    lengths = torch.tensor([len(item["target"]) for item in items], dtype=torch.long)
    targets = torch.full((len(items), int(lengths.max())), pad_id, dtype=torch.long)  # (B, T)
    for row, item in enumerate(items):
        targets[row, : len(item["target"])] = torch.tensor(item["target"], dtype=torch.long)
    return {"images": images, "targets": targets, "lengths": lengths,
            "widths": torch.tensor([item["width"] for item in items], dtype=torch.long),
            "paths": [item["path"] for item in items], "sources": [item["source"] for item in items],
            "n_skipped": n_skipped}


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar keys (image width or target length): shuffle, sort by key within chunks of ~50 batches,
    cut, shuffle the batches.

    The order is a function of (seed, epoch) only, and `state_dict()` = {epoch, position}
    (batches handed out this epoch) lets a resumed run continue with the identical next batch.
    With DataLoader workers the loader prefetches, so pass the batches the loop really
    consumed: `state_dict(position=steps_done_this_epoch)`.
    """

    CHUNK_BATCHES = 50

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False, on_epoch: Callable[[int], None] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.shuffle, self.drop_last = batch_size, seed, shuffle, drop_last
        self.on_epoch = on_epoch  # e.g. dataset.set_epoch, so augmentation follows the sampler's epoch
        self.epoch = self.position = self._resume_at = 0

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch; a resumed position survives only a call with the resumed epoch."""
        if epoch != self.epoch:
            self._resume_at = self.position = 0
        self.epoch = epoch
        if self.on_epoch is not None:
            self.on_epoch(epoch)

    def batches(self, epoch: int) -> list[list[int]]:
        """Every batch of an epoch, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        chunk = self.batch_size * self.CHUNK_BATCHES  # a multiple of batch_size: only the last batch can be short
        out: list[list[int]] = []
        for start in range(0, n, chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            out += [part[i : i + self.batch_size].tolist() for i in range(0, len(part), self.batch_size)]
        if self.drop_last:
            out = [batch for batch in out if len(batch) == self.batch_size]
        return [out[i] for i in rng.permutation(len(out))] if self.shuffle else out

    def __iter__(self):
        batches = self.batches(self.epoch)
        start, self._resume_at = self._resume_at, 0
        self.position = start
        for position in range(start, len(batches)):
            self.position = position + 1
            yield batches[position]

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def state_dict(self, position: int | None = None) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position if position is None else position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.set_epoch(int(state["epoch"]))
        self.position = self._resume_at = int(state["position"])


def padded_share(widths: Sequence[int], batches: Sequence[Sequence[int]], multiple: int = WIDTH_MULTIPLE) -> float:
    """Share of input pixel columns that are padding when `batches` (index lists) of images `widths` wide are
    padded to their widest, rounded up to `multiple` (as `collate` does)."""
    widths = np.asarray(widths)
    padded = image = 0
    for batch in batches:
        batch_width = padded_width(int(widths[batch].max()), multiple)
        padded += batch_width * len(batch)
        image += int(widths[batch].sum())
    return 1 - image / padded if padded else 0.0


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: seed numpy/random from the loader's generator; one thread per worker."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)
    cv2.setNumThreads(0)


def make_loader(dataset: FormulaDataset, batch_size: int, seed: int = 0, shuffle: bool = True, num_workers: int = 0,
                drop_last: bool = False, batch_sampler=None) -> DataLoader:
    """A DataLoader over length buckets; `loader.batch_sampler` has set_epoch / state_dict / load_state_dict
    (set_epoch also moves the dataset's augmentation epoch). `batch_sampler` replaces the default bucket
    sampler (e.g. one sharded across processes); the loader draws nothing from the global RNG either way."""
    sampler = batch_sampler or BucketBatchSampler(dataset.bucket_keys, batch_size, seed, shuffle, drop_last,
                                                  on_epoch=dataset.set_epoch)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                      collate_fn=partial(collate, pad_id=dataset.vocab.pad_id, width_multiple=dataset.width_multiple),
                      generator=torch.Generator().manual_seed(seed), worker_init_fn=seed_worker,
                      pin_memory=torch.cuda.is_available())
