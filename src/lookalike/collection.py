"""The Collection: a folder of indexed images you can search. Ties together the store
(what is indexed), the embedder (how images become vectors) and the search index."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from lookalike.adapters import check_recorded_adapter, same_adapter
from lookalike.duplicates import (
    SCORE_SLACK,
    Links,
    leader_clusters,
    neighbour_batches,
    similar_links,
)
from lookalike.errors import CollectionError, ImageReadError, ModelMismatchError
from lookalike.images import absolute, load_image
from lookalike.index.base import MISSING_ID, SearchHits
from lookalike.index.manager import IndexManager
from lookalike.indexer import IndexReport, ProgressFn, index_paths
from lookalike.keeper import suggest_keep
from lookalike.models import Embedder, ModelOptions, create_embedder
from lookalike.models.preprocess import KNOWN_RECIPES
from lookalike.paths import default_db
from lookalike.results import (
    METRICS,
    DuplicateGroup,
    DuplicatePair,
    GroupMember,
    Hit,
    QueryResult,
)
from lookalike.store import MANIFEST, ImageRecord, Store, take_lock, write_json_atomic
from lookalike.vectors import FloatArray, IdArray, cosine_to_euclidean

Query = str | os.PathLike[str] | Image.Image
COMPACT_DEAD_FRACTION = 0.25  # rewrite the vector file once this share of it is dead rows
# An approximate index tuned for search misses about 1 - recall of the pairs; duplicates
# is a batch job that should miss few, so it searches wider. At 1M vectors (hnsw-sq8) 4x
# missed 3 of 1,000 planted pairs instead of 17, in 3.2x the time (BENCHMARKS.md).
DUPLICATES_EFFORT = 4.0


class Collection:
    """Open with ``Collection.open``; use as a context manager or call ``close``."""

    def __init__(
        self,
        store: Store,
        model_options: ModelOptions | None = None,
        adapter: Path | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.store = store
        self.model_options = model_options or ModelOptions()
        self.adapter_path = adapter
        self._embedder = embedder
        settings = store.manifest.get("index", {})
        self.indexes = IndexManager(
            store, kind=settings.get("kind", "auto"), memory_budget=settings.get("memory_budget")
        )

    # ----- opening ---------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        db: str | os.PathLike[str] | None = None,
        *,
        model: str | None = None,
        model_options: ModelOptions | None = None,
        adapter: str | os.PathLike[str] | None = None,
        index_kind: str | None = None,
        memory_budget: str | int | None = None,
        create: bool = False,
    ) -> Collection:
        """Open the collection in ``db`` (``create``: make it if missing).

        ``index_kind`` / ``memory_budget``: the search index to keep (see index.budget);
        saved in the manifest, so they apply to later commands too.
        """
        root = Path(db).expanduser() if db is not None else default_db()
        index_settings = _index_settings(index_kind, memory_budget)
        adapter_path = Path(adapter).expanduser().absolute() if adapter else None
        manifest = _read_or_recover_manifest(root)
        if manifest is None:
            if not create:
                raise CollectionError(
                    f"{root}: no collection here yet; index some images first: "
                    f"`lookalike index PATH --db {root}`"
                )
            # Built first: a bad model name leaves no empty folder behind.
            embedder = _build_embedder(model, model_options, adapter_path)
            root.mkdir(parents=True, exist_ok=True)
            # Creating takes the writer lock, then looks again: of two first-time runs
            # only one writes a manifest; the other opens what it made (or is refused).
            lock_fh = take_lock(root)
            try:
                manifest = _read_or_recover_manifest(root)
                if manifest is None:
                    return cls._create(
                        root, embedder, model_options, adapter_path, index_settings, lock_fh
                    )
            finally:
                if manifest is not None:
                    lock_fh.close()
        stored_name = manifest["model"]["model"]
        if model is not None and "+" in model:
            from lookalike.models.combined import canonical_name

            model = canonical_name(model)
        if model is not None and model != stored_name:
            raise ModelMismatchError(
                f"{root} holds vectors from model {stored_name!r}, not {model!r}; "
                f"index with --model {stored_name}, or use another --db folder for {model!r}"
            )
        if adapter_path is not None:
            # Checked now, by content: searching stored vectors never builds the model.
            check_recorded_adapter(manifest.get("adapter"), adapter_path, root)
        elif manifest.get("adapter"):
            adapter_path = Path(manifest["adapter"]["path"])
        if model_options is None:
            model_options = _stored_options(manifest)
        elif model_options.recipe is None:
            # The collection keeps the preprocessing recipe its vectors were made with.
            model_options = replace(model_options, recipe=_stored_options(manifest).recipe)
        store = Store(root, manifest)
        try:
            if not create:  # `index` (create) repairs a short vector file instead
                store.check_vectors()
        except CollectionError:
            store.close()
            raise
        stored_index = manifest.get("index", {})
        if index_settings and {**stored_index, **index_settings} != stored_index:
            # Takes effect at the next sync (the next `index` run rebuilds the index).
            manifest["index"] = {**stored_index, **index_settings}
            store.save_manifest()
        return cls(store, model_options, adapter_path)

    @classmethod
    def _create(
        cls,
        root: Path,
        embedder: Embedder,
        model_options: ModelOptions | None,
        adapter_path: Path | None,
        index_settings: dict[str, Any],
        lock_fh: Any,
    ) -> Collection:
        if Store.has_data(root):
            lock_fh.close()
            raise CollectionError(
                f"{root}: holds vectors and metadata but no {MANIFEST}, so which model made "
                "them is unknown; restore manifest.json from a backup, or index into a new "
                "--db folder"
            )
        # An interrupted create (crash before the rename) leaves only this behind.
        (root / (MANIFEST + ".tmp")).unlink(missing_ok=True)
        try:
            store = Store.create(
                root,
                {
                    "model": embedder.info.identity(),
                    "adapter": _adapter_identity(embedder),
                    # Where explicit weights came from, so later commands need no --weights.
                    "weights_file": _weights_file(model_options),
                    "index": {"kind": "auto", **index_settings},
                },
                lock_fh,
            )
        except BaseException:
            lock_fh.close()
            raise
        return cls(store, model_options, adapter_path, embedder)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ----- the model -------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return str(self.store.manifest["model"]["model"])

    @property
    def embedder(self) -> Embedder:
        """The collection's model, built on first use and checked against the manifest."""
        if self._embedder is None:
            self._embedder = _build_embedder(self.model_name, self.model_options, self.adapter_path)
        self._check_identity(self._embedder)
        return self._embedder

    def _check_identity(self, embedder: Embedder) -> None:
        stored = self.store.manifest["model"]
        ours = embedder.info.identity()
        if stored != ours:
            diff = sorted(k for k in set(stored) | set(ours) if stored.get(k) != ours.get(k))
            raise ModelMismatchError(
                f"{self.store.root} was built with {stored['model']!r} "
                f"(differs in {', '.join(diff)}); vectors from different models can't be "
                "mixed: use the same model options, or another --db folder"
            )
        if not same_adapter(self.store.manifest.get("adapter"), _adapter_identity(embedder)):
            raise ModelMismatchError(
                f"{self.store.root} was built with adapter "
                f"{(self.store.manifest.get('adapter') or {}).get('path')!r}, not "
                f"{str(self.adapter_path) if self.adapter_path else None!r}; "
                "use the same --adapter, or another --db folder"
            )

    # ----- indexing --------------------------------------------------------------------
    def index(
        self,
        paths: Sequence[str | os.PathLike[str]],
        batch_size: int = 32,
        progress: ProgressFn | None = None,
    ) -> IndexReport:
        """Add new/changed images under ``paths``, drop deleted ones; see IndexReport."""
        embedder = self.embedder
        self.store.lock()
        try:
            # Images whose vectors were cut off the end of the file are forgotten and
            # embedded again from their files; appending over their rows would make
            # two images share one vector.
            lost = self.store.drop_missing_rows()
            paths = [*paths, *(p for p in lost if os.path.lexists(p))]
            report = index_paths(self.store, embedder, paths, batch_size, progress)
            report.repaired = len(lost)
            # Changed and deleted files leave dead rows in the append-only vector file.
            reclaimed = 0
            if self.store.dead_rows() > COMPACT_DEAD_FRACTION * self.store.vector_rows():
                reclaimed = self.store.compact()
            report.index = self.indexes.sync()
            if reclaimed:
                report.index["vector_rows_reclaimed"] = reclaimed
        finally:
            self.store.unlock()
        return report

    # ----- reading ---------------------------------------------------------------------
    def count(self) -> int:
        return self.store.count()

    def get(self, image_id: int) -> ImageRecord:
        return self.store.get(image_id)

    def records(self, offset: int = 0, limit: int = 100) -> list[ImageRecord]:
        return self.store.records(offset, limit)

    def info(self) -> dict[str, Any]:
        manifest = self.store.manifest
        # Everything on disk, index generations (index-<ns>/ folders) included.
        files = [p for p in self.store.root.rglob("*") if p.is_file()]
        return {
            "db": str(self.store.root.absolute()),
            "model": self.model_name,
            "dim": self.store.dim,
            "count": self.count(),
            "bytes": sum(p.stat().st_size for p in files),
            "vector_rows": self.store.vector_rows(),
            "skipped": self.store.skipped(),
            "model_identity": manifest["model"],
            "adapter": manifest.get("adapter"),
            "format_version": manifest["format_version"],
            "index": self.indexes.describe(),
        }

    # ----- searching -------------------------------------------------------------------
    def embed_images(self, images: Sequence[Image.Image]) -> FloatArray:
        return self.embedder.embed_images(list(images))

    def search(
        self, queries: Sequence[Query], k: int = 10, metric: str = "cosine", batch_size: int = 32
    ) -> list[QueryResult]:
        """Top-k look-alikes of each query (image files or PIL images).

        A query that is itself an indexed file is left out of its own results. A query
        file that cannot be read raises ImageReadError naming it.
        """
        _check_search_args(k, metric)
        labels: list[str] = []
        vectors = np.zeros((len(queries), self.store.dim), dtype=np.float32)
        exclude = np.full(len(queries), MISSING_ID, dtype=np.int64)
        to_embed: list[tuple[int, Image.Image]] = []
        for i, query in enumerate(queries):
            if isinstance(query, Image.Image):
                labels.append(f"<image {i}>")
                to_embed.append((i, query.convert("RGB")))
                continue
            path = absolute(query)  # the key the indexer stored it under
            labels.append(str(path))
            record = self.store.by_path(str(path))
            if record is not None and _unchanged(path, record):
                vectors[i] = self.store.matrix()[record.row]
                exclude[i] = record.id
            else:
                if record is not None:
                    exclude[i] = record.id
                to_embed.append((i, load_image(path, min_side=self.embedder.draft_size)))
        for start in range(0, len(to_embed), batch_size):
            chunk = to_embed[start : start + batch_size]
            vectors[[i for i, _ in chunk]] = self.embed_images([im for _, im in chunk])
        hits = self.search_vectors(vectors, k, metric, exclude_ids=exclude)
        return [QueryResult(q, h) for q, h in zip(labels, hits, strict=True)]

    def search_by_id(
        self, ids: Sequence[int], k: int = 10, metric: str = "cosine"
    ) -> list[QueryResult]:
        """ "More like this": neighbours of indexed images, themselves excluded."""
        _check_search_args(k, metric)
        records = [self.store.get(int(i)) for i in ids]
        vectors = self.store.vectors_for([r.id for r in records])
        exclude = np.array([r.id for r in records], dtype=np.int64)
        hits = self.search_vectors(vectors, k, metric, exclude_ids=exclude)
        return [QueryResult(r.path, h) for r, h in zip(records, hits, strict=True)]

    def search_all(
        self, k: int = 10, metric: str = "cosine", batch: int = 512
    ) -> Iterator[QueryResult]:
        """Each indexed image's k nearest neighbours, streamed in batches."""
        _check_search_args(k, metric)
        ids: list[int] = []
        for record in self.store.iter_records():
            ids.append(record.id)
            if len(ids) == batch:
                yield from self.search_by_id(ids, k, metric)
                ids = []
        if ids:
            yield from self.search_by_id(ids, k, metric)

    def search_vectors(
        self,
        vectors: FloatArray,
        k: int = 10,
        metric: str = "cosine",
        exclude_ids: IdArray | None = None,
    ) -> list[list[Hit]]:
        _check_search_args(k, metric)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) == 0:
            return []
        excluding = exclude_ids is not None and bool(np.any(exclude_ids != MISSING_ID))
        raw = self.indexes.search(vectors, k + 1 if excluding else k)
        return self._to_hits(raw, k, metric, exclude_ids)

    def _to_hits(
        self, raw: SearchHits, k: int, metric: str, exclude_ids: IdArray | None
    ) -> list[list[Hit]]:
        found = raw.ids[raw.ids != MISSING_ID]
        paths = self.store.ids_and_paths(np.unique(found).tolist())
        out: list[list[Hit]] = []
        for row in range(raw.ids.shape[0]):
            skip = int(exclude_ids[row]) if exclude_ids is not None else MISSING_ID
            hits: list[Hit] = []
            for image_id, score in zip(raw.ids[row], raw.scores[row], strict=True):
                if image_id in (MISSING_ID, skip) or int(image_id) not in paths:
                    continue
                distance = float(cosine_to_euclidean(score)) if metric == "euclidean" else None
                hits.append(
                    Hit(len(hits) + 1, int(image_id), paths[int(image_id)], float(score), distance)
                )
                if len(hits) == k:
                    break
            out.append(hits)
        return out

    # ----- near duplicates -------------------------------------------------------------
    def duplicates(
        self, threshold: float = 0.95, k: int = 10, effort: float = DUPLICATES_EFFORT
    ) -> list[DuplicateGroup]:
        """Groups of images whose similarity to their group's representative is >= threshold
        (leader clustering over a k-NN graph, so groups never chain), largest first; each
        with a suggested copy to keep.

        ``effort``: search width of an approximate index relative to its tuning (see
        IndexManager.search); the default trades time for missing fewer pairs.
        """
        groups: list[DuplicateGroup] = []
        for cluster in leader_clusters(self._links(threshold, k, effort)):
            # Scores from the stored vectors, not the index: an approximate index's are
            # estimates, and a member must really be within the threshold.
            vectors = self.store.vectors_for(cluster.members).astype(np.float64)
            exact = (vectors @ vectors[0]).tolist()
            members = [cluster.representative] + [
                m
                for m, s in zip(cluster.members[1:], exact[1:], strict=True)
                if s >= threshold - SCORE_SLACK
            ]
            if len(members) < 2:
                continue
            score_of = dict(zip(cluster.members, exact, strict=True))
            score_of[cluster.representative] = 1.0
            group = [self._member(i, score_of[i]) for i in members]
            by_id = sorted(group, key=lambda m: m.id)
            groups.append(
                DuplicateGroup(
                    ids=[m.id for m in by_id],
                    paths=[m.path for m in by_id],
                    min_score=min(m.score for m in group[1:]),
                    members=group,
                    keep=suggest_keep(group).path,
                )
            )
        groups.sort(key=lambda g: (-len(g.ids), g.ids[0]))
        return groups

    def duplicate_pairs(
        self, threshold: float = 0.95, k: int = 10, effort: float = DUPLICATES_EFFORT
    ) -> list[DuplicatePair]:
        """Every linked pair with similarity >= threshold (each pair once), best first.
        Limited, like the groups, to each image's k nearest neighbours."""
        links = self._links(threshold, k, effort)
        pairs = list(links)
        paths = self.store.ids_and_paths({i for pair in pairs for i in pair})
        out: list[DuplicatePair] = []
        for start in range(0, len(pairs), 4096):
            chunk = pairs[start : start + 4096]
            a = self.store.vectors_for([p[0] for p in chunk]).astype(np.float64)
            b = self.store.vectors_for([p[1] for p in chunk]).astype(np.float64)
            for (ia, ib), score in zip(chunk, np.einsum("ij,ij->i", a, b).tolist(), strict=True):
                if score >= threshold - SCORE_SLACK:
                    out.append(DuplicatePair(paths[ia], paths[ib], min(float(score), 1.0)))
        out.sort(key=lambda p: (-p.score, p.a, p.b))
        return out

    def _links(self, threshold: float, k: int, effort: float) -> Links:
        if not -1.0 <= threshold <= 1.0:
            raise CollectionError(f"threshold must be between -1 and 1, got {threshold}")
        if effort <= 0:
            raise CollectionError(f"effort must be positive, got {effort}")
        ids = np.array([r.id for r in self.store.iter_records()], dtype=np.int64)
        batches = neighbour_batches(
            ids,
            lambda chunk: self.store.vectors_for(chunk.tolist()),
            lambda vectors, n: self.indexes.search(vectors, n, effort=effort),
            k + 1,
        )
        return similar_links(batches, threshold)

    def _member(self, image_id: int, score: float) -> GroupMember:
        r = self.store.get(image_id)
        return GroupMember(r.id, r.path, min(score, 1.0), r.width, r.height, r.size, r.mtime_ns)


