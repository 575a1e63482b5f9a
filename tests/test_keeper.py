"""The suggested copy to keep: most pixels, then largest file, then oldest."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from lookalike.keeper import pixel_count, suggest_keep
from lookalike.results import GroupMember


def _m(path: str, w: int | None, h: int | None, size: int, mtime: int) -> GroupMember:
    return GroupMember(0, path, 1.0, w, h, size, mtime)


def test_most_pixels_wins_over_a_larger_file() -> None:
    big = _m("/a/big.jpg", 2000, 1000, 10, 5)
    heavy = _m("/a/heavy.png", 1000, 1000, 999, 1)
    assert suggest_keep([heavy, big]) is big


def test_then_the_larger_file_then_the_oldest() -> None:
    small = _m("/a/q40.jpg", 100, 100, 10, 1)
    large = _m("/a/q95.jpg", 100, 100, 50, 9)
    assert suggest_keep([small, large]) is large
    newer = _m("/a/copy.jpg", 100, 100, 50, 9)
    older = _m("/a/orig.jpg", 100, 100, 50, 3)
    assert suggest_keep([newer, older]) is older


def test_unrecorded_size_is_read_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.new("RGB", (30, 20)).save(path)
    assert pixel_count(_m(str(path), None, None, 1, 1)) == 600
    assert pixel_count(_m(str(tmp_path / "gone.png"), None, None, 1, 1)) == 0
