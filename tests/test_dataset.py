"""FormulaDataset, collate, BucketBatchSampler, make_loader: bad input skipped and counted, shapes, resume."""
from __future__ import annotations

import struct
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ocrlib.data.dataset import (
    BucketBatchSampler,
    FormulaDataset,
    collate,
    load_gray,
    make_loader,
    padded_share,
)
from ocrlib.data.sources import Sample
from ocrlib.errors import BadInput
from ocrlib.tokens import Vocab

TOKENS = ["x", "^", "{", "2", "}", "+", "1"]


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    return Vocab.build([TOKENS])


def formula_array(height: int = 32, width: int = 96, seed: int = 0) -> np.ndarray:
    """uint8 (H, W): dark random strokes on white paper."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width), 255, np.uint8)
    img[height // 4 : 3 * height // 4, 2 : width - 2] = rng.integers(0, 80, (height // 2, width - 4), dtype=np.uint8)
    return img


def save_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height with no real pixel data: a decompression bomb stand-in."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated_jpeg(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 128), dtype=np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt_png(path: Path) -> Path:
    save_png(path, np.random.default_rng(2).integers(0, 255, (64, 128), dtype=np.uint8))
    data = bytearray(path.read_bytes())
    start = data.find(b"IDAT") + 30
    data[start : start + 30] = bytes(30)  # zero a run of compressed pixel data
    path.write_bytes(bytes(data))
    return path


BAD_CASES = {  # name -> (make the file at path, exact reason in dataset.skipped)
    "zero-byte png": (lambda p: _write(p, b""), "empty file"),
    "text file named .png": (lambda p: _write(p, b"a gt line, not pixels\n"), "not an image"),
    "truncated jpeg": (_truncated_jpeg, "truncated image"),
    "corrupt png data": (_corrupt_png, "corrupt image"),
    "1x1 image": (lambda p: save_png(p, np.zeros((1, 1), np.uint8)), "too small"),
    "bomb header 20000x20000": (lambda p: png_header_only(p, 20000, 20000), "too many pixels"),
    "bomb header 10000x10000 (PIL warns)": (lambda p: png_header_only(p, 10000, 10000), "too many pixels"),
    "over our limit 8000x6000": (lambda p: png_header_only(p, 8000, 6000), "too many pixels"),
    "blank white image": (lambda p: save_png(p, np.full((32, 96), 255, np.uint8)), "blank image"),
    "missing file": (lambda p: p, "missing file"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_skipped_with_its_reason(case, tmp_path, vocab):
    make, reason = BAD_CASES[case]
    good = save_png(tmp_path / "good.png", formula_array())
    bad = make(tmp_path / ("bad.jpg" if "jpeg" in case else "bad.png"))
    ds = FormulaDataset([Sample(good, TOKENS), Sample(bad, TOKENS)], vocab, height=32, width=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ds[0] is not None
        assert ds[1] is None
    assert not caught  # no DecompressionBombWarning (or any other) escapes
    assert ds.skipped == Counter({reason: 1})
    batch = collate([ds[0], ds[1]], vocab.pad_id)
    assert batch["n_skipped"] == 1 and batch["paths"] == [str(good)]
    with pytest.raises(BadInput, match=reason):
        load_gray(bad)


def _ink_left_paper_right(mode: str) -> Image.Image:
    """20x40 image in `mode`: left half black ink, right half paper (white, or transparent where the mode allows)."""
    left = np.zeros((20, 20), np.uint8)
    if mode == "RGBA":  # transparent *black* paper: must composite to white, not to ink
        rgba = np.zeros((20, 40, 4), np.uint8)
        rgba[:, :20, 3] = 255
        return Image.fromarray(rgba, "RGBA")
    if mode == "LA":
        la = np.zeros((20, 40, 2), np.uint8)
        la[:, :20, 1] = 255
        return Image.fromarray(la, "LA")
    if mode == "I;16":
        return Image.fromarray(np.hstack([left.astype(np.uint16), np.full((20, 20), 65535, np.uint16)]))
    gray = Image.fromarray(np.hstack([left, np.full((20, 20), 255, np.uint8)]))
    if mode == "P-transparent":  # palette index 1 = transparent black
        pal = Image.fromarray(np.hstack([left, np.ones((20, 20), np.uint8)]), "P")
        pal.putpalette([0, 0, 0] * 2 + [255, 255, 255] * 254)
        pal.info["transparency"] = 1
        return pal
    return gray.convert(mode)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "I;16", "P", "P-transparent", "1", "CMYK"])
def test_image_modes_become_ink_bright(mode, tmp_path, vocab):
    image = _ink_left_paper_right(mode)
    path = tmp_path / ("img.jpg" if mode == "CMYK" else "img.png")
    image.save(path, **({"transparency": 1} if mode == "P-transparent" else {}))
    gray = load_gray(path)
    assert gray.dtype == np.uint8 and gray.shape == (20, 40)
    assert gray[:, :18].max() < 30 and gray[:, 22:].min() > 225
    ds = FormulaDataset([Sample(path, TOKENS)], vocab, height=20, width=40, vertical_fix=False)
    image_t = ds[0]["image"]  # (1, 20, 40)
    assert image_t.dtype == torch.float32 and image_t.shape == (1, 20, 40)
    assert image_t[0, :, :18].min() > 0.85 and image_t[0, :, 22:].max() < 0.15


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32896, 65535, 65535]] * 8, np.uint16)
    gray = load_gray(save_png(tmp_path / "s.png", values), min_side=1)
    assert gray[0].tolist() == [0, 128, 255, 255]


def test_unknown_tokens_are_unk_and_counted(tmp_path, vocab):
    path = save_png(tmp_path / "a.png", formula_array())
    ds = FormulaDataset([Sample(path, ["x", "\\beta", "+", "\\beta", "\\gamma"])], vocab, height=32, width=None)
    assert ds[0]["target"] == vocab.encode(["x"]) + [vocab.unk_id, vocab.encode(["+"])[0], vocab.unk_id,
                                                       vocab.unk_id, vocab.eos_id]
    assert ds.unknown_tokens == Counter({"\\beta": 2, "\\gamma": 1})
    assert not ds.skipped


def _competition_folder(root: Path, rows: list[tuple[str, np.ndarray | None, str]]) -> Path:
    """root/images/<name> + root/gt.txt `name<TAB>tokens`; an array of None writes no image."""
    (root / "images").mkdir(parents=True)
    for name, array, _ in rows:
        if array is not None:
            save_png(root / "images" / name, array)
    (root / "gt.txt").write_text("".join(f"{name}\t{label}\n" for name, _, label in rows), encoding="utf-8")
    return root


def test_folder_layout_and_empty_folder(tmp_path, vocab):
    root = _competition_folder(tmp_path / "set", [
        ("a.png", formula_array(seed=1), "x ^ { 2 }"),
        ("b.png", formula_array(seed=2), "x + 1"),
        ("gone.png", None, "x"),  # read_gt drops it and reports the line
    ])
    ds = FormulaDataset(root, vocab, height=32, width=128)
    assert len(ds) == 2 and len(ds.problems) == 1
    assert ds[1]["target"] == vocab.encode(["x", "+", "1"]) + [vocab.eos_id]
    assert ds[0]["path"].endswith("a.png") and ds[0]["source"] == "printed"

    empty = _competition_folder(tmp_path / "empty", [("gone.png", None, "x")])
    with pytest.raises(BadInput, match=str(empty)):
        FormulaDataset(empty, vocab)


def test_all_images_bad_raises_bad_input(tmp_path, vocab):
    samples = [Sample(tmp_path / f"missing{i}.png", TOKENS) for i in range(3)]
    ds = FormulaDataset(samples, vocab)
    assert ds[0] is None and ds[1] is None
    with pytest.raises(BadInput, match="no usable image among 3"):
        ds[2]


def test_keep_aspect_fixed_size_channels_and_vertical_fix(tmp_path, vocab):
    wide = save_png(tmp_path / "wide.png", formula_array(32, 100))
    very_wide = save_png(tmp_path / "very_wide.png", formula_array(16, 3000))
    tall = save_png(tmp_path / "tall.png", formula_array(100, 40))
    samples = [Sample(p, TOKENS) for p in (wide, very_wide, tall)]

    keep = FormulaDataset(samples, vocab, height=64, width=None, max_width=800, vertical_fix=True)
    assert [keep[i]["image"].shape for i in range(3)] == [(1, 64, 200), (1, 64, 800), (1, 64, 160)]
    upright = FormulaDataset(samples, vocab, height=64, width=None)  # the default: no vertical fix
    assert upright[2]["image"].shape == (1, 64, 26)  # round(40 * 64 / 100)

    fixed = FormulaDataset(samples, vocab, height=48, width=160, channels=3)
    for i in range(3):
        image = fixed[i]["image"]
        assert image.shape == (3, 48, 160)
        assert torch.equal(image[0], image[2])
        assert 0.0 <= image.min() and image.max() <= 1.0


def test_collate_pads_images_and_targets(tmp_path, vocab):
    paths = [save_png(tmp_path / f"{w}.png", formula_array(32, w, seed=w)) for w in (40, 90, 130)]
    samples = [Sample(paths[0], ["x"]), Sample(paths[1], TOKENS), Sample(paths[2], ["1", "+", "1"])]
    ds = FormulaDataset(samples, vocab, height=32, width=None)
    items = [ds[0], None, ds[1], ds[2]]
    batch = collate(items, vocab.pad_id, width_multiple=16)
    assert batch["images"].shape == (3, 1, 32, 144)  # max width 130 rounded up to 16
    assert batch["widths"].tolist() == [40, 90, 130]
    assert batch["images"][0, :, :, 40:].abs().sum() == 0  # padding is background (0)
    assert batch["lengths"].tolist() == [2, 8, 4]
    assert batch["targets"].shape == (3, 8)
    assert batch["targets"][0].tolist() == vocab.encode(["x"]) + [vocab.eos_id] + [vocab.pad_id] * 6
    assert batch["n_skipped"] == 1 and batch["sources"] == ["printed"] * 3
    empty = collate([None, None], vocab.pad_id)
    assert empty["images"].shape[0] == 0 and empty["paths"] == [] and empty["n_skipped"] == 2
    assert make_loader(ds, 2, seed=0).collate_fn.keywords["width_multiple"] == 16
    fixed = FormulaDataset(samples, vocab, height=32, width=100)
    assert make_loader(fixed, 2, seed=0).collate_fn([fixed[0]])["images"].shape == (1, 1, 32, 100)


def test_bucketing_covers_every_index_once_with_similar_lengths():
    lengths = np.random.default_rng(0).integers(1, 150, 2000).tolist()
    sampler = BucketBatchSampler(lengths, batch_size=16, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 125
    assert sorted(i for batch in batches for i in batch) == list(range(2000))
    spread = np.mean([np.ptp([lengths[i] for i in batch]) for batch in batches])
    random_spread = np.mean([np.ptp(lengths[i : i + 16]) for i in range(0, 2000, 16)])
    assert spread < 0.2 * random_spread
    assert batches == list(BucketBatchSampler(lengths, 16, seed=3))  # deterministic per seed
    sampler.set_epoch(1)
    assert list(sampler) != batches  # a new order each epoch
    dropped = BucketBatchSampler(lengths[:1010], 16, seed=0, drop_last=True)
    assert len(list(dropped)) == len(dropped) == 63 and all(len(b) == 16 for b in dropped)
    ordered = list(BucketBatchSampler(lengths, 16, shuffle=False))
    assert ordered == list(BucketBatchSampler(lengths, 16, seed=99, shuffle=False))


def test_keep_aspect_batches_are_bucketed_by_resized_width(tmp_path, vocab):
    widths = [40, 300, 90, 310, 45, 95]  # at height 32; the tall one below turns sideways
    paths = [save_png(tmp_path / f"{i}.png", formula_array(32, w, seed=i)) for i, w in enumerate(widths)]
    tall = save_png(tmp_path / "tall.png", formula_array(100, 40))
    samples = [Sample(p, TOKENS) for p in paths + [tall]]
    keep = FormulaDataset(samples, vocab, height=32, width=None, max_width=305, vertical_fix=True)
    assert keep.bucket_keys == [40, 300, 90, 305, 45, 95, 80]  # capped at max_width; tall: 100 x 40 -> 80 x 32
    assert keep.bucket_keys == [keep[i]["width"] for i in range(7)]  # the header agrees with the loaded image
    batches = make_loader(keep, 2, seed=0, shuffle=False).batch_sampler.batches(0)
    assert [sorted(keep.bucket_keys[i] for i in b) for b in batches] == [[40, 45], [80, 90], [95, 300], [305]]
    assert FormulaDataset(samples, vocab, height=32, width=64).bucket_keys == keep.lengths  # fixed size: lengths
    # padding: [40, 45] -> 48 wide, [80, 90] -> 96, [95, 300] -> 304, [305] -> 320
    expected = 1 - sum(keep.bucket_keys) / (2 * 48 + 2 * 96 + 2 * 304 + 320)
    assert padded_share(keep.bucket_keys, batches) == pytest.approx(expected)
    assert padded_share([64, 64], [[0, 1]]) == 0.0


def test_sampler_resumes_mid_epoch_with_identical_batches():
    lengths = np.random.default_rng(1).integers(1, 60, 300).tolist()
    full = BucketBatchSampler(lengths, 8, seed=5)
    full.set_epoch(2)
    expected = list(full)
    first = BucketBatchSampler(lengths, 8, seed=5)
    first.set_epoch(2)
    iterator = iter(first)
    head = [next(iterator) for _ in range(7)]
    state = first.state_dict()
    assert state == {"epoch": 2, "position": 7}
    resumed = BucketBatchSampler(lengths, 8, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a training loop calls this at the top of the epoch: keeps the position
    assert head + list(resumed) == expected
    resumed.set_epoch(3)  # the next epoch starts from its first batch
    assert len(list(resumed)) == len(resumed)


@pytest.fixture
def small_set(tmp_path) -> list[Sample]:
    widths = [40, 60, 80, 100, 120, 140, 70, 50, 90, 110]
    samples = [Sample(save_png(tmp_path / f"{i}.png", formula_array(32, w, seed=i)), TOKENS[: 1 + i % 7])
               for i, w in enumerate(widths)]
    (tmp_path / "3.png").write_bytes(b"")  # one bad image
    return samples


def _epoch(loader, epoch: int, skip: int = 0) -> list[dict]:
    loader.batch_sampler.set_epoch(epoch)
    return list(loader)[skip:]


def test_loader_resume_gives_identical_remaining_batches(small_set, vocab):
    ds = FormulaDataset(small_set, vocab, height=32, width=None, augment="heavy", seed=1)
    expected = _epoch(make_loader(ds, 3, seed=4), epoch=1)
    assert sum(batch["n_skipped"] for batch in expected) == 1

    interrupted = make_loader(ds, 3, seed=4)
    interrupted.batch_sampler.set_epoch(1)
    iterator = iter(interrupted)
    next(iterator), next(iterator)
    state = interrupted.batch_sampler.state_dict()

    restarted = make_loader(FormulaDataset(small_set, vocab, height=32, width=None, augment="heavy", seed=1), 3, seed=4)
    restarted.batch_sampler.load_state_dict(state)
    rest = _epoch(restarted, epoch=1)
    assert len(rest) == len(expected) - 2
    for got, want in zip(rest, expected[2:]):
        assert got["paths"] == want["paths"]
        assert torch.equal(got["images"], want["images"])  # the augmentation too
        assert torch.equal(got["targets"], want["targets"])


def test_augmentation_is_deterministic_through_the_dataset_and_workers(small_set, vocab):
    ds = FormulaDataset(small_set, vocab, height=32, width=None, augment="heavy", seed=2)
    plain = FormulaDataset(small_set, vocab, height=32, width=None)
    first = [ds[i]["image"] for i in (0, 1, 2)]
    assert all(torch.equal(ds[i]["image"], first[k]) for k, i in enumerate((0, 1, 2)))
    assert any(not torch.equal(ds[i]["image"], plain[i]["image"]) for i in range(10) if i != 3)
    ds.set_epoch(1)
    assert any(not torch.equal(ds[i]["image"], first[k]) for k, i in enumerate((0, 1, 2)))
    assert ds.skipped == Counter() and plain.skipped == Counter()

    in_process = _epoch(make_loader(ds, 4, seed=0), epoch=5)
    in_workers = _epoch(make_loader(ds, 4, seed=0, num_workers=2), epoch=5)
    assert [b["paths"] for b in in_workers] == [b["paths"] for b in in_process]
    assert all(torch.equal(a["images"], b["images"]) for a, b in zip(in_process, in_workers))
    assert sum(b["n_skipped"] for b in in_workers) == 1  # counted in collate, whatever process loaded it
    assert ds.skipped == Counter({"empty file": 1})  # the in-process epoch only
