"""Reading a labelled image folder laid out ``class/image`` (Imagenette's layout).

The class of an image is the name of the first folder below the root it sits in, so
``root/dog/a.jpg`` and ``root/dog/puppies/b.jpg`` are both "dog". Files directly in the
root have no class: they are listed and left out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.errors import DatasetError
from lookalike.images import scan


@dataclass
class LabelledImages:
    """Images found under a root, each with the index of its class in ``class_names``."""

    root: Path
    paths: list[Path]
    labels: np.ndarray  # (n,) int64 index into class_names
    class_names: list[str]
    unlabelled: list[Path] = field(default_factory=list)  # files directly in the root
    errors: list[tuple[Path, str]] = field(default_factory=list)  # folders that could not be read

    def __len__(self) -> int:
        return len(self.paths)

    def class_sizes(self) -> np.ndarray:
        """(C,) number of images of each class."""
        return np.bincount(self.labels, minlength=len(self.class_names))

    def subset(self, keep: np.ndarray) -> LabelledImages:
        """The same dataset restricted to the images where ``keep`` is True."""
        return LabelledImages(
            root=self.root,
            paths=[p for p, k in zip(self.paths, keep, strict=True) if k],
            labels=self.labels[keep],
            class_names=self.class_names,
            unlabelled=self.unlabelled,
            errors=self.errors,
        )


def read_dataset(root: str | os.PathLike[str], classes: Sequence[str] = ()) -> LabelledImages:
    """All images under ``root`` labelled by their class folder, sorted by path.

    ``classes``: class names to number first, in this order (a gallery's classes, so that a
    query set shares its numbering); classes found only here follow, sorted.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected class/image sub-folders)")
    found = scan([root])
    by_class: list[tuple[str, Path]] = []
    unlabelled: list[Path] = []
    for path in found.files:
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            unlabelled.append(path)
        else:
            by_class.append((parts[0], path))
    if not by_class:
        raise DatasetError(
            f"{root}: no images in class folders; lay the images out as "
            f"{root}/<class>/<image> (one sub-folder per class)"
        )
    seen = set(classes)
    names = list(classes) + sorted({c for c, _ in by_class} - seen)
    number = {name: i for i, name in enumerate(names)}
    by_class.sort(key=lambda item: item[1])
    return LabelledImages(
        root=root,
        paths=[p for _, p in by_class],
        labels=np.array([number[c] for c, _ in by_class], dtype=np.int64),
        class_names=names,
        unlabelled=unlabelled,
        errors=list(found.errors),
    )
