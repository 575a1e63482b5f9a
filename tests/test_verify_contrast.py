"""--rerank verify on smooth designs: SIFT's contrast threshold decides whether a crop of a
gradient with faint texture (a wallpaper, a sky) has any keypoints to match."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.reranking import Rerank
from lookalike.verified_search import make_verified

pytest.importorskip("cv2")


def _smooth_design(seed: int, size: tuple[int, int] = (400, 300)) -> Image.Image:
    """A colour gradient with texture of +-6 grey levels: below the keypoints' contrast
    that OpenCV keeps by default, above the search's."""
    w, h = size
    x, y = np.linspace(0, 1, w)[None, :, None], np.linspace(0, 1, h)[:, None, None]
    base = 60 + 120 * (0.6 * x + 0.4 * y) * np.array([1.0, 0.8, 0.6])
    coarse = np.random.default_rng(seed).integers(0, 256, (h // 4, w // 4), dtype=np.uint8)
    noise = np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC), float)
    texture = (noise - 128) / 128 * 6
    return Image.fromarray(np.clip(base + texture[:, :, None], 0, 255).astype(np.uint8))


def _as_jpeg(image: Image.Image, quality: int = 60) -> Image.Image:
    data = io.BytesIO()
    image.save(data, "JPEG", quality=quality)
    return Image.open(io.BytesIO(data.getvalue())).convert("RGB")


def test_crops_of_a_smooth_design_pass_only_with_the_searchs_contrast(tmp_path: Path) -> None:
    files = {0: tmp_path / "original.png", 1: tmp_path / "another-design.png"}
    original = _smooth_design(0)
    original.save(files[0])
    _smooth_design(1).save(files[1])
    w, h = original.size
    crops = [
        _as_jpeg(original.crop((0, 0, int(w * 0.35), int(h * 0.35)))),  # hard_copies' edits
        _as_jpeg(original.crop((0, 0, int(w * 0.2), h))),
    ]

    def paths_of(ids: list[int]) -> dict[int, str]:
        return {i: str(files[i]) for i in ids}

    candidates = np.array([0, 1], dtype=np.int64)
    searched = make_verified(Rerank("verify"), crops, paths_of)
    opencvs = make_verified(Rerank("verify", contrast=0.04), crops, paths_of)
    for row in range(len(crops)):
        # The original passes and the other design does not ...
        assert searched(row, candidates).tolist() == [True, False]
        # ... where OpenCV's default threshold finds nothing to match on either.
        assert opencvs(row, candidates).tolist() == [False, False]
