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

    def __post_init__(self) -> None:
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
    def _affine(self) -> tuple[FloatArray, FloatArray]:
        # (x * scale - mean) / std folded into one multiply-add per pixel.
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
        # resize(box=...) crops and resizes in one pass, without copying the crop first.
        return image.resize((self.size, self.size), _RESAMPLE[self.resample], box=box)

    def __call__(self, image: Image.Image) -> FloatArray:
        """RGB image -> (3, size, size) float32, C-contiguous. Thread-safe."""
        mul, add = self._affine
        pixels = np.asarray(self.resize(image), dtype=np.float32)  # (H, W, 3)
        normalised = pixels * mul + add
        return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (stored in ModelInfo.preprocessing)."""
        record = asdict(self)
        record["mean"] = list(self.mean)
        record["std"] = list(self.std)
        return record
