"""The Milvus backend: a collection kept in Milvus, embedded (Milvus Lite, one file) or on
a server or cluster, through the same client protocol (`pip install 'lookalike[milvus]'`).

Three Milvus collections per lookalike collection NAME::

    NAME          one row per image: id (ours, never reused), path, size, mtime_ns, hash,
                  width, height (-1: unknown), batch (the write that made it), vector
    NAME__skipped one row per unreadable file: path, size, mtime_ns, reason
    NAME__meta    key/value rows: the manifest (identity, checked on open), the write state
                  (next id, last batch, the journal of a batch in progress), the writer
                  lock, the index chosen; big journals are split over journal:B:I rows

Milvus has no transactions, so each write is one journalled batch: its intent is written
first (the state row names it), then applied, then the state row clears it. A run that
finds a journal left by a crash (kill -9) finishes it when all its rows arrived and
undoes it otherwise (rows are tagged with their batch), so a batch is committed or absent.

Index: HNSW on a server or cluster; Milvus Lite offers only FLAT, IVF_FLAT and AUTOINDEX
locally, so there it is IVF_FLAT. Milvus builds it on sealed segments and searches newer
rows exactly; `lookalike index` ends with a flush, so what it wrote gets indexed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.backends.base import Move, ProgressFn, Skip, StorageBackend, Touch
from lookalike.backends.milvus_client import (
    call,
    call_once,
    connect,
    first_line,
    release,
    retain,
    retrying,
)
from lookalike.backends.milvus_rows import (
    FIELDS,
    dec,
    enc,
    is_under,
    lit,
    record,
    under_filter,
)
from lookalike.errors import CollectionError
from lookalike.index.base import MISSING_ID, SearchHits
from lookalike.store import FORMAT_VERSION, ImageRecord, NewImage
from lookalike.vectors import FloatArray

if TYPE_CHECKING:
    from lookalike.backends.locations import MilvusLocation

BACKEND_FORMAT = 1  # the layout of the three Milvus collections
PATH_BYTES = 16384
PAGE = 4096  # rows per query page (Milvus caps offset + limit at 16384)
GET_CHUNK = 1000  # ids per get / delete request
INSERT_CHUNK = 1000
SEARCH_CHUNK = 64  # queries per search request
MAX_K = 16384  # Milvus' top-k limit
JOURNAL_PART = 60000  # characters per journal row (the value field holds 65535 bytes)
LOCK_TTL = 600.0  # seconds: a lock row not refreshed for this long is another host's crash
HEARTBEAT_S = 30.0  # how often a writer refreshes its lock row
# Milvus Lite, IVF_FLAT: few lists, so small collections and young segments stay exact
# enough; 16 of 128 lists searched gave recall@10 >= 0.95 at 100k (BENCHMARKS.md).
LITE_INDEX = {"index_type": "IVF_FLAT", "params": {"nlist": 128}}
LITE_SEARCH = {"nprobe": 16}
SERVER_INDEX = {"index_type": "HNSW", "params": {"M": 16, "efConstruction": 200}}
SERVER_SEARCH = {"ef": 64}
# Tests only: SIGKILL this process once N batches' rows are written but not yet committed
# (the worst moment for a crash), to check that the next run finishes or undoes them.
CRASH_ENV = "LOOKALIKE_TEST_KILL_AFTER_INSERTS"
_DUMMY = [0.0, 0.0]  # every Milvus collection needs a vector field; meta rows carry this


class MilvusBackend(StorageBackend):
    """One lookalike collection in Milvus (see the module docstring)."""

    def __init__(self, location: MilvusLocation, client: Any, manifest: dict[str, Any]) -> None:
        self.loc = location
        self.client = client
        retain(location)
        self.manifest = manifest
        self.dim = int(manifest["model"]["dim"])
        self.images = location.name
        self.skips = location.name + "__skipped"
        self.meta = location.name + "__meta"
        self._lock_token: str | None = None
        self._cached_state: dict[str, Any] | None = None
        self._beat = 0.0
        for name in (self.images, self.skips, self.meta):
            self._call(self.client.load_collection, name)
        self.index_info: dict[str, Any] = self._meta_json("index") or {}

    # ----- opening ---------------------------------------------------------------------
    @classmethod
    def read_manifest(cls, location: MilvusLocation) -> dict[str, Any] | None:
        client = connect(location)
        meta = location.name + "__meta"
        if not call(location, client.has_collection, meta):
            return None
        call(location, client.load_collection, meta)
        rows = call(location, client.get, meta, ids=["manifest"], output_fields=["value"])
        if not rows:
            return None
        manifest: dict[str, Any] = json.loads(rows[0]["value"])
        version = manifest.get("format_version")
        if version != FORMAT_VERSION or manifest.get("backend_format") != BACKEND_FORMAT:
            raise CollectionError(
                f"{location}: collection format {version}/{manifest.get('backend_format')} is "
                f"not supported by this lookalike (expects {FORMAT_VERSION}/{BACKEND_FORMAT}); "
                "re-index into a new --db"
            )
        return manifest

    @classmethod
    def create(cls, location: MilvusLocation, fields: dict[str, Any]) -> MilvusBackend | None:
        client = connect(location)
        if cls.read_manifest(location) is not None:
            return None
        dim = int(fields["model"]["dim"])
        name = location.name
        index: dict[str, Any] | None = None
        if call(location, client.has_collection, name):
            call(location, client.load_collection, name)
            rows = call(location, client.query, name, filter="", output_fields=["count(*)"])
            if rows and int(rows[0]["count(*)"]):
                raise CollectionError(
                    f"{location}: holds images but no manifest, so which model made them is "
                    "unknown; index into a new --db (another collection name)"
                )
        else:
            index = cls._create_images(location, client, name, dim)
        cls._create_small(
            location,
            client,
            name + "__skipped",
            "path",
            PATH_BYTES,
            (
                ("size", "INT64"),
                ("mtime_ns", "INT64"),
                ("reason", "VARCHAR"),
            ),
        )
        cls._create_small(location, client, name + "__meta", "key", 256, (("value", "VARCHAR"),))
        manifest = {
            "format_version": FORMAT_VERSION,
            "backend_format": BACKEND_FORMAT,
            "created_at": time.time(),
            **fields,
        }
        backend = cls(location, client, manifest)
        if not backend.index_info:
            backend.index_info = index or cls._server_index(location)
            backend._meta_put("index", json.dumps(backend.index_info))
        backend._meta_put("state", json.dumps({"next_id": 1, "batch": 0, "journal": None}))
        backend.save_manifest()  # last: a crash before this leaves "no collection here"
        return backend

    @classmethod
    def open(cls, location: MilvusLocation, manifest: dict[str, Any]) -> MilvusBackend:
        return cls(location, connect(location), manifest)

    @staticmethod
    def _server_index(location: MilvusLocation) -> dict[str, Any]:
        lite = location.lite_file is not None
        return {
            **(LITE_INDEX if lite else SERVER_INDEX),
            "search": LITE_SEARCH if lite else SERVER_SEARCH,
        }

    @classmethod
    def _create_images(
        cls, location: MilvusLocation, client: Any, name: str, dim: int
    ) -> dict[str, Any]:
        """The images collection, with HNSW where the server has it, else IVF_FLAT
        (Milvus Lite, embedded or as a server process, refuses HNSW)."""
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("path", DataType.VARCHAR, max_length=PATH_BYTES)
        schema.add_field("size", DataType.INT64)
        schema.add_field("mtime_ns", DataType.INT64)
        schema.add_field("hash", DataType.VARCHAR, max_length=128)
        schema.add_field("width", DataType.INT64)
        schema.add_field("height", DataType.INT64)
        schema.add_field("batch", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        call(location, client.create_collection, name, schema=schema, consistency_level="Strong")
        choices = [LITE_INDEX] if location.lite_file is not None else [SERVER_INDEX, LITE_INDEX]
        last: Exception | None = None
        for choice in choices:
            params = client.prepare_index_params()
            params.add_index(field_name="vector", metric_type="IP", **choice)
            try:
                retrying(client.create_index, name, params)
            except Exception as exc:  # an index type this server does not offer
                last = exc
                continue
            call(location, client.load_collection, name)
            lite = choice is LITE_INDEX
            return {**choice, "search": LITE_SEARCH if lite else SERVER_SEARCH}
        why = first_line(last) if last is not None else "no index type to try"
        raise CollectionError(f"{location}: cannot create a vector index ({why})")

    @staticmethod
    def _create_small(
        location: MilvusLocation,
        client: Any,
        name: str,
        key: str,
        key_bytes: int,
        fields: Sequence[tuple[str, str]],
    ) -> None:
        if call(location, client.has_collection, name):
            return
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(key, DataType.VARCHAR, is_primary=True, max_length=key_bytes)
        for field, kind in fields:
            if kind == "VARCHAR":
                schema.add_field(field, DataType.VARCHAR, max_length=65535)
            else:
                schema.add_field(field, DataType.INT64)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=len(_DUMMY))
        params = client.prepare_index_params()
        params.add_index(field_name="v", index_type="FLAT", metric_type="L2")
        call(
            location,
            client.create_collection,
            name,
            schema=schema,
            index_params=params,
            consistency_level="Strong",
        )

    @property
    def location(self) -> str:
        return str(self.loc)

    # ----- calls -------------------------------------------------------------------------
    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return call(self.loc, fn, *args, **kwargs)

    def _meta_json(self, key: str) -> Any:
        rows = self._call(self.client.get, self.meta, ids=[key], output_fields=["value"])
        return json.loads(rows[0]["value"]) if rows else None

    def _meta_put(self, key: str, value: str) -> None:
        self._call(self.client.upsert, self.meta, [{"key": key, "value": value, "v": _DUMMY}])

    def _meta_delete(self, keys: Sequence[str]) -> None:
        if keys:
            expr = "key in [" + ",".join(lit(k) for k in keys) + "]"
            self._call(self.client.delete, self.meta, filter=expr)

    # ----- lifetime and the writer lock ------------------------------------------------
    def lock(self) -> None:
        if self._lock_token is not None:
            return
        held = self._meta_json("lock")
        if held and not _stale(held):
            raise CollectionError(
                f"{self.loc}: another lookalike process (pid {held.get('pid')} on "
                f"{held.get('host')}) is writing to this collection; wait for it to finish, "
                "then run again"
            )
        token = uuid.uuid4().hex
        self._meta_put("lock", json.dumps(_lock_row(token)))
        if (self._meta_json("lock") or {}).get("token") != token:
            raise CollectionError(f"{self.loc}: another lookalike process took the writer lock")
        self._lock_token = token
        self._cached_state = None
        self._beat = time.monotonic()
        self._recover()

    def unlock(self) -> None:
        if self._lock_token is None:
            return
        held = self._meta_json("lock") or {}
        if held.get("token") == self._lock_token:
            self._meta_delete(["lock"])
        self._lock_token = None
        self._cached_state = None

    def _heartbeat(self) -> None:
        """Refresh the lock row now and then, so other hosts see the writer is alive."""
        if self._lock_token is not None and time.monotonic() - self._beat > HEARTBEAT_S:
            self._meta_put("lock", json.dumps(_lock_row(self._lock_token)))
            self._beat = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(CollectionError):
            self.unlock()
        release(self.loc)

    def save_manifest(self) -> None:
        self._meta_put("manifest", json.dumps(self.manifest, sort_keys=True))

    # ----- batches -----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        # The writer (lock held) is the only one changing the state: it keeps it in memory.
        if self._lock_token is not None and self._cached_state is not None:
            return self._cached_state
        state: dict[str, Any] = self._meta_json("state") or {
            "next_id": 1,
            "batch": 0,
            "journal": None,
        }
        if self._lock_token is not None:
            self._cached_state = state
        return state

    def _put_state(self, state: dict[str, Any]) -> None:
        self._meta_put("state", json.dumps(state))
        self._cached_state = state if self._lock_token is not None else None

    def _begin(self, op: str, payload: dict[str, Any], rows: int, next_id: int) -> dict[str, Any]:
        """Write a batch's intent; from here a crash is finished or undone by _recover.
        A small intent rides in the state row itself (one write), a big one in parts."""
        batch = int(self._state()["batch"]) + 1
        journal: dict[str, Any] = {"batch": batch, "op": op, "parts": 0, "rows": rows}
        text = json.dumps(payload)
        if len(text) <= JOURNAL_PART:
            journal["inline"] = payload
        else:
            parts = [text[i : i + JOURNAL_PART] for i in range(0, len(text), JOURNAL_PART)]
            for i, part in enumerate(parts):
                self._meta_put(f"journal:{batch}:{i}", part)
            journal["parts"] = len(parts)
        self._put_state({"next_id": next_id, "batch": batch, "journal": journal})
        return journal

    def _end(self, journal: dict[str, Any]) -> None:
        self._put_state({**self._state(), "journal": None})
        self._meta_delete([f"journal:{journal['batch']}:{i}" for i in range(journal["parts"])])
        self._heartbeat()

    def _payload(self, journal: dict[str, Any]) -> dict[str, Any]:
        if "inline" in journal:
            inline: dict[str, Any] = journal["inline"]
            return inline
        keys = [f"journal:{journal['batch']}:{i}" for i in range(journal["parts"])]
        rows = self._call(self.client.get, self.meta, ids=keys, output_fields=["key", "value"])
        text = {r["key"]: r["value"] for r in rows}
        payload: dict[str, Any] = json.loads("".join(text.get(k, "") for k in keys))
        return payload

    def _recover(self) -> None:
        """Finish or undo the batch a crashed run left half written."""
        journal = self._state().get("journal")
        if not journal:
            return
        payload = self._payload(journal)
        if journal["op"] == "add":
            arrived = self._count(f"batch == {int(journal['batch'])}")
            if arrived == int(journal["rows"]):
                self._apply_add(payload)
            else:
                self._call(self.client.delete, self.images, filter=f"batch == {journal['batch']}")
        else:
            self._apply_changes(payload)
        self._end(journal)

    # ----- writing -----------------------------------------------------------------------
    def add_images(self, images: Sequence[NewImage], vectors: FloatArray) -> list[int]:
        if len(images) != len(vectors):
            raise CollectionError("internal: images and vectors differ in number")
        if not images:
            return []
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise CollectionError(
                f"vectors of shape {vectors.shape} do not fit this collection (dim {self.dim})"
            )
        paths = [im.path for im in images]
        replaced = [r.id for r in self._records_at(paths)]
        first = int(self._state()["next_id"])
        ids = list(range(first, first + len(images)))
        payload = {"delete": replaced, "unskip": paths}
        journal = self._begin("add", payload, rows=len(images), next_id=first + len(images))
        batch = int(journal["batch"])
        rows = [
            {
                "id": image_id,
                "path": enc(im.path),
                "size": int(im.size),
                "mtime_ns": int(im.mtime_ns),
                "hash": im.hash,
                "width": -1 if im.width is None else int(im.width),
                "height": -1 if im.height is None else int(im.height),
                "batch": batch,
                "vector": vec,
            }
            for image_id, im, vec in zip(ids, images, vectors, strict=True)
        ]
        for start in range(0, len(rows), INSERT_CHUNK):
            call_once(self.loc, self.client.insert, self.images, rows[start : start + INSERT_CHUNK])
        _crash_point()
        self._apply_add(payload)
        self._end(journal)
        return ids

    def _apply_add(self, payload: dict[str, Any]) -> None:
        self._delete_ids(payload["delete"])
        self._delete_skipped(payload["unskip"])

    def apply_changes(
        self,
        moves: Sequence[Move] = (),
        touches: Sequence[Touch] = (),
        removals: Sequence[int] = (),
        skips: Sequence[Skip] = (),
        unskips: Sequence[str] = (),
    ) -> None:
        payload = {
            "moves": [list(m) for m in moves],
            "touches": [list(t) for t in touches],
            "removals": [int(i) for i in removals],
            "skips": [list(s) for s in skips],
            "unskips": list(unskips),
        }
        if not any(payload.values()):
            return
        state = self._state()
        journal = self._begin("changes", payload, rows=0, next_id=int(state["next_id"]))
        self._apply_changes(payload)
        self._end(journal)

    def _apply_changes(self, payload: dict[str, Any]) -> None:
        """Idempotent, so a crashed batch is finished by running it again."""
        self._delete_ids(payload["removals"])
        changed: dict[int, dict[str, Any]] = {}
        for image_id, path, size, mtime_ns in payload["moves"]:
            changed[int(image_id)] = {"path": enc(path), "size": size, "mtime_ns": mtime_ns}
        for image_id, size, mtime_ns in payload["touches"]:
            changed.setdefault(int(image_id), {}).update(size=size, mtime_ns=mtime_ns)
        ids = list(changed)
        for start in range(0, len(ids), GET_CHUNK):
            chunk = ids[start : start + GET_CHUNK]
            rows = self._call(self.client.get, self.images, ids=chunk, output_fields=["*"])
            updated = [{**row, **changed[int(row["id"])]} for row in rows]
            if updated:
                self._call(self.client.upsert, self.images, updated)
        skip_rows = [
            {"path": enc(p), "size": int(s), "mtime_ns": int(m), "reason": r, "v": _DUMMY}
            for p, s, m, r in payload["skips"]
        ]
        for start in range(0, len(skip_rows), INSERT_CHUNK):
            self._call(self.client.upsert, self.skips, skip_rows[start : start + INSERT_CHUNK])
        self._delete_skipped(payload["unskips"])

    def _delete_ids(self, ids: Sequence[int]) -> None:
        for start in range(0, len(ids), GET_CHUNK):
            chunk = [int(i) for i in ids[start : start + GET_CHUNK]]
            self._call(self.client.delete, self.images, filter=f"id in {chunk}")

    def _delete_skipped(self, paths: Sequence[str]) -> None:
        # Looked up first: a read is cheaper than a delete, and most paths aren't there.
        for start in range(0, len(paths), GET_CHUNK):
            chunk = paths[start : start + GET_CHUNK]
            expr = "path in [" + ",".join(lit(enc(p)) for p in chunk) + "]"
            if self._call(self.client.query, self.skips, filter=expr, output_fields=["path"]):
                self._call(self.client.delete, self.skips, filter=expr)

    # ----- reading -----------------------------------------------------------------------
    def _count(self, expr: str = "") -> int:
        rows = self._call(self.client.query, self.images, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def count(self) -> int:
        return self._count()

    def _scan(
        self, collection: str, pk: str, expr: str, fields: list[str], page: int = PAGE
    ) -> Iterator[dict[str, Any]]:
        """Rows matching ``expr`` in primary-key order, a page at a time."""
        last: Any = None
        while True:
            cursor = (
                f"{pk} > {lit(last) if isinstance(last, str) else last}" if last is not None else ""
            )
            where = " and ".join(f"({e})" for e in (expr, cursor) if e)
            rows = self._call(
                self.client.query, collection, filter=where, output_fields=fields, limit=page
            )
            if not rows:
                return
            rows.sort(key=lambda r: r[pk])
            yield from rows
            if len(rows) < page:
                return
            last = rows[-1][pk]

    def find(self, image_id: int) -> ImageRecord | None:
        rows = self._call(self.client.get, self.images, ids=[int(image_id)], output_fields=FIELDS)
        return record(rows[0]) if rows else None

    def by_path(self, path: str) -> ImageRecord | None:
        records = self._records_at([path])
        return records[0] if records else None

    def _records_at(self, paths: Sequence[str]) -> list[ImageRecord]:
        out: list[ImageRecord] = []
        for start in range(0, len(paths), GET_CHUNK):
            chunk = paths[start : start + GET_CHUNK]
            expr = "path in [" + ",".join(lit(enc(p)) for p in chunk) + "]"
            rows = self._call(self.client.query, self.images, filter=expr, output_fields=FIELDS)
            out.extend(record(r) for r in rows)
        return out

    def by_hash(self, digest: str) -> ImageRecord | None:
        rows = self._call(
            self.client.query,
            self.images,
            filter=f"hash == {lit(digest)}",
            output_fields=FIELDS,
            limit=1,
        )
        return record(rows[0]) if rows else None

    def records(self, offset: int = 0, limit: int = -1) -> list[ImageRecord]:
        out: list[ImageRecord] = []
        for i, row in enumerate(self._scan(self.images, "id", "", FIELDS)):
            if i < offset:
                continue
            if 0 <= limit <= len(out):
                break
            out.append(record(row))
        return out

    def iter_records(self, batch: int = 10000) -> Iterator[ImageRecord]:
        page = max(1, min(batch, MAX_K))
        for row in self._scan(self.images, "id", "", FIELDS, page):
            yield record(row)

    def records_under(self, root: str) -> dict[str, ImageRecord]:
        expr, prefix = under_filter(root)
        found = (record(r) for r in self._scan(self.images, "id", expr, FIELDS))
        return {r.path: r for r in found if is_under(r.path, root, prefix)}

    def ids_and_paths(self, ids: Iterable[int]) -> dict[int, str]:
        wanted = [int(i) for i in ids]
        out: dict[int, str] = {}
        for start in range(0, len(wanted), GET_CHUNK):
            chunk = wanted[start : start + GET_CHUNK]
            rows = self._call(self.client.get, self.images, ids=chunk, output_fields=["path"])
            out.update((int(r["id"]), dec(r["path"])) for r in rows)
        return out

    def vectors_for(self, ids: Sequence[int]) -> FloatArray:
        wanted = [int(i) for i in ids]
        out = np.zeros((len(wanted), self.dim), dtype=np.float32)
        position: dict[int, list[int]] = {}
        for i, image_id in enumerate(wanted):
            position.setdefault(image_id, []).append(i)
        unique = list(position)
        for start in range(0, len(unique), GET_CHUNK):
            chunk = unique[start : start + GET_CHUNK]
            rows = self._call(self.client.get, self.images, ids=chunk, output_fields=["vector"])
            if len(rows) != len(chunk):
                got = {int(r["id"]) for r in rows}
                missing = next(i for i in chunk if i not in got)
                raise CollectionError(f"no image with id {missing} in {self.loc}")
            for row in rows:
                out[position[int(row["id"])]] = np.asarray(row["vector"], dtype=np.float32)
        return out

    def skipped(self) -> list[dict[str, str]]:
        rows = self._scan(self.skips, "path", "", ["path", "reason"])
        found = [{"path": dec(r["path"]), "reason": str(r["reason"])} for r in rows]
        return sorted(found, key=lambda s: s["path"])

    def skipped_under(self, root: str) -> list[str]:
        expr, prefix = under_filter(root)
        paths = (dec(r["path"]) for r in self._scan(self.skips, "path", expr, ["path"]))
        return [p for p in paths if is_under(p, root, prefix)]

    def skipped_entry(self, path: str) -> tuple[int, int, str] | None:
        rows = self._call(
            self.client.query,
            self.skips,
            filter=f"path == {lit(enc(path))}",
            output_fields=["size", "mtime_ns", "reason"],
        )
        if not rows:
            return None
        return int(rows[0]["size"]), int(rows[0]["mtime_ns"]), str(rows[0]["reason"])

    # ----- searching ---------------------------------------------------------------------
    def search(
        self, queries: FloatArray, k: int, effort: float = 1.0, under: str | None = None
    ) -> SearchHits:
        if effort <= 0:
            raise CollectionError(f"search effort must be positive, got {effort}")
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(int(k), 0)
        hits = SearchHits.empty(len(q), k)
        if k == 0 or len(q) == 0:
            return hits
        if k > MAX_K:
            raise CollectionError(f"k must be at most {MAX_K} on Milvus, got {k}")
        expr, prefix = under_filter(under) if under is not None else ("", "")
        # LIKE reads % and _ in the folder as wildcards: ask for more, keep the real ones.
        limit = min(MAX_K, 4 * k) if any(c in prefix for c in "%_") else k
        params = self._search_params(limit, effort)
        for start in range(0, len(q), SEARCH_CHUNK):
            chunk = q[start : start + SEARCH_CHUNK]
            found = self._call(
                self.client.search,
                self.images,
                data=[row.tolist() for row in chunk],
                anns_field="vector",
                limit=limit,
                filter=expr,
                search_params={"metric_type": "IP", "params": params},
                output_fields=["path"] if under is not None else [],
            )
            for i, row in enumerate(found):
                kept = [
                    h
                    for h in row
                    if under is None or is_under(dec(h["entity"]["path"]), under, prefix)
                ]
                for j, h in enumerate(kept[:k]):
                    hits.ids[start + i, j] = int(h["id"])
                    hits.scores[start + i, j] = float(h["distance"])
        hits.ids[~np.isfinite(hits.scores)] = MISSING_ID
        return hits

    def _search_params(self, k: int, effort: float) -> dict[str, Any]:
        params = dict(self.index_info.get("search", {}))
        if "nprobe" in params:
            nlist = int(self.index_info.get("params", {}).get("nlist", params["nprobe"]))
            params["nprobe"] = min(nlist, max(1, math.ceil(params["nprobe"] * effort)))
        if "ef" in params:
            params["ef"] = max(k, math.ceil(params["ef"] * effort))
        return params

    # ----- the `index` command's bracket -----------------------------------------------
    def finish_index_run(self, progress: ProgressFn | None = None) -> dict[str, Any]:
        # Sealing the segments written makes Milvus build the index over them.
        started = time.perf_counter()
        self._call(self.client.flush, self.images)
        count = self.count()
        return {
            "kind": self._kind(),
            "rebuilt": False,
            "count": count,
            **self.index_info.get("params", {}),
            **self.index_info.get("search", {}),
            "note": "Milvus builds and updates its index itself",
            "seconds": round(time.perf_counter() - started, 3),
        }

    def _kind(self) -> str:
        return str(self.index_info.get("index_type", "unknown")).lower().replace("_", "-")

    def describe(self) -> dict[str, Any]:
        count = self.count()
        index: dict[str, Any] = {
            "kind": self._kind(),
            "chosen_for": "milvus-lite" if self.loc.lite_file is not None else "milvus server",
            "count": count,
            **self.index_info.get("params", {}),
            **self.index_info.get("search", {}),
            "metric": "IP (cosine on unit vectors)",
        }
        with contextlib.suppress(Exception):  # progress figures are a bonus
            state = self.client.describe_index(self.images, "vector")
            index["indexed_rows"] = int(state.get("indexed_rows", 0))
            index["pending_index_rows"] = int(state.get("pending_index_rows", 0))
        lite = self.loc.lite_file
        size = 0
        if lite is not None and lite.exists():
            size = lite.stat().st_size
        return {
            "db": str(self.loc),
            "backend": "milvus-lite" if lite is not None else "milvus",
            "bytes": size,
            "vector_rows": count,
            "index": index,
        }


_inserts = 0


def _crash_point() -> None:
    global _inserts
    limit = os.environ.get(CRASH_ENV)
    if not limit:
        return
    _inserts += 1
    if _inserts >= int(limit):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _lock_row(token: str) -> dict[str, Any]:
    return {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "at": time.time()}


def _stale(held: dict[str, Any]) -> bool:
    """A lock whose process is gone (this host), or not refreshed for LOCK_TTL (another)."""
    if held.get("host") == socket.gethostname():
        try:
            os.kill(int(held.get("pid", 0)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, OverflowError):
            return False
        return False
    return time.time() - float(held.get("at", 0)) > LOCK_TTL
