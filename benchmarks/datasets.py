"""Write benchmark datasets available offline as ``class/image.png`` folders.

Usage:
    python benchmarks/datasets.py fashion-mnist OUT_DIR [--split train|test] [--per-class N]

fashion-mnist: Debian's ``dataset-fashion-mnist`` package (``apt-get install
dataset-fashion-mnist``), read from /usr/share/datasets/fashion-mnist (idx files, gzipped).
Images are written as 28x28 greyscale PNGs named by their index in the split, so
``OUT_DIR/Trouser/00002.png`` is test image 2. Prints one JSON object with the counts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt_top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle_boot",
)
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format), gzipped or not, as a uint8 array."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} values, header says {shape}")
    return data.reshape(shape)


def load_fashion_mnist(
    split: str, source: Path = FASHION_MNIST_DIR
) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 28, 28) uint8, labels (n,) uint8) of one split."""
    prefix = _SPLIT_PREFIX[split]
    images_path = source / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = source / f"{prefix}-labels-idx1-ubyte.gz"
    if not images_path.exists() or not labels_path.exists():
        raise SystemExit(
            f"Fashion-MNIST not found in {source}; install it with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu)"
        )
    images, labels = read_idx(images_path), read_idx(labels_path)
    if len(images) != len(labels):
        raise SystemExit(f"{source}: {len(images)} images but {len(labels)} labels")
    return images, labels


def write_fashion_mnist(
    out_dir: Path,
    split: str = "test",
    per_class: int | None = None,
    source: Path = FASHION_MNIST_DIR,
) -> dict[str, object]:
    """Write the split as OUT_DIR/<class>/<index>.png; ``per_class`` keeps the first N of each."""
    images, labels = load_fashion_mnist(split, source)
    counts = dict.fromkeys(FASHION_MNIST_CLASSES, 0)
    for name in FASHION_MNIST_CLASSES:
        (out_dir / name).mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        name = FASHION_MNIST_CLASSES[int(label)]
        if per_class is not None and counts[name] >= per_class:
            continue
        path = out_dir / name / f"{index:05d}.png"
        if not path.exists():  # rerunning only writes what is missing
            Image.fromarray(image, mode="L").save(path)
        counts[name] += 1
    return {
        "dataset": "fashion-mnist",
        "split": split,
        "out": str(out_dir),
        "images": sum(counts.values()),
        "per_class": counts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["fashion-mnist"])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--split", choices=sorted(_SPLIT_PREFIX), default="test")
    parser.add_argument("--per-class", type=int, default=None, help="keep the first N per class")
    parser.add_argument("--source", type=Path, default=FASHION_MNIST_DIR)
    args = parser.parse_args(argv)
    summary = write_fashion_mnist(args.out_dir, args.split, args.per_class, args.source)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
