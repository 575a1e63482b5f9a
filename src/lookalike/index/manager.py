"""Keeps a collection's search index in step with its stored vectors, on disk.

Files in the collection folder::

    index.json       which kind, its parameters, measured recall, and which generation
                     folder is current; replaced atomically (tmp + os.replace)
    index-<ns>/      one generation: index.faiss, ids.npy (image ids per FAISS entry),
                     deleted.npy (hnsw), rows.npy (sorted live ids and their vector rows)
    index.lock       serialises sync() between processes

A sync writes a new generation folder, then points index.json at it, then deletes the
old one, so a crash leaves either the old or the new index, never a mix.

Search is ``index.search(q, shortlist)`` then, for quantised kinds, exact re-ranking of
the shortlist from the memory-mapped vector file (rerank.py): scores are always exact.

The jobs around it live apart: deciding the kind and when to rebuild (policy.py), what is
specific to each kind (builders.py), the generation folders and their freshness stamp
(generations.py). This module sequences them: sync (build or update), search, describe.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import IndexBuildError
from lookalike.index import generations
from lookalike.index.base import SearchHits
from lookalike.index.budget import (
    KINDS,
    MIN_APPROX,
    default_budget,
    parse_memory_budget,
)
from lookalike.index.builders import Approx, builder_for, scaled_shortlist
from lookalike.index.exact import topk_blockwise
from lookalike.index.generations import ROWS_FILE, meta_stamp, publish, read_meta
from lookalike.index.policy import missed_target, rebuild_reason, target_kind
from lookalike.index.tuning import TARGET_RECALL, Tuned, holdout_size
from lookalike.store import Store
from lookalike.vectors import FloatArray, IdArray

__all__ = ["IndexManager", "parse_memory_budget"]

LOCK_FILE = "index.lock"

ADD_CHUNK = 32768

ProgressFn = Callable[[int, int], None]  # (vectors added, total to add)


class IndexManager:
    """Builds, updates, persists and searches a store's index (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        kind: str = "auto",
        memory_budget: int | str | None = None,
        seed: int = 0,
        target_recall: float = TARGET_RECALL,
    ) -> None:
        if kind not in KINDS:
            raise IndexBuildError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.store = store
        self.kind = kind
        self.memory_budget = None if memory_budget is None else parse_memory_budget(memory_budget)
        self.seed = seed
        self.target_recall = target_recall
        self._meta: dict[str, Any] | None = None
        self._index: Approx | None = None
        self._lookup: np.ndarray | None = None  # (2, n): sorted live ids, their rows
        self._row_ids: IdArray | None = None  # exact search: row -> id
        self._exact_lookup: tuple[IdArray, np.ndarray] | None = None  # (row ids, their table)
        self._synced_state: dict[str, Any] = {}  # store fingerprint the sync in progress saw
        self._ready = False
        self._disk_stamp: tuple[Any, ...] | None = None  # what _ready was decided from
        self.note: str | None = None  # one line for the user: a damaged index was replaced

    # ===== public API =====================================================================
    def sync(self, progress: ProgressFn | None = None) -> dict[str, Any]:
        """Bring the index up to date with the store; returns what was done (JSON-able)."""
        started = time.perf_counter()
        with self._sync_lock():
            # Taken before reading the rows: a change made meanwhile makes the index stale.
            self._synced_state = self._fingerprint()
            row_ids = self.store.row_ids()
            lookup = _lookup_table(row_ids)
            meta = self._read_meta()
            n = lookup.shape[1]
            target = self._target_kind(n, meta)
            reason = self._rebuild_reason(meta, target, n)
            report: dict[str, Any]
            if reason is None and meta is not None:
                report = self._update(meta, row_ids, lookup, progress)
                if report.get("rebuild_reason"):
                    reason = report["rebuild_reason"]
            if reason is not None:
                report = self._build(target, row_ids, lookup, progress)
                report["reason"] = reason
            report["seconds"] = round(time.perf_counter() - started, 3)
            return report

    def search(self, queries: FloatArray, k: int, effort: float = 1.0) -> SearchHits:
        """Top-k image ids by cosine similarity (exact scores), padded with id -1. Never
        builds or writes: a stale or missing index means exact search (see _ensure_ready).

        ``effort`` multiplies the tuned search width of approximate kinds (HNSW efSearch,
        IVF nprobe, the re-ranked shortlist): more finds more of the true neighbours, at
        about proportionally more time.
        Tuning aims at recall@10 >= 0.95; a batch job that must miss little (duplicates)
        asks for more. Exact search ignores it.
        """
        if effort <= 0:
            raise IndexBuildError(f"search effort must be positive, got {effort}")
        self._ensure_ready()
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.store.dim)
        k = max(int(k), 0)
        meta = self._meta
        if meta is None or meta["kind"] == "exact" or self._index is None:
            return self._exact(q, k)
        params = meta["params"]
        shortlist = scaled_shortlist(int(params.get("shortlist", 10)), k)
        if shortlist >= len(self._index):
            return self._exact(q, k)  # the whole collection: exact is as cheap, and perfect
        return self._approx_search(self._index, q, k, _with_effort(params, effort))

    def describe(self) -> dict[str, Any]:
        """Kind, parameters, count, measured recall@10 and resident bytes (`lookalike info`)."""
        meta = self._meta if self._ready else self._read_meta()
        budget = self.memory_budget or default_budget()
        if meta is None:
            return {"kind": self.kind, "requested_kind": self.kind, "count": 0, "built": False}
        out: dict[str, Any] = {
            "kind": meta["kind"],
            "requested_kind": self.kind,
            "count": meta["count"],
            **meta.get("params", {}),
            **meta.get("recall", {}),
            "bytes": meta.get("bytes", 0),
            "bytes_per_vector": round(meta.get("bytes", 0) / max(1, meta["count"]), 1),
            "memory_budget": budget,
            "built_count": meta.get("built_count", 0),
            "added_since_build": meta.get("added_since_build", 0),
            "removed_since_build": meta.get("removed_since_build", 0),
            "build_seconds": meta.get("build_seconds", 0.0),
        }
        if meta.get("note"):
            out["note"] = meta["note"]
        if meta.get("fallback"):
            out["fallback"] = meta["fallback"]  # the approximate index that missed its target
        out["up_to_date"] = self._is_fresh(meta)
        return out

    # ===== deciding (policy.py) ==========================================================
    def _target_kind(self, n: int, meta: dict[str, Any] | None) -> str:
        return target_kind(self.kind, n, self.store.dim, self.memory_budget, meta)

    def _rebuild_reason(self, meta: dict[str, Any] | None, target: str, n: int) -> str | None:
        return rebuild_reason(meta, target, n, self.store.root)

    # ===== building =======================================================================
    def _build(
        self,
        kind: str,
        row_ids: IdArray,
        lookup: np.ndarray,
        progress: ProgressFn | None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        self._lookup = lookup
        live = lookup[0]
        n = len(live)
        meta: dict[str, Any] = {"kind": kind, "count": n, "built_count": n, "params": {}}
        index: Approx | None = None
        if kind == "exact":
            meta["recall"] = {
                "recall_at_10": 1.0,
                "recall_target": self.target_recall,
                "recall_target_met": True,
            }
            meta["dir"] = None
            if self.kind not in ("auto", "exact"):
                meta["note"] = f"exact search until the collection has {MIN_APPROX} images"
        else:
            index, tuned = self._build_approximate(kind, row_ids, lookup, progress)
            meta["params"] = {**index.params(), **tuned.params}
            meta["recall"] = tuned.to_json()
            if not tuned.met:
                meta, keep = missed_target(
                    self.kind, meta, tuned, n, self.store.dim, self.memory_budget
                )
                index = index if keep else None
        meta["build_seconds"] = round(time.perf_counter() - started, 3)
        self._commit(meta, index, row_ids, lookup, unchanged_from=None)
        out = {
            "kind": meta["kind"],
            "rebuilt": True,
            "added": n,
            "removed": 0,
            "count": n,
            **meta["params"],
            **meta["recall"],
        }
        if meta.get("note"):
            out["note"] = meta["note"]
        return out

    def _build_approximate(
        self, kind: str, row_ids: IdArray, lookup: np.ndarray, progress: ProgressFn | None
    ) -> tuple[Approx, Tuned]:
        builder = builder_for(kind)
        rng = np.random.default_rng(self.seed)
        live = lookup[0]
        held = np.sort(rng.choice(live, size=holdout_size(len(live)), replace=False))
        build_ids = np.setdiff1d(live, held, assume_unique=True)
        index = builder.create(self.store.dim, build_ids, rng, self._vectors_of, self.seed)
        self._add_in_chunks(index, build_ids, progress, total=len(live))
        # Tune on the held-out vectors against exact search over what is indexed so far.
        queries = self._vectors_of(held)
        masked = np.where(np.isin(row_ids, held), -1, row_ids)
        truth = topk_blockwise(self.store.matrix(), masked, queries, 10)
        tuned = builder.tune(index, queries, truth.scores, self.target_recall, self._vectors_of)
        builder.apply(index, tuned.params)
        index.add(held, queries)
        if progress is not None:
            progress(len(live), len(live))
        return index, tuned

    def _add_in_chunks(
        self, index: Approx, ids: IdArray, progress: ProgressFn | None, total: int
    ) -> None:
        for start in range(0, len(ids), ADD_CHUNK):
            chunk = ids[start : start + ADD_CHUNK]
            index.add(chunk, self._vectors_of(chunk))
            if progress is not None:
                progress(start + len(chunk), total)

    # ===== updating =======================================================================
    def _update(
        self,
        meta: dict[str, Any],
        row_ids: IdArray,
        lookup: np.ndarray,
        progress: ProgressFn | None,
    ) -> dict[str, Any]:
        """Add new ids, remove gone ones. Sets "rebuild_reason" instead when that's due."""
        kind = meta["kind"]
        report: dict[str, Any] = {"kind": kind, "rebuilt": False, "added": 0, "removed": 0}
        if kind == "exact":
            meta = {**meta, "count": lookup.shape[1]}
            self._lookup = lookup
            self._commit(meta, None, row_ids, lookup, unchanged_from=None)
            report.update(
                count=lookup.shape[1],
                note="exact search reads the vector file directly; nothing to update",
            )
            return report
        folder = self.store.root / meta["dir"]
        builder = builder_for(kind)
        try:
            index = builder.load(folder, meta["params"], mmap=False)
        except (OSError, RuntimeError, ValueError) as exc:
            # A truncated or damaged index.faiss: the vectors are the source of truth.
            report["rebuild_reason"] = f"{folder}: damaged index ({_first_line(exc)}); rebuilt"
            return report
        # Image ids are never reused and a changed file gets a new id (see Store.add_images),
        # so the two set differences are the whole story; rows may move (compaction).
        indexed = np.sort(np.asarray(index.ids()))
        live = lookup[0]
        remove = np.setdiff1d(indexed, live, assume_unique=True)
        add = np.setdiff1d(live, indexed, assume_unique=True)
        why = builder.rebuild_for_removals(index, len(remove), len(add))
        if why is not None:
            report["rebuild_reason"] = why
            return report
        self._lookup = lookup
        index.remove(remove)
        self._add_in_chunks(index, add, progress, total=len(add))
        meta = {
            **meta,
            "count": len(index),
            "added_since_build": int(meta.get("added_since_build", 0)) + len(add),
            "removed_since_build": int(meta.get("removed_since_build", 0)) + len(remove),
        }
        only_removals = builder.files_unchanged_by_removals() and len(add) == 0
        self._commit(meta, index, row_ids, lookup, unchanged_from=folder if only_removals else None)
        report.update(added=len(add), removed=len(remove), count=len(index))
        return report

    # ===== persisting =====================================================================
    def _commit(
        self,
        meta: dict[str, Any],
        index: Approx | None,
        row_ids: IdArray,
        lookup: np.ndarray,
        unchanged_from: Path | None,
    ) -> None:
        """Write a new generation, point index.json at it, drop older ones; adopt it."""
        root = self.store.root
        meta = {
            **meta,
            "format": generations.FORMAT,
            "dim": self.store.dim,
            "requested_kind": self.kind,
            "synced_at": time.time(),
            **self._synced_state,
        }
        if index is not None:
            builder = builder_for(meta["kind"])
            meta["dir"], meta["bytes"] = generations.write_generation(
                root, builder, index, lookup, unchanged_from
            )
        else:
            meta["dir"] = None
            meta["bytes"] = 0
        publish(root, meta)
        self._meta = meta
        self._index = index
        self._lookup = lookup
        self._row_ids = row_ids
        self._ready = True
        self._disk_stamp = self._current_stamp()

    def _read_meta(self) -> dict[str, Any] | None:
        return read_meta(self.store.root, self.store.dim)

    def _fingerprint(self) -> dict[str, Any]:
        """What changes whenever the store's searchable vectors change."""
        return {
            "vectors_file": self.store.vectors_path.name,
            "vector_rows": self.store.vector_rows(),
            "store_count": self.store.count(),
        }

    def _current_stamp(self) -> tuple[Any, ...]:
        """Cheap to read, and changes whenever another process syncs or compacts."""
        return (meta_stamp(self.store.root), self.store.vectors_path.name)

    def _is_fresh(self, meta: dict[str, Any]) -> bool:
        """Whether the store is as it was when this index was synced."""
        return all(meta.get(k) == v for k, v in self._fingerprint().items())

    @contextlib.contextmanager
    def _sync_lock(self) -> Iterator[None]:
        with open(self.store.root / LOCK_FILE, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ===== searching ======================================================================
    def _ensure_ready(self) -> None:
        """Load the persisted index (memory-mapped); if it is stale, missing or damaged,
        search exactly instead. A search never builds or writes an index: that is the
        explicit last step of `lookalike index` (sync).

        A process that lives long (the web server) sees other processes' syncs: index.json
        is replaced by each one, so a changed stamp means our view is out of date.
        """
        stamp = self._current_stamp()
        if self._ready and stamp == self._disk_stamp:
            return
        self._ready = False
        self._index = None
        self._row_ids = None
        meta = self._read_meta()
        fresh = meta is not None and self._is_fresh(meta)
        if meta is not None and fresh and meta["kind"] != "exact":
            folder = self.store.root / str(meta.get("dir"))
            try:
                self._index = builder_for(meta["kind"]).load(folder, meta["params"], mmap=True)
                self._lookup = np.load(folder / ROWS_FILE, mmap_mode="r")
            except (OSError, RuntimeError, ValueError) as exc:
                # Replaced by a concurrent sync, or damaged: search the vectors instead.
                fresh = False
                self.note = f"{folder}: index unreadable ({_first_line(exc)})"
        if not fresh or meta is None:
            if self.note is not None or self.store.read_only or self._wants_approximate(meta):
                why = (
                    "the collection is read-only, its index can't be updated"
                    if self.store.read_only
                    else "until the next `lookalike index` has rebuilt the index"
                )
                stale = "" if self.note else "the index is out of date; "
                self.note = (self.note + "; " if self.note else "") + (
                    f"{stale}searching exactly ({why})"
                )
            self._meta = None
            self._row_ids = None
            self._ready = True
            self._disk_stamp = stamp
            return
        self._meta = meta
        self._ready = True
        self._disk_stamp = stamp

    def _wants_approximate(self, meta: dict[str, Any] | None) -> bool:
        """Whether a sync would give this collection an approximate index (exact search
        in the meantime is then slower than the user expects, so it is said)."""
        if meta is not None and meta.get("kind") != "exact":
            return True
        return self.store.count() >= MIN_APPROX and self.kind != "exact"

    def _exact(self, q: FloatArray, k: int) -> SearchHits:
        if self._row_ids is None:
            self._row_ids = self.store.row_ids()
        # Rows appended since row_ids was read (another process, mid-index) aren't ours yet.
        n = min(len(self._row_ids), self.store.matrix().shape[0])
        return topk_blockwise(self.store.matrix()[:n], self._row_ids[:n], q, k)

    def _approx_search(
        self, index: Approx, q: FloatArray, k: int, params: dict[str, Any]
    ) -> SearchHits:
        return builder_for(index.kind).search(index, q, k, params, self._vectors_of)

    def vectors_of(self, ids: IdArray) -> FloatArray:
        """Stored vectors of these image ids, in order (re-ranking at search time)."""
        self._ensure_ready()
        if self._index is not None:
            held = self._index.held_vectors(ids)
            return self._vectors_of(ids) if held is None else held
        # Exact search keeps row ids, not a lookup table: one is built from the same rows.
        if self._row_ids is None:
            self._row_ids = self.store.row_ids()
        if self._exact_lookup is None or self._exact_lookup[0] is not self._row_ids:
            self._exact_lookup = (self._row_ids, _lookup_table(self._row_ids))
        return self._vectors_of(ids, self._exact_lookup[1])

    def _vectors_of(self, ids: IdArray, lookup: np.ndarray | None = None) -> FloatArray:
        """Stored vectors of these image ids (read from the memory-mapped vector file)."""
        lookup = self._lookup if lookup is None else lookup
        assert lookup is not None  # set by sync() / _ensure_ready() before searching
        rows = _rows_for(lookup, np.asarray(ids, dtype=np.int64))
        return np.ascontiguousarray(self.store.matrix()[rows], dtype=np.float32)


# ===== helpers ============================================================================
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _lookup_table(row_ids: IdArray) -> np.ndarray:
    """(2, n) int64: live image ids sorted, and the vector row of each."""
    rows = np.nonzero(row_ids >= 0)[0]
    ids = row_ids[rows]
    order = np.argsort(ids, kind="stable")
    return np.stack([ids[order], rows[order]]).astype(np.int64)


def _rows_for(lookup: np.ndarray, ids: IdArray) -> IdArray:
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    pos = np.searchsorted(lookup[0], ids)
    pos = np.minimum(pos, max(0, lookup.shape[1] - 1))
    if lookup.shape[1] == 0 or not np.array_equal(lookup[0][pos], ids):
        raise IndexBuildError("the search index is out of step with the collection; re-index")
    return np.asarray(lookup[1][pos], dtype=np.int64)


def _with_effort(params: dict[str, Any], effort: float) -> dict[str, Any]:
    if effort == 1.0:
        return params
    out = dict(params)
    # The shortlist too: for quantised kinds it, not the graph or list search, is what
    # limits recall (8-bit or PQ scores misorder near ties).
    for key in ("ef_search", "nprobe", "shortlist"):
        if key in out:
            out[key] = max(1, round(int(out[key]) * effort))
    if "nlist" in out and "nprobe" in out:
        out["nprobe"] = min(out["nprobe"], int(out["nlist"]))
    return out
