"""Augmentation presets: uint8 (H, W) in and out, 'none' is identity, seeded = deterministic; vertical fix."""
from __future__ import annotations

import warnings

import albumentations as A
import numpy as np
import pytest

from ocrlib.data.augment import PRESETS, AdaptiveThreshold, aspect_ratio, build_augment, ink_density, vertical_fix


@pytest.fixture(scope="module")
def formula_image() -> np.ndarray:
    """Black strokes on white paper, (48, 200)."""
    rng = np.random.default_rng(0)
    img = np.full((48, 200), 255, np.uint8)
    img[14:34, 10:190] = rng.integers(0, 90, (20, 180), dtype=np.uint8)
    img[::6, :] = 255  # gaps, so the image has edges to sharpen/blur
    return img


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_keeps_uint8_2d_and_shape(preset, formula_image):
    aug = build_augment(preset, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated albumentations arguments
        outs = [aug(formula_image) for _ in range(20)]
    for out in outs:
        assert out.dtype == np.uint8 and out.shape == formula_image.shape
    changed = sum(not np.array_equal(out, formula_image) for out in outs)
    assert changed == 0 if preset == "none" else changed > 0


def test_none_is_identity(formula_image):
    assert np.array_equal(build_augment("none", seed=0)(formula_image), formula_image)


@pytest.mark.parametrize("preset", ["light", "competition", "heavy"])
def test_same_seed_same_outputs(preset, formula_image):
    a, b, c = build_augment(preset, 7), build_augment(preset, 7), build_augment(preset, 8)
    outs_a = [a(formula_image) for _ in range(8)]
    outs_b = [b(formula_image) for _ in range(8)]
    outs_c = [c(formula_image) for _ in range(8)]
    assert all(np.array_equal(x, y) for x, y in zip(outs_a, outs_b))
    assert not all(np.array_equal(x, y) for x, y in zip(outs_a, outs_c))


def test_per_call_seed_is_a_pure_function(formula_image):
    aug = build_augment("heavy", seed=0)
    first = aug(formula_image, seed=11)
    aug(formula_image)  # advance the stream
    assert np.array_equal(aug(formula_image, seed=11), first)
    assert any(not np.array_equal(aug(formula_image, seed=s), first) for s in range(12, 16))


def test_heavy_changes_more_than_light(formula_image):
    def mean_change(preset: str) -> float:
        aug = build_augment(preset, 0)
        return float(np.mean([np.abs(aug(formula_image).astype(int) - formula_image).mean() for _ in range(40)]))
    assert mean_change("heavy") > mean_change("light")


def test_unknown_preset_and_bad_input():
    with pytest.raises(ValueError, match="known: none, light"):
        build_augment("extreme", 0)
    with pytest.raises(ValueError, match="uint8"):
        build_augment("light", 0)(np.zeros((4, 4), np.float32))


def test_adaptive_threshold_binarises(formula_image):
    gradient = np.tile(np.linspace(120, 250, 200).astype(np.uint8), (48, 1))  # uneven lighting
    img = np.minimum(gradient, formula_image)
    out = A.Compose([AdaptiveThreshold(p=1.0)], seed=0)(image=img)["image"]
    assert out.shape == img.shape and set(np.unique(out)) <= {0, 255}
    assert out[:5].mean() > 250  # the bright paper margin turns white
    assert (out[14:34, 10:190] == 0).mean() > 0.3  # ink stays black


def test_vertical_fix_rotates_tall_images_only():
    tall = np.arange(100 * 60, dtype=np.uint8).reshape(100, 60)  # w/h = 0.6
    rotated = vertical_fix(tall)
    assert rotated.shape == (60, 100) and rotated.flags.c_contiguous
    assert np.array_equal(rotated, np.rot90(tall))
    for shape in [(100, 75), (100, 100), (40, 300)]:  # w/h = 0.75 is not vertical
        img = np.zeros(shape, np.uint8)
        assert vertical_fix(img) is img


def test_helpers():
    img = np.full((10, 40), 255, np.uint8)
    img[:, :10] = 0
    assert aspect_ratio(img) == 4.0
    assert ink_density(img) == 0.25


def test_named_transforms_apply_each_augmentation_alone():
    from ocrlib.data.augment import named_transforms

    rng = np.random.default_rng(0)
    img = np.full((40, 120), 255, np.uint8)
    img[15:25, 10:110] = rng.integers(0, 60, (10, 100), dtype=np.uint8)
    single = named_transforms("competition", seed=0)
    assert {"Rotate", "Affine", "CLAHE", "Sharpen", "Emboss", "RandomBrightnessContrast", "GaussNoise", "Blur",
            "GaussianBlur", "AdaptiveThreshold", "ImageCompression"} == set(single)
    for name, transform in single.items():
        out = transform(img)
        assert out.dtype == np.uint8 and out.ndim == 2, name
        assert not np.array_equal(out, img), f"{name} applied with p=1 must change the image"
