"""Content hashes of files: how a moved or renamed image is recognised without re-embedding."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """BLAKE2b-128 of the file's bytes, hex."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


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
