"""The benchmark-data scripts: Fashion-MNIST idx reading and the near-duplicate alterations."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from conftest import load_benchmark

datasets = load_benchmark("datasets")
near_duplicates = load_benchmark("near_duplicates")


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_read_idx_round_trip_and_refusals(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "a.gz"), array)

    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x08\x00\x00\x03rest"))
    with pytest.raises(ValueError, match="not an idx"):
        datasets.read_idx(tmp_path / "bad.gz")
    good = (tmp_path / "a.gz").read_bytes()
    (tmp_path / "short.gz").write_bytes(gzip.compress(gzip.decompress(good)[:-1]))
    with pytest.raises(ValueError, match="header says"):
        datasets.read_idx(tmp_path / "short.gz")


def test_fashion_mnist_folders_from_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 1, 9, 0], dtype=np.uint8)
    source = tmp_path / "src"
    source.mkdir()
    _write_idx(source / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(source / "t10k-labels-idx1-ubyte.gz", labels)

    summary = datasets.write_fashion_mnist(tmp_path / "out", "test", per_class=1, source=source)

    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in tmp_path.rglob("*.png"))
    assert written == ["Ankle_boot/00003.png", "T-shirt_top/00000.png", "Trouser/00001.png"]
    assert summary["images"] == 3
    with Image.open(tmp_path / "out" / "Ankle_boot" / "00003.png") as im:
        np.testing.assert_array_equal(np.asarray(im), images[3])


@pytest.mark.skipif(
    not (datasets.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_the_installed_fashion_mnist_test_split() -> None:
    images, labels = datasets.load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28)
    assert np.bincount(labels).tolist() == [1000] * 10


def test_every_alteration_changes_the_photo_reproducibly() -> None:
    photo = Image.fromarray(skimage.data.chelsea())
    original = np.asarray(photo)
    for name, (alter, quality) in near_duplicates.ALTERATIONS.items():
        first, _ = alter(photo, np.random.default_rng([0, 1]))
        again, _ = alter(photo, np.random.default_rng([0, 1]))
        assert np.array_equal(np.asarray(first), np.asarray(again)), name
        changed = first.size != photo.size or not np.array_equal(np.asarray(first), original)
        # The JPEG-only entries change the pixels when saved, not before.
        assert changed or quality is not None, name
    issue = {"crop", "rescale", "jpeg20", "jpeg90", "rotate", "flip", "colour", "text", "logo"}
    assert issue | {"border"} <= set(near_duplicates.ALTERATIONS)


def test_the_wallpaper_halves_split_the_set_in_order() -> None:
    """wallpapers-val chooses verify's settings, wallpapers-test reports them: together
    they are the whole set, and no picture is in both."""
    hard_copies = load_benchmark("hard_copies")
    photos = {f"wallpaper-{i}": Image.new("RGB", (4, 4)) for i in range(7)}
    val = hard_copies._wallpaper_half(photos, "wallpapers-val")
    test = hard_copies._wallpaper_half(photos, "wallpapers-test")
    assert list(val) == ["wallpaper-0", "wallpaper-2", "wallpaper-4", "wallpaper-6"]
    assert list(test) == ["wallpaper-1", "wallpaper-3", "wallpaper-5"]
    assert hard_copies._wallpaper_half(photos, "wallpapers") == photos