def _read_or_recover_manifest(root: Path) -> dict[str, Any] | None:
    """manifest.json, or when it is gone, the copy meta.sqlite keeps (written back when
    the folder is writable): vectors are never read under a model they weren't made by."""
    manifest = Store.read_manifest(root)
    if manifest is not None:
        return manifest
    recorded = Store.recorded_manifest(root)
    if recorded is not None and os.access(root, os.W_OK):
        write_json_atomic(root / MANIFEST, recorded)
    return recorded


def _unchanged(path: Path, record: ImageRecord) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_size == record.size and st.st_mtime_ns == record.mtime_ns


def _stored_options(manifest: dict[str, Any]) -> ModelOptions:
    """The options a collection was built with, as far as its manifest records them.

    Pooling is part of the model's identity, so reopening a "gem" collection with the
    default options ("avg") would refuse every search; the manifest says which it was.
    """
    preprocessing = manifest["model"].get("preprocessing", {})
    pool = preprocessing.get("pool")
    recipe = preprocessing.get("recipe")
    weights = manifest.get("weights_file")
    return ModelOptions(
        pool=pool if isinstance(pool, str) else "avg",
        weights=Path(weights) if isinstance(weights, str) else None,
        # Only recipes this version reproduces; any other is refused by the identity check.
        recipe=recipe if recipe in KNOWN_RECIPES else None,
    )


