"""Image -> network input, the way a checkpoint was evaluated.

A ``Preprocess`` describes one recipe (centre crop, resize, normalise) as plain data so
that it can be stored in a collection's manifest and reused by any model family: the
TensorFlow EfficientNet-Lite checkpoints use ``(x - 127) / 128`` on 0..255 pixels,
timm/torchvision models ``(x / 255 - mean) / std`` with the ImageNet statistics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from lookalike.errors import ModelError
from lookalike.vectors import FloatArray

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

WHOLE_IMAGE = 1.0  # crop_fraction that keeps every pixel (recipe >= 3)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bumped whenever this code turns the same image into different pixels. It is part of
# every model's identity, so vectors of two recipes never mix in one collection.
#   2: centre-crop a square of crop_fraction * short side, resize it (ImageNet eval).
#   3: crop crop_fraction of each side (1.0: the whole image), squash to the square. An
#      eval crop cuts a third of a 4:3 photo's width; retrieval is about the whole image.
#   4: as 3, resized bilinear instead of bicubic for the TF EfficientNet-Lite models:
#      ~0.5 ms less CPU per 800x600 photo, as good or better with GeM on every validation
#      set (BENCHMARKS.md "The identity bump"). Other models' pixels are as in 3.
RECIPE = 4
# Older recipes this code still reproduces, so their collections keep indexing.
KNOWN_RECIPES = (2, 3, 4)


@dataclass(frozen=True)
class Preprocess:
    """Crop, resize to ``size`` x ``size``, normalise per channel.

    Recipes 3 and 4 (4 is current; tf_efficientnet gives them another resample): the
    centred box of ``crop_fraction`` of the width and of the height, squashed to the
    square (1.0 keeps the whole image). Recipe 2 (older collections): a
    centred square of side ``crop_fraction * min(width, height)`` (TF/timm "crop_pct").
    Values: ``(pixel * scale - mean) / std`` with pixels in 0..255, RGB order.
    """

    size: int
    crop_fraction: float = 1.0
    resample: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: float = 1.0 / 255.0
    recipe: int = RECIPE

    def __post_init__(self) -> None:
        if self.recipe not in KNOWN_RECIPES:
            known = ", ".join(map(str, KNOWN_RECIPES))
            raise ModelError(
                f"preprocessing recipe {self.recipe} is unknown to this lookalike ({known}); "
                "re-index with this version into a new --db folder"
            )
        if self.size < 1:
            raise ModelError(f"preprocessing size must be >= 1, got {self.size}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ModelError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        if self.resample not in _RESAMPLE:
            known = ", ".join(_RESAMPLE)
            raise ModelError(f"unknown resample {self.resample!r}; use one of: {known}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelError("mean and std need 3 values each, std > 0")

    @cached_property
    def affine(self) -> tuple[FloatArray, FloatArray]:
        """(mul, add) per channel: (x * scale - mean) / std == x * mul + add."""
        std = np.asarray(self.std, dtype=np.float32)
        mul = (np.float32(self.scale) / std).astype(np.float32)
        add = (-np.asarray(self.mean, dtype=np.float32) / std).astype(np.float32)
        return mul, add

    @classmethod
    def tf_efficientnet(cls, size: int, recipe: int = RECIPE) -> Preprocess:
        """TF EfficientNet(-Lite) pixels, (x - 127) / 128.

        Recipe 2: the checkpoint's eval crop size/(size+32), bicubic; recipe 3: the whole
        image, bicubic (chosen by measurement, see BENCHMARKS.md "Preprocessing for
        retrieval"); recipe 4: the whole image, bilinear.
        """
        return cls(
            size=size,
            crop_fraction=size / (size + 32) if recipe == 2 else WHOLE_IMAGE,
            resample="bilinear" if recipe >= 4 else "bicubic",
            mean=(127.0, 127.0, 127.0),
            std=(128.0, 128.0, 128.0),
            scale=1.0,
            recipe=recipe,
        )

    @property
    def draft_size(self) -> int:
        """Smallest image side that still gives a crop of at least ``size`` pixels."""
        return math.ceil(self.size / self.crop_fraction - 1e-6)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The centred box (left, top, right, bottom), rounded as TF's eval code does."""
        if self.recipe == 2:
            cw = ch = max(1, int(self.crop_fraction * min(width, height)))
        else:
            cw = max(1, int(self.crop_fraction * width + 1e-6))
            ch = max(1, int(self.crop_fraction * height + 1e-6))
        left = (width - cw + 1) // 2
        top = (height - ch + 1) // 2
        return left, top, left + cw, top + ch

    def resize(self, image: Image.Image) -> Image.Image:
        """The cropped, resized RGB image (size x size)."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        box = self.crop_box(image.width, image.height)
        if box == (0, 0, image.width, image.height):  # the whole image: no copy
            return image.resize((self.size, self.size), _RESAMPLE[self.resample])
        # Crop, then resize (as TF's eval code does). Pillow's resize(box=...) would skip
        # a copy but gives slightly different pixels (up to 18/255 measured).
        return image.crop(box).resize((self.size, self.size), _RESAMPLE[self.resample])

    def pixels(self, image: Image.Image) -> npt.NDArray[np.uint8]:
        """RGB image -> (size, size, 3) uint8: the geometric part only. Thread-safe.

        Normalisation is left to ``normalize`` (or to the network itself, see
        onnx_backend): 4x less data to move between threads, and ONNX Runtime does the
        multiply-add faster than NumPy.
        """
        return np.asarray(self.resize(image), dtype=np.uint8)

    def normalize(self, pixels: npt.NDArray[Any]) -> FloatArray:
        """(n, H, W, 3) pixels in 0..255 -> (n, 3, H, W) float32 network input."""
        mul, add = self.affine
        out = np.asarray(pixels, dtype=np.float32) * mul + add
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2), dtype=np.float32)

    def __call__(self, image: Image.Image) -> FloatArray:
        """RGB image -> (3, size, size) float32 network input, C-contiguous. Thread-safe."""
        return self.normalize(self.pixels(image)[None])[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (stored in ModelInfo.preprocessing)."""
        record = asdict(self)
        record["mean"] = list(self.mean)
        record["std"] = list(self.std)
        return record
