"""The Collection: indexed images you can search. Ties together the storage backend (what
is indexed, its vectors and search index: a folder or Milvus, see backends/) and the
embedder (how images become vectors)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from lookalike.adapters import check_recorded_adapter, same_adapter
from lookalike.backends.base import StorageBackend
from lookalike.backends.folder import FolderBackend
from lookalike.backends.locations import parse_db
from lookalike.duplicates import (
    CANDIDATE_FLOOR,
    CANDIDATE_K,
    SCORE_SLACK,
    VERIFY_UP_TO,
    Links,
    leader_clusters,
    neighbour_batches,
    once_per_pair,
    similar_links,
    split_links,
)
from lookalike.engines import EmbedderSpec, EmbedEngine
from lookalike.errors import CollectionError, ImageReadError, ModelMismatchError
from lookalike.images import absolute, load_image
from lookalike.index.base import MISSING_ID, SearchHits
from lookalike.indexer import IndexReport, ProgressFn, index_paths
from lookalike.keeper import suggest_keep
from lookalike.models import Embedder, ModelOptions, create_embedder
from lookalike.models.preprocess import KNOWN_RECIPES
from lookalike.reranking import Rerank, rerank_search
from lookalike.results import (
    METRICS,
    DuplicateGroup,
    DuplicatePair,
    GroupMember,
    Hit,
    QueryResult,
)
from lookalike.store import ImageRecord, Store
from lookalike.vectors import FloatArray, IdArray, cosine_to_euclidean
from lookalike.verified_search import QuerySource, make_verified
from lookalike.verify import FeatureCache

Query = str | os.PathLike[str] | Image.Image
# An approximate index tuned for search misses about 1 - recall of the pairs; duplicates
# is a batch job that should miss few, so it searches wider. At 1M vectors (hnsw-sq8) 4x
# missed 3 of 1,000 planted pairs instead of 17, in 3.2x the time (BENCHMARKS.md).
DUPLICATES_EFFORT = 4.0


class Collection:
    """Open with ``Collection.open``; use as a context manager or call ``close``.

    Programs only against the storage contract (backends/base.py): the images and
    vectors may live in a folder or in Milvus.
    """

    def __init__(
        self,
        store: StorageBackend | Store,
        model_options: ModelOptions | None = None,
        adapter: Path | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        # A bare Store (older callers, fit's caches) is a folder collection.
        self.backend: StorageBackend = FolderBackend(store) if isinstance(store, Store) else store
        self.model_options = model_options or ModelOptions()
        self.adapter_path = adapter
        self._embedder = embedder
        # Stored files' SIFT features for --rerank verify, kept across this collection's
        # searches (a server's); OpenCV is imported only when a verified search runs.
        self._verify_files = FeatureCache()
        self.duplicates_note: str | None = None  # what the last duplicates call skipped

    @property
    def store(self) -> Any:
        """The folder backend's low-level Store (tests, benchmarks); other backends answer
        with themselves, which offer the same reading methods (by_path, vectors_for...)."""
        return self.backend.store if isinstance(self.backend, FolderBackend) else self.backend

    @property
    def indexes(self) -> Any:
        """The folder backend's IndexManager (older callers); None for other backends."""
        return self.backend.indexes if isinstance(self.backend, FolderBackend) else None

    @property
    def index_note(self) -> str | None:
        """One line about the search index (a damaged one was replaced), or None."""
        return self.backend.note

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
        """Open the collection at ``db`` (``create``: make it if missing): a folder, or a
        Milvus URI (``milvus://HOST:PORT/NAME``, ``milvus-lite:///path/file.db``).

        ``index_kind`` / ``memory_budget``: the search index to keep (see index.budget);
        saved in the manifest, so they apply to later commands too.
        """
        location = parse_db(db)
        index_settings = _index_settings(index_kind, memory_budget)
        adapter_path = Path(adapter).expanduser().absolute() if adapter else None
        manifest = location.read_manifest()
        if manifest is None:
            if not create:
                raise CollectionError(
                    f"{location}: no collection here yet; index some images first: "
                    f"`lookalike index PATH --db {location}`"
                )
            # Built first: a bad model name leaves no empty folder behind.
            embedder = _build_embedder(model, model_options, adapter_path)
            # Of two first-time runs only one creates; the other opens what it made.
            backend = location.create(
                {
                    "model": embedder.info.identity(),
                    "adapter": _adapter_identity(embedder),
                    # Where explicit weights came from, so later commands need no --weights.
                    "weights_file": _weights_file(model_options),
                    "index": {"kind": "auto", **index_settings},
                }
            )
            if backend is not None:
                return cls(backend, model_options, adapter_path, embedder)
            manifest = location.read_manifest()
            if manifest is None:
                raise CollectionError(f"{location}: a collection was created here meanwhile")
        stored_name = manifest["model"]["model"]
        if model is not None:
            from lookalike.models.presets import resolve

            model = resolve(model)  # "best" -> the combined name the collection stored
        if model is not None and "+" in model:
            from lookalike.models.combined import canonical_name

            model = canonical_name(model)
        if model is not None and model != stored_name:
            raise ModelMismatchError(
                f"{location} holds vectors from model {stored_name!r}, not {model!r}; "
                f"index with --model {stored_name}, or use another --db folder for {model!r}"
            )
        if adapter_path is not None:
            # Checked now, by content: searching stored vectors never builds the model.
            check_recorded_adapter(manifest.get("adapter"), adapter_path, str(location))
        elif manifest.get("adapter"):
            adapter_path = Path(manifest["adapter"]["path"])
        if model_options is None:
            model_options = _stored_options(manifest)
        else:
            # The collection keeps the recipe and pooling its vectors were made with,
            # unless asked for explicitly (then the identity check refuses a mismatch).
            stored = _stored_options(manifest)
            model_options = replace(
                model_options,
                recipe=model_options.recipe or stored.recipe,
                pool=model_options.pool or stored.pool,
            )
        # `index` (create) repairs a short vector file instead of refusing it.
        backend = location.open(manifest, check=not create)
        stored_index = manifest.get("index", {})
        if index_settings and {**stored_index, **index_settings} != stored_index:
            # Takes effect at the next `index` run (which rebuilds the index).
            backend.manifest["index"] = {**stored_index, **index_settings}
            backend.save_manifest()
        return cls(backend, model_options, adapter_path)

    def close(self) -> None:
        self.backend.close()

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
        return str(self.backend.manifest["model"]["model"])

    def embedder_spec(self) -> EmbedderSpec:
        """How another process (a Ray worker) builds this collection's embedder."""
        return EmbedderSpec(self.model_name, self.model_options, self.adapter_path)

    @property
    def embedder(self) -> Embedder:
        """The collection's model, built on first use and checked against the manifest."""
        if self._embedder is None:
            self._embedder = _build_embedder(self.model_name, self.model_options, self.adapter_path)
        self._check_identity(self._embedder)
        return self._embedder

    def _check_identity(self, embedder: Embedder) -> None:
        stored = self.backend.manifest["model"]
        ours = embedder.info.identity()
        if stored != ours:
            diff = sorted(k for k in set(stored) | set(ours) if stored.get(k) != ours.get(k))
            raise ModelMismatchError(
                f"{self.backend.location} was built with {stored['model']!r} "
                f"(differs in {', '.join(diff)}); vectors from different models can't be "
                "mixed: use the same model options, or another --db folder"
            )
        recorded_adapter = self.backend.manifest.get("adapter")
        if not same_adapter(recorded_adapter, _adapter_identity(embedder)):
            raise ModelMismatchError(
                f"{self.backend.location} was built with adapter "
                f"{(recorded_adapter or {}).get('path')!r}, not "
                f"{str(self.adapter_path) if self.adapter_path else None!r}; "
                "use the same --adapter, or another --db folder"
            )

    # ----- indexing --------------------------------------------------------------------
    def index(
        self,
        paths: Sequence[str | os.PathLike[str]],
        batch_size: int = 32,
        progress: ProgressFn | None = None,
        engine: EmbedEngine | None = None,
    ) -> IndexReport:
        """Add new/changed images under ``paths``, drop deleted ones; see IndexReport.
        ``engine``: where embedding runs (see lookalike.engines; local threads if None)."""
        embedder = self.embedder
        self.backend.lock()
        try:
            lost = self.backend.begin_index_run()
            paths = [*paths, *(p for p in lost if os.path.lexists(p))]
            report = index_paths(self.backend, embedder, paths, batch_size, progress, engine)
            report.repaired = len(lost)
            # The explicit build step: only `index` builds or updates a search index.
            report.index = self.backend.finish_index_run()
        finally:
            self.backend.unlock()
        return report

    # ----- reading ---------------------------------------------------------------------
    def count(self) -> int:
        return self.backend.count()

    def get(self, image_id: int) -> ImageRecord:
        return self.backend.get(image_id)

    def find(self, image_id: int) -> ImageRecord | None:
        """The image with this id, or None."""
        return self.backend.find(image_id)

    def records(self, offset: int = 0, limit: int = 100) -> list[ImageRecord]:
        return self.backend.records(offset, limit)

    def info(self) -> dict[str, Any]:
        manifest = self.backend.manifest
        storage = self.backend.describe()
        return {
            "db": storage["db"],
            "backend": storage["backend"],
            "model": self.model_name,
            "dim": self.backend.dim,
            "count": self.count(),
            "bytes": storage["bytes"],
            "vector_rows": storage["vector_rows"],
            "skipped": self.backend.skipped(),
            "model_identity": manifest["model"],
            "adapter": manifest.get("adapter"),
            "format_version": manifest["format_version"],
            "index": storage["index"],
        }

    # ----- searching -------------------------------------------------------------------
    def embed_images(self, images: Sequence[Image.Image]) -> FloatArray:
        return self.embedder.embed_images(list(images))

    def search(
        self,
        queries: Sequence[Query],
        k: int = 10,
        metric: str = "cosine",
        batch_size: int = 32,
        rerank: Rerank | None = None,
        under: str | os.PathLike[str] | None = None,
    ) -> list[QueryResult]:
        """Top-k look-alikes of each query (image files or PIL images).

        A query that is itself an indexed file is left out of its own results. A query
        file that cannot be read raises ImageReadError naming it. ``rerank``: re-order
        each query's shortlist (lookalike.reranking); scores stay cosine similarities.
        ``under``: only images at or below that folder.
        """
        _check_search_args(k, metric)
        labels: list[str] = []
        vectors = np.zeros((len(queries), self.backend.dim), dtype=np.float32)
        exclude = np.full(len(queries), MISSING_ID, dtype=np.int64)
        to_embed: list[tuple[int, Image.Image]] = []
        sources: list[QuerySource] = []  # what --rerank verify compares the hits with
        for i, query in enumerate(queries):
            if isinstance(query, Image.Image):
                labels.append(f"<image {i}>")
                to_embed.append((i, query.convert("RGB")))
                sources.append(to_embed[-1][1])
                continue
            path = absolute(query)  # the key the indexer stored it under
            labels.append(str(path))
            sources.append(str(path))
            record = self.backend.by_path(str(path))
            if record is not None and _unchanged(path, record):
                vectors[i] = self.backend.vectors_for([record.id])[0]
                exclude[i] = record.id
            else:
                if record is not None:
                    exclude[i] = record.id
                to_embed.append((i, load_image(path, min_side=self.embedder.draft_size)))
        for start in range(0, len(to_embed), batch_size):
            chunk = to_embed[start : start + batch_size]
            vectors[[i for i, _ in chunk]] = self.embed_images([im for _, im in chunk])
        hits = self.search_vectors(
            vectors, k, metric, exclude_ids=exclude, rerank=rerank, under=under, sources=sources
        )
        return [QueryResult(q, h) for q, h in zip(labels, hits, strict=True)]

    def search_by_id(
        self,
        ids: Sequence[int],
        k: int = 10,
        metric: str = "cosine",
        rerank: Rerank | None = None,
        under: str | os.PathLike[str] | None = None,
        store_lock: AbstractContextManager[Any] | None = None,
    ) -> list[QueryResult]:
        """ "More like this": neighbours of indexed images, themselves excluded.
        ``store_lock``: as for search_vectors."""
        _check_search_args(k, metric)
        with store_lock or nullcontext():
            records = [self.backend.get(int(i)) for i in ids]
            vectors = self.backend.vectors_for([r.id for r in records])
        exclude = np.array([r.id for r in records], dtype=np.int64)
        hits = self.search_vectors(
            vectors,
            k,
            metric,
            exclude_ids=exclude,
            rerank=rerank,
            under=under,
            sources=[r.path for r in records],
            store_lock=store_lock,
        )
        return [QueryResult(r.path, h) for r, h in zip(records, hits, strict=True)]

    def search_all(
        self,
        k: int = 10,
        metric: str = "cosine",
        batch: int = 512,
        rerank: Rerank | None = None,
        under: str | os.PathLike[str] | None = None,
    ) -> Iterator[QueryResult]:
        """Each indexed image's k nearest neighbours, streamed in batches (``under``: the
        images below that folder, and neighbours among them)."""
        _check_search_args(k, metric)
        ids: list[int] = []
        records = (
            iter(sorted(self.backend.records_under(_under(under)).values(), key=lambda r: r.id))
            if under is not None
            else self.backend.iter_records()
        )
        for record in records:
            ids.append(record.id)
            if len(ids) == batch:
                yield from self.search_by_id(ids, k, metric, rerank=rerank, under=under)
                ids = []
        if ids:
            yield from self.search_by_id(ids, k, metric, rerank=rerank, under=under)

    def search_vectors(
        self,
        vectors: FloatArray,
        k: int = 10,
        metric: str = "cosine",
        exclude_ids: IdArray | None = None,
        rerank: Rerank | None = None,
        under: str | os.PathLike[str] | None = None,
        sources: Sequence[QuerySource] | None = None,
        store_lock: AbstractContextManager[Any] | None = None,
    ) -> list[list[Hit]]:
        """``sources``: the query images (files or images), which ``--rerank verify``
        needs; the other methods use the vectors only. ``store_lock`` (a server's): held
        around each read of the store, so that verify's work on image files runs without
        it and other requests are not held up meanwhile."""
        _check_search_args(k, metric)
        folder = _under(under) if under is not None else None
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) == 0:
            return []
        held = store_lock or nullcontext()
        if rerank is not None:

            def search(q: FloatArray, n: int) -> SearchHits:
                with held:
                    return self.backend.search(q, n, under=folder)

            def vectors_of(ids: IdArray) -> FloatArray:
                with held:
                    return self.backend.vectors_for(np.asarray(ids).tolist())

            def paths_of(ids: list[int]) -> dict[int, str]:
                with held:
                    return self.backend.ids_and_paths(ids)

            raw = rerank_search(
                vectors,
                k,
                search,
                vectors_of,
                rerank,
                exclude_ids,
                verified=(
                    make_verified(rerank, sources, paths_of, self._verify_files)
                    if rerank.method == "verify" and sources is not None
                    else None
                ),
            )
            with held:
                return self._to_hits(raw, k, metric, None)  # the excluded are already out
        excluding = exclude_ids is not None and bool(np.any(exclude_ids != MISSING_ID))
        with held:
            raw = self.backend.search(vectors, k + 1 if excluding else k, under=folder)
            return self._to_hits(raw, k, metric, exclude_ids)

    def _to_hits(
        self, raw: SearchHits, k: int, metric: str, exclude_ids: IdArray | None
    ) -> list[list[Hit]]:
        found = raw.ids[raw.ids != MISSING_ID]
        paths = self.backend.ids_and_paths(np.unique(found).tolist())
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
        self,
        threshold: float = 0.95,
        k: int = 10,
        effort: float = DUPLICATES_EFFORT,
        verify: bool = True,
    ) -> list[DuplicateGroup]:
        """Groups of images whose similarity to their group's representative is >= threshold
        (leader clustering over a k-NN graph, so groups never chain), largest first; each
        with a suggested copy to keep.

        ``effort``: search width of an approximate index relative to its tuning (see
        IndexManager.search); the default trades time for missing fewer pairs.
        ``verify``: also join pairs scoring below the threshold (down to CANDIDATE_FLOOR)
        that local features show to be one image under an affine map (rotation, crop, flip,
        grey; lookalike.verify); such members have ``verified`` set. Needs OpenCV; without
        it this is skipped and ``duplicates_note`` says so.
        """
        links, candidates, check = self._duplicate_links(threshold, k, effort, verify)
        verified: set[tuple[int, int]] = set()

        def confirm(a: int, b: int) -> bool:
            if check is None or not check(a, b):
                return False
            verified.add(_key(a, b))
            return True

        groups: list[DuplicateGroup] = []
        for cluster in leader_clusters(links, candidates, confirm):
            # Scores from the stored vectors, not the index: an approximate index's are
            # estimates, and a member must really be within the threshold.
            vectors = self.backend.vectors_for(cluster.members).astype(np.float64)
            exact = (vectors @ vectors[0]).tolist()
            rep = cluster.representative
            joined = {m for m in cluster.members[1:] if _key(rep, m) in verified}
            members = [rep] + [
                m
                for m, s in zip(cluster.members[1:], exact[1:], strict=True)
                if s >= threshold - SCORE_SLACK or m in joined
            ]
            if len(members) < 2:
                continue
            score_of = dict(zip(cluster.members, exact, strict=True))
            score_of[rep] = 1.0
            group = [self._member(i, score_of[i], i in joined) for i in members]
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
        self,
        threshold: float = 0.95,
        k: int = 10,
        effort: float = DUPLICATES_EFFORT,
        verify: bool = True,
    ) -> list[DuplicatePair]:
        """Every linked pair with similarity >= threshold (each pair once), best first, plus
        with ``verify`` the weaker pairs local features confirmed (``verified`` set), after
        them. Limited, like the groups, to each image's k nearest neighbours."""
        links, candidates, check = self._duplicate_links(threshold, k, effort, verify)
        verified = {p for p in candidates if check is not None and check(*p)}
        pairs = [*links, *verified]
        paths = self.backend.ids_and_paths({i for pair in pairs for i in pair})
        out: list[DuplicatePair] = []
        for start in range(0, len(pairs), 4096):
            chunk = pairs[start : start + 4096]
            a = self.backend.vectors_for([p[0] for p in chunk]).astype(np.float64)
            b = self.backend.vectors_for([p[1] for p in chunk]).astype(np.float64)
            for (ia, ib), score in zip(chunk, np.einsum("ij,ij->i", a, b).tolist(), strict=True):
                checked = (ia, ib) in verified
                if score >= threshold - SCORE_SLACK or checked:
                    out.append(DuplicatePair(paths[ia], paths[ib], min(float(score), 1.0), checked))
        out.sort(key=lambda p: (p.verified, -p.score, p.a, p.b))
        return out

    def _duplicate_links(
        self, threshold: float, k: int, effort: float, verify: bool
    ) -> tuple[Links, Links, Callable[[int, int], bool] | None]:
        """Links >= threshold; with ``verify``, also the weaker candidates (down to
        CANDIDATE_FLOOR) and the check that confirms one. Sets ``duplicates_note``."""
        from lookalike import verify as local

        self.duplicates_note = None
        if not verify or not CANDIDATE_FLOOR < threshold <= VERIFY_UP_TO:
            return self._links(threshold, k, effort), {}, None
        if not local.available():
            self.duplicates_note = (
                f"verification of pairs below {threshold} skipped: OpenCV is not installed "
                f"({local.INSTALL_HINT})"
            )
            return self._links(threshold, k, effort), {}, None
        links, candidates = split_links(
            self._links(CANDIDATE_FLOOR, max(k, CANDIDATE_K), effort), threshold
        )
        paths = self.backend.ids_and_paths({i for pair in candidates for i in pair})
        verifier = local.Verifier(lambda i: paths[i])

        def check(a: int, b: int) -> bool:
            passed = verifier.check(a, b).passes(verifier.settings)
            if verifier.unreadable:
                self.duplicates_note = (
                    f"{len(verifier.unreadable)} file(s) could not be read for verification, "
                    f"e.g. {verifier.unreadable[0]}"
                )
            return passed

        return links, candidates, once_per_pair(check)

    def _links(self, threshold: float, k: int, effort: float) -> Links:
        if not -1.0 <= threshold <= 1.0:
            raise CollectionError(f"threshold must be between -1 and 1, got {threshold}")
        if effort <= 0:
            raise CollectionError(f"effort must be positive, got {effort}")
        ids = np.array([r.id for r in self.backend.iter_records()], dtype=np.int64)
        batches = neighbour_batches(
            ids,
            lambda chunk: self.backend.vectors_for(chunk.tolist()),
            lambda vectors, n: self.backend.search(vectors, n, effort=effort),
            k + 1,
        )
        return similar_links(batches, threshold)

    def _member(self, image_id: int, score: float, verified: bool = False) -> GroupMember:
        r = self.backend.get(image_id)
        return GroupMember(
            r.id, r.path, min(score, 1.0), r.width, r.height, r.size, r.mtime_ns, verified
        )


