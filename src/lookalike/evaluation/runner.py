"""Evaluate a model on a labelled folder: embed (with a cache), find neighbours, score.

Embeddings are cached as an ordinary lookalike collection per (folder, model, options),
under ``<cache dir>/eval/``. Indexing is incremental, so a second evaluation of the same
folder with the same model embeds nothing (only new or changed files).

Two modes:

- leave-one-out (default): every image is a query against all the others;
- separate queries: every image under the query folder is a query against the dataset.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.errors import DatasetError
from lookalike.evaluation.dataset import LabelledImages, read_dataset
from lookalike.evaluation.metrics import (
    MISSING_LABEL,
    RetrievalScores,
    json_number,
    score_neighbours,
    top_confusions,
)
from lookalike.evaluation.paired import compare_keyed
from lookalike.models import ModelOptions
from lookalike.models.preprocess import RECIPE
from lookalike.vectors import FloatArray, cosine_to_euclidean

if TYPE_CHECKING:
    from lookalike.indexer import IndexReport
    from lookalike.reranking import Rerank

ProgressFn = Callable[[int, int], None]
QUERY_BLOCK = 1024  # queries per search block: bounds the (block, n) score matrix


@dataclass
class Embedded:
    """A labelled folder's images that could be embedded, with their vectors."""

    images: LabelledImages
    vectors: FloatArray  # (n, d), row i is images.paths[i]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    embedded: int = 0  # how many had to be embedded in this run (0 = all from cache)
    seconds: float = 0.0


@dataclass
class EvalResult:
    """One model's evaluation on one dataset."""

    model: str
    k: int
    metric: str
    mode: str  # "leave-one-out" | "queries"
    dataset: str
    queries_dir: str | None
    query_paths: list[str]
    gallery_paths: list[str]
    gallery_labels: np.ndarray  # (n,) index into scores.class_names
    neighbours: np.ndarray  # (q, k) index into gallery_paths, -1 where missing
    neighbour_scores: np.ndarray  # (q, k) cosine similarity
    n_relevant: np.ndarray  # (q,)
    scores: RetrievalScores
    skipped: list[tuple[str, str]] = field(default_factory=list)
    embedded: int = 0
    embed_seconds: float = 0.0
    search_seconds: float = 0.0
    rerank: str = "none"  # the re-ranking the neighbours were found with

    @property
    def class_names(self) -> list[str]:
        return self.scores.class_names

    def neighbour_labels(self) -> np.ndarray:
        """(q, k) class of each neighbour, -1 where missing."""
        return labels_of(self.neighbours, self.gallery_labels)

    def distances(self) -> np.ndarray:
        """(q, k) euclidean distances between the unit vectors (same ranking as cosine)."""
        return cosine_to_euclidean(self.neighbour_scores)

    def against(self, other: EvalResult) -> dict[str, Any]:
        """This result's P@k and AP@k against ``other``'s, query by query (the queries both
        read; ``evaluation.paired``: better / worse, the sign test, a verdict)."""
        out: dict[str, Any] = {"model": other.model}
        for key, field_name in (("precision_at_k", "precision"), ("map_at_k", "average_precision")):
            mine = dict(
                zip(self.query_paths, getattr(self.scores, field_name).tolist(), strict=True)
            )
            theirs = dict(
                zip(other.query_paths, getattr(other.scores, field_name).tolist(), strict=True)
            )
            comparison = compare_keyed(mine, theirs)
            out[key] = None if comparison is None else comparison.to_json()
        return out

    def to_json(self) -> dict[str, Any]:
        overall = {key: json_number(v) for key, v in self.scores.overall().items()}
        per_class = {
            name: {key: json_number(v) if key != "queries" else v for key, v in row.items()}
            for name, row in self.scores.per_class().items()
        }
        return {
            "model": self.model,
            "k": self.k,
            "metric": self.metric,
            "mode": self.mode,
            "dataset": self.dataset,
            "queries_dir": self.queries_dir,
            "queries": len(self.query_paths),
            "gallery": len(self.gallery_paths),
            **overall,
            "precision_curve": [json_number(v) for v in self.scores.curve],
            "per_class": per_class,
            "confusions": top_confusions(self.scores.confusion, self.class_names),
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "embedded": self.embedded,
            "embed_seconds": round(self.embed_seconds, 3),
            "search_seconds": round(self.search_seconds, 3),
            "rerank": self.rerank,
        }


