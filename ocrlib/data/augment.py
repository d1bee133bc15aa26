"""Image augmentation presets (albumentations 2) and the vertical-image fix.

The presets follow the competition team's list: rotate, CLAHE, sharpen, emboss,
random brightness/contrast, Gaussian noise, adaptive-threshold binarisation,
shear, blur and JPEG compression. Every augmenter works on grayscale uint8
images (H, W), black ink on white, and returns the same kind of image.
"""
from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

PRESETS = ("none", "light", "competition", "heavy")
WHITE = 255  # fill for pixels that geometric transforms uncover: paper, not ink
VERTICAL_RATIO = 0.75  # width / height below this: the image was photographed sideways


class AdaptiveThreshold(A.ImageOnlyTransform):
    """Binarise with cv2.adaptiveThreshold (Gaussian-weighted local mean minus `c`).

    Mimics scanned / photocopied exams: the paper turns pure white, ink pure black.
    """

    def __init__(self, block_size: tuple[int, int] = (11, 31), c: tuple[float, float] = (2.0, 10.0), p: float = 0.5):
        super().__init__(p=p)
        self.block_size = block_size
        self.c = c

    def get_params(self) -> dict[str, Any]:
        low, high = self.block_size
        block = self.py_random.randint(low // 2, high // 2) * 2 + 1  # odd, as OpenCV requires
        return {"block": block, "c": self.py_random.uniform(*self.c)}

    def apply(self, img: np.ndarray, block: int = 11, c: float = 2.0, **params: Any) -> np.ndarray:
        gray = img[..., 0] if img.ndim == 3 else img  # albumentations may hand (H, W, 1)
        out = cv2.adaptiveThreshold(gray, WHITE, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, block, c)
        return out.reshape(img.shape)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("block_size", "c")


def _transforms(preset: str) -> list[A.BasicTransform]:
    """The transform list of a preset; `heavy` is `competition` with larger ranges and probabilities."""
    if preset == "light":
        return [
            A.Rotate(limit=2, border_mode=cv2.BORDER_CONSTANT, fill=WHITE, p=0.3),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.3),
            A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.3, 0.8), p=0.2),
        ]
    if preset not in ("competition", "heavy"):
        raise ValueError(f"unknown augmentation preset {preset!r}; known: {', '.join(PRESETS)}")
    k = 2.0 if preset == "heavy" else 1.0  # magnitude scale
    q = 1.6 if preset == "heavy" else 1.0  # probability scale
    return [
        A.Rotate(limit=4 * k, border_mode=cv2.BORDER_CONSTANT, fill=WHITE, p=0.3 * q),
        A.Affine(shear={"x": (-8 * k, 8 * k), "y": (-2 * k, 2 * k)}, border_mode=cv2.BORDER_CONSTANT,
                 fill=WHITE, p=0.3 * q),
        A.OneOf([
            A.CLAHE(clip_limit=2.0 * k, tile_grid_size=(8, 8)),
            A.Sharpen(alpha=(0.2, min(0.5 * k, 1.0))),
            A.Emboss(alpha=(0.2, min(0.5 * k, 1.0))),
        ], p=0.3 * q),
        A.RandomBrightnessContrast(brightness_limit=0.2 * k, contrast_limit=0.2 * k, p=0.4 * q),
        A.GaussNoise(std_range=(0.02, 0.06 * k), p=0.25 * q),
        A.OneOf([
            A.Blur(blur_limit=(3, 3 + 2 * int(k - 1))),
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.0 * k)),
        ], p=0.2 * q),
        AdaptiveThreshold(p=0.15 * q),
        A.ImageCompression(quality_range=(int(60 / k), 95), p=0.25 * q),
    ]


class Augmenter:
    """A preset as a callable: `aug(img)` draws from its own stream; `aug(img, seed=s)` is a pure function of (img, s).

    Datasets pass a per-sample seed so that the result does not depend on which
    DataLoader worker loads the sample, nor on the order in which samples are read.
    """

    def __init__(self, preset: str = "none", seed: int | None = None):
        if preset not in PRESETS:
            raise ValueError(f"unknown augmentation preset {preset!r}; known: {', '.join(PRESETS)}")
        self.preset = preset
        self.compose = None if preset == "none" else A.Compose(_transforms(preset), seed=seed)

    def __call__(self, img: np.ndarray, seed: int | None = None) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 2:
            raise ValueError(f"augment expects a uint8 (H, W) image, got {img.dtype} {img.shape}")
        if self.compose is None:
            return img
        if seed is not None:
            self.compose.set_random_seed(seed)
        out = self.compose(image=img)["image"]
        return out[..., 0] if out.ndim == 3 else out  # (H, W)

    def __repr__(self) -> str:
        return f"Augmenter({self.preset!r})"


def build_augment(preset: str, seed: int | None = None) -> Augmenter:
    """Preset name -> callable(np.uint8 (H, W)) -> np.uint8 (H, W); same seed, same sequence of outputs."""
    return Augmenter(preset, seed)


def named_transforms(preset: str = "competition", seed: int | None = None) -> dict[str, Augmenter]:
    """Each augmentation of a preset alone and always applied (OneOf groups flattened), by class name.

    For showing what every augmentation does on its own (notebook 02).
    """
    flat = []
    for transform in _transforms(preset):
        flat += list(transform.transforms) if isinstance(transform, A.OneOf) else [transform]
    out = {}
    for transform in flat:
        transform.p = 1.0
        single = Augmenter("none")
        single.preset, single.compose = type(transform).__name__, A.Compose([transform], seed=seed)
        out[single.preset] = single
    return out


def vertical_fix(img: np.ndarray) -> np.ndarray:
    """Rotate an image 90° counter-clockwise when width / height < 0.75 (a sideways photo).

    Formulas are wide; a tall image is almost always a rotated one (+0.05 SA for the team).
    """
    height, width = img.shape[:2]
    if width / height < VERTICAL_RATIO:
        return np.ascontiguousarray(np.rot90(img))
    return img


def aspect_ratio(img: np.ndarray) -> float:
    """Width / height."""
    height, width = img.shape[:2]
    return width / height


def ink_density(img: np.ndarray, threshold: int = 128) -> float:
    """Share of pixels darker than `threshold` (ink) in a black-on-white uint8 image."""
    return float((img < threshold).mean())
