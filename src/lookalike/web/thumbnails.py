"""Thumbnails of indexed images, made once and kept on disk.

A thumbnail's file name holds the image id and content hash: a changed file gets a new
id (and hash) when re-indexed, so a stale thumbnail is never served for it, and nothing
needs invalidating. Writes are atomic (temp file + rename), so concurrent requests for
the same thumbnail are harmless.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from PIL import Image

from lookalike.images import load_image
from lookalike.paths import cache_dir
from lookalike.store import ImageRecord

THUMB_SIZES = (128, 256, 512)  # what the API serves; a closed set bounds the cache
PREVIEW_SIZE = 2048  # full-size view of formats browsers can't show (TIFF, HEIC, PSD...)


class ThumbnailCache:
    def __init__(self, root: Path | None = None, quality: int = 85) -> None:
        self.root = root if root is not None else cache_dir() / "thumbnails"
        self.quality = quality

    def path_for(self, record: ImageRecord, side: int) -> Path:
        # Sharded by hash prefix so no folder grows to millions of entries.
        return self.root / str(side) / record.hash[:2] / f"{record.id}-{record.hash}.jpg"

    def get(self, record: ImageRecord, side: int) -> Path:
        """The cached JPEG (longest side <= ``side``), made now if missing.

        Raises ImageReadError when the original can no longer be read.
        """
        target = self.path_for(record, side)
        if target.exists():
            return target
        image = load_image(record.path, min_side=side)
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        try:
            image.save(tmp, "JPEG", quality=self.quality, optimize=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target