def labels_of(neighbours: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """(q, k) gallery indices (-1 = missing) -> their class labels (-1 = missing)."""
    return np.where(neighbours >= 0, gallery_labels[np.maximum(neighbours, 0)], MISSING_LABEL)


def cache_key(folder: Path, model: str, options: ModelOptions) -> str:
    """Names the cached collection of one folder embedded by one model setup."""
    weights = str(Path(options.weights).expanduser().absolute()) if options.weights else None
    blob = json.dumps(
        {
            "folder": str(folder),
            "model": model,
            "weights": weights,
            "pool": options.pool,
            # A new preprocessing recipe must not reuse vectors cached under an older one.
            "recipe": options.recipe or RECIPE,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def embed_labelled(
    images: LabelledImages,
    model: str,
    model_options: ModelOptions | None = None,
    adapter: Path | None = None,
    cache_root: Path | None = None,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    db: str | Path | None = None,
) -> Embedded:
    """Vectors for a labelled folder, through its cached collection (``db``: through that
    collection instead, a folder or a Milvus URI, which must be of the model).

    The cache holds the model's own vectors; an adapter is applied to them afterwards, so
    trying several adapters (or none) on one folder embeds it once.
    """
    from lookalike.errors import ModelMismatchError
    from lookalike.paths import cache_dir

    options = model_options or ModelOptions()
    root: str | Path = (
        db
        if db is not None
        else (cache_root or cache_dir() / "eval") / cache_key(images.root, model, options)
    )
    wanted = [str(p) for p in images.paths]
    # The class folders only: files loose in the root are not embedded for nothing.
    folders = sorted({images.root / p.relative_to(images.root).parts[0] for p in images.paths})
    started = time.perf_counter()
    try:
        report, found, identity = _index_cached(
            root, folders, wanted, model, options, batch_size, progress
        )
    except ModelMismatchError:
        if db is not None:
            raise  # the user's collection, not our cache
        # The weights file behind this cache changed: the cache is ours to rebuild.
        shutil.rmtree(root)
        report, found, identity = _index_cached(
            root, folders, wanted, model, options, batch_size, progress
        )
    keep, vectors = found
    if adapter is not None:
        from lookalike.adapters import check_fit_on, load_adapter

        path = Path(adapter).expanduser().absolute()
        fitted, _ = load_adapter(path)
        check_fit_on(fitted, identity, path)
        vectors = fitted.apply(vectors)
    reasons = {s.path: s.reason for s in report.skipped}
    skipped = [(str(p), "not in a class folder") for p in images.unlabelled]
    skipped += [(str(p), reason) for p, reason in images.errors]
    skipped += [
        (p, reasons.get(p, "not embedded")) for p, ok in zip(wanted, keep, strict=True) if not ok
    ]
    return Embedded(
        images=images.subset(keep),
        vectors=vectors,
        skipped=skipped,
        embedded=report.added + report.updated,
        seconds=time.perf_counter() - started,
    )


def _index_cached(
    root: str | Path,
    folders: list[Path],
    wanted: list[str],
    model: str,
    options: ModelOptions,
    batch_size: int,
    progress: ProgressFn | None,
) -> tuple[IndexReport, tuple[np.ndarray, FloatArray], dict[str, Any]]:
    """Index ``folders`` into the cached collection at ``root``; return the report, which of
    ``wanted`` paths have a vector, those vectors (in order) and the model's identity."""
    from lookalike.collection import Collection
    from lookalike.labelled_vectors import indexed_vectors

    with Collection.open(root, model=model, model_options=options, create=True) as col:
        report = col.index(folders, batch_size=batch_size, progress=progress)
        identity = dict(col.backend.manifest["model"])
        found, vectors = indexed_vectors(col, wanted)
        have = set(found)
        keep = np.array([p in have for p in wanted], dtype=bool)
    return report, (keep, vectors), identity


def nearest(
    gallery: FloatArray, queries: FloatArray, k: int, exclude_self: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(q, k) gallery indices and cosine scores of each query's nearest neighbours.

    ``exclude_self``: queries are the gallery itself (row i = gallery row i) and each row's
    own index is left out of its neighbours.
    """
    from lookalike.index.exact import topk_blockwise

    ids = np.arange(len(gallery), dtype=np.int64)
    take = k + 1 if exclude_self else k
    out_ids = np.empty((len(queries), k), dtype=np.int64)
    out_scores = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), QUERY_BLOCK):
        hits = topk_blockwise(gallery, ids, queries[start : start + QUERY_BLOCK], take)
        found, scores = hits.ids, hits.scores
        if exclude_self:
            own = np.arange(start, start + len(found))[:, None]
            # Stable sort on "is self" moves self last and keeps the rest in rank order;
            # when self is not among the k+1 (exact duplicates tie with it), the last drops.
            order = np.argsort(found == own, axis=1, kind="stable")[:, :k]
            found = np.take_along_axis(found, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
        out_ids[start : start + len(found)] = found
        out_scores[start : start + len(found)] = scores
    return out_ids, out_scores


def reranked_nearest(
    gallery: Embedded, queries: Embedded, k: int, exclude_self: bool, setup: Rerank
) -> tuple[np.ndarray, np.ndarray]:
    """As ``nearest``, each query's shortlist re-ordered by ``setup`` as ``lookalike
    search --rerank`` does it (the images' files for ``verify``)."""
    from lookalike.index.exact import topk_blockwise
    from lookalike.reranking import rerank_search
    from lookalike.verified_search import make_verified

    ids = np.arange(len(gallery.vectors), dtype=np.int64)
    paths = [str(p) for p in gallery.images.paths]
    verified = None
    if setup.method == "verify":
        sources = [str(p) for p in queries.images.paths]
        verified = make_verified(setup, sources, lambda wanted: {i: paths[i] for i in wanted})
    hits = rerank_search(
        queries.vectors,
        k,
        lambda q, n: topk_blockwise(gallery.vectors, ids, q, n),
        lambda wanted: gallery.vectors[wanted],
        setup,
        ids.copy() if exclude_self else None,  # query i is gallery row i
        verified,
    )
    return hits.ids, hits.scores


def evaluate(
    dataset_dir: str | Path,
    model: str,
    k: int = 10,
    metric: str = "cosine",
    queries_dir: str | Path | None = None,
    model_options: ModelOptions | None = None,
    adapter: Path | None = None,
    cache_root: Path | None = None,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    db: str | Path | None = None,
    rerank: Rerank | None = None,
) -> EvalResult:
    """Score ``model`` on a ``class/image`` folder (see the module docstring for modes).
    ``rerank``: neighbours re-ranked as ``lookalike search --rerank`` would give them."""
    from lookalike.results import METRICS

    if metric not in METRICS:
        raise DatasetError(f"unknown metric {metric!r}; use one of: {', '.join(METRICS)}")
    if k < 1:
        raise DatasetError(f"k must be at least 1, got {k}")

    def embed(images: LabelledImages) -> Embedded:
        return embed_labelled(
            images, model, model_options, adapter, cache_root, batch_size, progress, db
        )

    gallery = embed(read_dataset(dataset_dir))
    leave_one_out = queries_dir is None
    queries = (
        gallery
        if queries_dir is None
        else embed(read_dataset(queries_dir, classes=gallery.images.class_names))
    )
    class_names = queries.images.class_names  # the gallery's classes, then query-only ones
    available = len(gallery.images) - (1 if leave_one_out else 0)
    if k > available:
        raise DatasetError(
            f"k={k} but only {available} images can be neighbours in {gallery.images.root}"
            f"{' (leave-one-out excludes the query)' if leave_one_out else ''}; use a smaller -k"
        )
    if len(queries.images) == 0:
        raise DatasetError(f"{queries.images.root}: no readable query images")

    started = time.perf_counter()
    if rerank is None:
        neighbours, neighbour_scores = nearest(
            gallery.vectors, queries.vectors, k, exclude_self=leave_one_out
        )
    else:
        neighbours, neighbour_scores = reranked_nearest(gallery, queries, k, leave_one_out, rerank)
    sizes = np.bincount(gallery.images.labels, minlength=len(class_names))
    n_relevant = sizes[queries.images.labels] - (1 if leave_one_out else 0)
    gallery_labels = gallery.images.labels
    scores = score_neighbours(
        queries.images.labels,
        labels_of(neighbours, gallery_labels),
        neighbour_scores,
        n_relevant,
        class_names,
    )
    search_seconds = time.perf_counter() - started

    skipped = gallery.skipped + ([] if leave_one_out else queries.skipped)
    return EvalResult(
        model=model,
        k=k,
        metric=metric,
        mode="leave-one-out" if leave_one_out else "queries",
        dataset=str(gallery.images.root),
        queries_dir=None if leave_one_out else str(queries.images.root),
        query_paths=[str(p) for p in queries.images.paths],
        gallery_paths=[str(p) for p in gallery.images.paths],
        gallery_labels=gallery_labels,
        neighbours=neighbours,
        neighbour_scores=neighbour_scores,
        n_relevant=n_relevant,
        scores=scores,
        skipped=skipped,
        embedded=gallery.embedded + (0 if leave_one_out else queries.embedded),
        embed_seconds=gallery.seconds + (0.0 if leave_one_out else queries.seconds),
        search_seconds=search_seconds,
        rerank="none" if rerank is None else rerank.describe(),
    )
