"""How the Milvus backend spells things for Milvus: paths (VARCHAR, so names that are not
valid UTF-8 are mapped reversibly), filter-expression literals, folder filters, and rows
read back as ImageRecords."""

from __future__ import annotations

import os
from typing import Any

from lookalike.store import ImageRecord

# Names that are not valid UTF-8 reach Python with surrogate escapes (U+DC80..U+DCFF),
# which Milvus' VARCHAR refuses: they are stored as plane-16 private-use characters.
_TO_MILVUS = {0xDC00 + b: 0x10FF00 + b for b in range(0x80, 0x100)}
_FROM_MILVUS = {v: k for k, v in _TO_MILVUS.items()}


def enc(path: str) -> str:
    return path.translate(_TO_MILVUS)


def dec(path: str) -> str:
    return path.translate(_FROM_MILVUS)


def lit(text: str) -> str:
    """A string literal for a Milvus filter expression."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def under_filter(root: str) -> tuple[str, str]:
    """(Milvus filter, prefix) for paths at or below ``root``. LIKE treats % and _ as
    wildcards, so it can match more: callers check the prefix again."""
    prefix = root.rstrip(os.sep) + os.sep
    return f"path == {lit(enc(root))} or path like {lit(enc(prefix) + '%')}", prefix


def is_under(path: str, root: str, prefix: str) -> bool:
    return path == root or path.startswith(prefix)


FIELDS = ["id", "path", "size", "mtime_ns", "hash", "width", "height"]


def record(row: dict[str, Any]) -> ImageRecord:
    width, height = int(row["width"]), int(row["height"])
    return ImageRecord(
        id=int(row["id"]),
        path=dec(str(row["path"])),
        size=int(row["size"]),
        mtime_ns=int(row["mtime_ns"]),
        hash=str(row["hash"]),
        row=int(row["id"]),  # no vector rows here: the id is the only handle
        width=None if width < 0 else width,
        height=None if height < 0 else height,
    )
