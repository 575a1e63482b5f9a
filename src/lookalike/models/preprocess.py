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

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bumped whenever this code turns the same image into different pixels (2: crop, then
# resize). It is part of every model's identity, so a collection made by an older recipe
# refuses new vectors instead of silently mixing the two.
RECIPE = 2


@dataclass(frozen=True)
class Preprocess:
    """Centre-crop a square, resize it to ``size`` x ``size``, normalise per channel.

    The square's side is ``crop_fraction * min(width, height)`` (TF/timm "crop_pct"), so
    resizing the short side to ``size / crop_fraction`` and cropping ``size`` is the same
    geometry. Values: ``(pixel * scale - mean) / std`` with pixels in 0..255, RGB order.
    """

    size: int
    crop_fraction: float = 1.0
    resample: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: float = 1.0 / 255.0
    recipe: int = RECIPE

    def __post_init__(self) -> None:
        if self.recipe != RECIPE:
            raise ModelError(
                f"preprocessing recipe {self.recipe} is not this lookalike's ({RECIPE}); "
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
    def tf_efficientnet(cls, size: int) -> Preprocess:
        """TF EfficientNet(-Lite) eval: crop size/(size+32), bicubic, (x - 127) / 128."""
        return cls(
            size=size,
            crop_fraction=size / (size + 32),
            resample="bicubic",
            mean=(127.0, 127.0, 127.0),
            std=(128.0, 128.0, 128.0),
            scale=1.0,
        )

    @property
    def draft_size(self) -> int:
        """Smallest image side that still gives a crop of at least ``size`` pixels."""
        return math.ceil(self.size / self.crop_fraction - 1e-6)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The centred square (left, top, right, bottom), rounded as TF's eval code does."""
        side = max(1, int(self.crop_fraction * min(width, height)))
        left = (width - side + 1) // 2
        top = (height - side + 1) // 2
        return left, top, left + side, top + side

    def resize(self, image: Image.Image) -> Image.Image:
        """The cropped, resized RGB image (size x size)."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        box = self.crop_box(image.width, image.height)
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
