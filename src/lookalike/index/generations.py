"""Index generations on disk: each sync writes a new ``index-<ns>/`` folder, then points
``index.json`` at it (atomically), then deletes older folders, so a crash leaves the old
or the new index, never a mix. Also: reading index.json back, and the cheap stamp a
long-lived reader compares to notice another process's sync."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index.budget import KINDS
from lookalike.index.builders import Builder
from lookalike.store import write_json_atomic

META_FILE = "index.json"
GENERATION_PREFIX = "index-"
ROWS_FILE = "rows.npy"
FORMAT = 1


def write_generation(
    root: Path, builder: Builder, index: Any, lookup: np.ndarray, unchanged_from: Path | None
) -> tuple[str, int]:
    """A new generation folder holding ``index`` and its id -> row table, fsync'ed;
    returns (its name, its bytes)."""
    folder = root / f"{GENERATION_PREFIX}{time.time_ns()}"
    folder.mkdir()
    builder.save(index, folder, unchanged_from)
    np.save(folder / ROWS_FILE, lookup)
    fsync_folder(folder)
    return folder.name, sum(p.stat().st_size for p in folder.iterdir())


def publish(root: Path, meta: dict[str, Any]) -> None:
    """Make ``meta`` (and the generation it names) current; drop every other one."""
    write_json_atomic(root / META_FILE, meta)
    for old in root.glob(f"{GENERATION_PREFIX}*"):
        if old.is_dir() and old.name != meta["dir"]:
            shutil.rmtree(old, ignore_errors=True)


def read_meta(root: Path, dim: int) -> dict[str, Any] | None:
    """index.json, or None when missing, unreadable or made for other vectors."""
    path = root / META_FILE
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return None  # rebuilt from the store, which is the source of truth
    if meta.get("format") != FORMAT or meta.get("dim") != dim:
        return None
    if meta.get("kind") not in KINDS:
        return None
    return meta


def meta_stamp(root: Path) -> tuple[int, int, int] | None:
    """Changes whenever index.json is replaced (by any process)."""
    try:
        st = (root / META_FILE).stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def fsync_folder(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