def _key(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def _unchanged(path: Path, record: ImageRecord) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_size == record.size and st.st_mtime_ns == record.mtime_ns


def _stored_options(manifest: dict[str, Any]) -> ModelOptions:
    """The options a collection was built with, as far as its manifest records them.

    Pooling is part of the model's identity, so reopening an "avg" collection with the
    default options (now "gem" for new EfficientNet-Lite collections) would refuse every
    search; the manifest says which it was (no "pool" recorded: avg, the only one then).
    """
    preprocessing = manifest["model"].get("preprocessing", {})
    weights = manifest.get("weights_file")
    weights_file = Path(weights) if isinstance(weights, str) else None
    parts = preprocessing.get("parts")
    if isinstance(parts, list) and parts:
        return _combined_options(parts, weights_file)
    pool = preprocessing.get("pool")
    recipe = preprocessing.get("recipe")
    return ModelOptions(
        pool=pool if isinstance(pool, str) else "avg",
        weights=weights_file,
        # Only recipes this version reproduces; any other is refused by the identity check.
        recipe=recipe if recipe in KNOWN_RECIPES else None,
    )


def _combined_options(parts: list[Any], weights_file: Path | None) -> ModelOptions:
    """A combined model's options: its parts share one ModelOptions, so a pool or recipe
    that every part records is the one to ask for; where they differ, each part's own
    default made them (a timm part's avg beside a Lite part's gem), so ask for none."""

    def recorded(part: Any, key: str) -> Any:
        pre = part.get("preprocessing", {}) if isinstance(part, dict) else {}
        return pre.get(key, "avg" if key == "pool" else None)

    pools = {recorded(p, "pool") for p in parts}
    recipes = {recorded(p, "recipe") for p in parts}
    pool = pools.pop() if len(pools) == 1 else None
    recipe = recipes.pop() if len(recipes) == 1 else None
    return ModelOptions(
        pool=pool if isinstance(pool, str) else None,
        weights=weights_file,
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


def _under(folder: str | os.PathLike[str]) -> str:
    """A filter folder spelled as the indexer stores paths (absolute, no trailing slash)."""
    return str(absolute(folder))


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
