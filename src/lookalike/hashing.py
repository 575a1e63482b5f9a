"""Content hashes of files: how a moved or renamed image is recognised without re-embedding."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lookalike.errors import ImageReadError
from lookalike.images import open_regular

CHUNK = 1 << 20


def bytes_digest(data: bytes) -> str:
    """BLAKE2b-128 of ``data``, hex: the same digest as file_digest of a file holding it."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_digest(path: Path) -> str:
    """BLAKE2b-128 of the file's bytes, hex. Only regular files are read (a FIFO or a
    device would block or never end): anything else raises OSError."""
    h = hashlib.blake2b(digest_size=16)
    try:
        fd, _ = open_regular(path)
    except ImageReadError as exc:
        raise OSError(_reason(str(exc), path)) from None
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _reason(text: str, path: Path) -> str:
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def digest_many(paths: Sequence[Path], workers: int = 2) -> Iterator[str | OSError]:
    """Digests in input order; an unreadable file yields its OSError instead."""

    def one(path: Path) -> str | OSError:
        try:
            return file_digest(path)
        except OSError as exc:
            return exc

    # hashlib releases the GIL on large buffers, so threads overlap the reads and hashing.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(one, paths)
