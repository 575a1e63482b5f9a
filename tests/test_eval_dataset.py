"""Reading class/image folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lookalike.errors import DatasetError
from lookalike.evaluation.dataset import read_dataset


def _png(path: Path, shade: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 0, 0)).save(path, format="PNG")


def test_labels_come_from_the_first_folder_below_the_root(tmp_path: Path) -> None:
    _png(tmp_path / "dog" / "a.png")
    _png(tmp_path / "dog" / "puppies" / "b.png")  # nested: still a dog
    _png(tmp_path / "cat" / "c.jpg.png")
    _png(tmp_path / "loose.png")  # no class folder
    (tmp_path / "cat" / "notes.txt").write_text("not an image")

    data = read_dataset(tmp_path)

    assert data.class_names == ["cat", "dog"]
    named = {
        p.relative_to(tmp_path).as_posix(): data.class_names[label]
        for p, label in zip(data.paths, data.labels, strict=True)
    }
    assert named == {"cat/c.jpg.png": "cat", "dog/a.png": "dog", "dog/puppies/b.png": "dog"}
    assert data.unlabelled == [tmp_path / "loose.png"]
    assert data.class_sizes().tolist() == [1, 2]


def test_a_query_set_shares_the_gallery_numbering(tmp_path: Path) -> None:
    _png(tmp_path / "q" / "zebra" / "1.png")
    _png(tmp_path / "q" / "ant" / "1.png")
    _png(tmp_path / "q" / "new" / "1.png")

    data = read_dataset(tmp_path / "q", classes=["zebra", "ant", "bee"])

    # Gallery classes keep their numbers (even bee, absent here); new ones follow.
    assert data.class_names == ["zebra", "ant", "bee", "new"]
    assert sorted(data.class_names[i] for i in data.labels) == ["ant", "new", "zebra"]


def test_unusable_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a folder"):
        read_dataset(tmp_path / "missing")
    _png(tmp_path / "flat" / "a.png")
    with pytest.raises(DatasetError, match="class folders"):
        read_dataset(tmp_path / "flat")
