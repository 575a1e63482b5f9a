"""Which copy of a near-duplicate group to suggest keeping: the most pixels, then the
largest file (less compressed), then the oldest (likely the original). Only a suggestion:
lookalike never deletes or moves a file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from lookalike.results import GroupMember


def pixel_count(member: GroupMember) -> int:
    """width x height as recorded; read from the file header for records made without it
    (0 if it cannot be read, so such a file is never preferred for its pixels)."""
    if member.width is not None and member.height is not None:
        return member.width * member.height
    try:
        with Image.open(Path(member.path)) as im:  # header only, no decode
            return int(im.width * im.height)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
        return 0


def suggest_keep(members: Sequence[GroupMember]) -> GroupMember:
    # The path breaks remaining ties so the suggestion is the same on every run.
    return min(members, key=lambda m: (-pixel_count(m), -m.size, m.mtime_ns, m.path))
