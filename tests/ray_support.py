"""Shared by the Ray tests: the environment a test cluster needs, and image folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parent.parent / "src"


@contextmanager
def ray_test_env() -> Iterator[None]:
    """Token auth off (ray 2.60's `ray start` turns it on) and this checkout's lookalike on
    every worker's path: worker processes do not run in the test's working directory."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        old = os.environ.get("PYTHONPATH")
        mp.setenv("PYTHONPATH", f"{SRC}{os.pathsep}{old}" if old else str(SRC))
        yield


def write_crops(folder: Path, arrays: list[np.ndarray], n: int, side: int = 96) -> list[Path]:
    """``n`` distinct JPEGs: seeded random crops of real photos, in nested folders."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        arr = arrays[i % len(arrays)]
        h, w = arr.shape[:2]
        y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        path = folder / f"d{i % 3}" / f"img{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr[y : y + side, x : x + side]).save(path, quality=90)
        out.append(path)
    return out


def write_bad_files(folder: Path) -> None:
    """Files every engine must skip, each with its reason."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00 cut here")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text-named.jpg").write_bytes(b"hello, not an image\n" * 10)
    # A name that is not valid UTF-8 (Arrow text must be): it travels as bytes.
    (folder / os.fsdecode(b"caf\xe9-broken.gif")).write_bytes(b"GIF89a broken")
