"""One Collection shared by the server's worker threads.

FastAPI runs the (sync) endpoints in a thread pool, while the collection's SQLite
connection and the embedder are not meant for concurrent use: store reads and model
calls each go through their own lock, so an upload being embedded does not hold up
thumbnails and browsing.

A server runs for days while `lookalike index` may add to the same collection from
another process: the collection's IndexManager notices each sync made elsewhere and
reloads its view of the index before the next search.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PIL import Image

from lookalike.collection import Collection
from lookalike.errors import CollectionError
from lookalike.reranking import Rerank
from lookalike.results import DuplicateGroup, QueryResult
from lookalike.store import ImageRecord


class CollectionService:
    def __init__(
        self, collection: Collection, reopen: Callable[[], Collection] | None = None
    ) -> None:
        """``reopen``: opens the same collection again; long jobs (duplicates) then run on
        their own connection instead of holding the store lock for their whole run."""
        self.collection = collection
        self._reopen = reopen
        self._store_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._draft_size: int | None = None

    def warm_up(self) -> None:
        """Build the model now, so a bad model fails at startup, not on the first query."""
        with self._model_lock:
            embedder = self.collection.embedder
            side = max(embedder.draft_size, 32)
            embedder.embed_images([Image.new("RGB", (side, side), (128, 128, 128))])
            self._draft_size = embedder.draft_size

    @property
    def draft_size(self) -> int:
        """Smallest side the model needs: JPEG uploads are decoded down to it."""
        if self._draft_size is None:
            with self._model_lock:
                self._draft_size = self.collection.embedder.draft_size
        return self._draft_size

    def search_image(
        self,
        image: Image.Image,
        label: str,
        k: int,
        metric: str,
        rerank: Rerank | None = None,
        under: str | None = None,
    ) -> QueryResult:
        with self._model_lock:
            vectors = self.collection.embed_images([image])
        # The store lock is taken for each store read only: `verify` then compares image
        # files (~0.2 s) while thumbnails and browsing go on (search_id too).
        hits = self.collection.search_vectors(
            vectors,
            k,
            metric,
            rerank=rerank,
            under=under,
            sources=[image],
            store_lock=self._store_lock,
        )
        return QueryResult(label, hits[0])

    def search_id(
        self,
        image_id: int,
        k: int,
        metric: str,
        rerank: Rerank | None = None,
        under: str | None = None,
    ) -> QueryResult | None:
        """More like this: neighbours of an indexed image; None when there is no such id."""
        with self._store_lock:
            if self.collection.find(image_id) is None:
                return None
        try:
            found = self.collection.search_by_id(
                [image_id], k, metric, rerank, under, store_lock=self._store_lock
            )
        except CollectionError:
            with self._store_lock:  # removed by another process since the check above
                if self.collection.find(image_id) is None:
                    return None
            raise
        return found[0]

    def find(self, image_id: int) -> ImageRecord | None:
        with self._store_lock:
            return self.collection.find(image_id)

    def page(self, offset: int, limit: int) -> tuple[int, list[ImageRecord]]:
        with self._store_lock:
            return self.collection.count(), self.collection.records(offset, limit)

    def duplicates(self, threshold: float, verify: bool = True) -> list[DuplicateGroup]:
        if self._reopen is None:
            with self._store_lock:
                return self.collection.duplicates(threshold=threshold, verify=verify)
        # A k-NN pass over the whole collection: searches and browsing go on meanwhile.
        with self._reopen() as job:
            return job.duplicates(threshold=threshold, verify=verify)

    def info(self) -> dict[str, Any]:
        """``Collection.info()`` plus precision and runtime, as `lookalike info --json`."""
        from lookalike.models.runtime import precision_fields

        with self._store_lock:
            info = self.collection.info()
        info.update(precision_fields(info))
        return info

    def close(self) -> None:
        with self._store_lock:
            self.collection.close()