def _index_settings(kind: str | None, memory_budget: str | int | None) -> dict[str, Any]:
    """Validated index options as stored in manifest["index"]; only those given."""
    from lookalike.index.budget import KINDS, parse_memory_budget

    settings: dict[str, Any] = {}
    if kind is not None:
        if kind not in KINDS:
            raise CollectionError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
        settings["kind"] = kind
    if memory_budget is not None:
        settings["memory_budget"] = parse_memory_budget(memory_budget)
    return settings


def _weights_file(options: ModelOptions | None) -> str | None:
    if options is None or options.weights is None:
        return None
    return str(Path(options.weights).expanduser().absolute())


def _check_search_args(k: int, metric: str) -> None:
    if k < 1:
        raise CollectionError(f"k must be at least 1, got {k}")
    if metric not in METRICS:
        raise CollectionError(f"unknown metric {metric!r}; use one of: {', '.join(METRICS)}")


def _build_embedder(
    name: str | None, options: ModelOptions | None, adapter: Path | None
) -> Embedder:
    """``name``'s embedder; None: the adapter's model, or the default chosen for this machine."""
    if name is None and adapter is not None:
        from lookalike.adapters import load_adapter

        name = str(load_adapter(adapter)[0].model["model"])
    if name is None:
        from lookalike.models.defaults import create_default_embedder

        embedder = create_default_embedder(options)
    else:
        embedder = create_embedder(name, options)
    if adapter is not None:
        from lookalike.adapters import apply_adapter

        embedder = apply_adapter(embedder, adapter)
    return embedder


def _adapter_identity(embedder: Embedder) -> dict[str, Any] | None:
    identity = getattr(embedder, "adapter_identity", None)
    return identity() if callable(identity) else None


__all__ = ["Collection", "ImageReadError"]
