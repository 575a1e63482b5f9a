"""One builder per approximate index kind: how to make, tune, search, save and load it.

IndexManager picks the builder by kind name (``builder_for``) instead of asking each
index what it is; adding a kind means adding a class here and a name in budget.KINDS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import IndexBuildError
from lookalike.index.base import SearchHits
from lookalike.index.budget import HNSW_M, ivf_nlist, pq_m
from lookalike.index.hnsw import HNSWIndex
from lookalike.index.ivfpq import IVFPQIndex, pq_nbits
from lookalike.index.rerank import exact_scores, rerank
from lookalike.index.tuning import (
    Tuned,
    hnsw_configs,
    hnsw_cost,
    hnsw_probes,
    ivfpq_cost,
    ivfpq_probes,
    tune,
    tune_shortlist,
)
from lookalike.vectors import FloatArray, IdArray

Approx = HNSWIndex | IVFPQIndex
VectorsOf = Callable[[IdArray], FloatArray]  # stored vectors of image ids (exact)

HNSW_EF_CONSTRUCTION = 40
# hnsw-sq8 re-ranks a shortlist exactly: 8-bit scores misorder near-ties, and a longer
# shortlist fixes that more cheaply than a wider graph search.
SQ8_SHORTLISTS = (10, 20, 30, 40, 60, 80)
SQ8_TRAIN = 100_000


def scaled_shortlist(shortlist: int, k: int) -> int:
    """Shortlists are tuned for k = 10; a larger k gets a proportionally longer one."""
    return max(shortlist, -(-shortlist * k // 10), k)


class Builder(ABC):
    """Everything kind-specific about one approximate index kind."""

    kind: str

    @abstractmethod
    def create(
        self,
        dim: int,
        build_ids: IdArray,
        rng: np.random.Generator,
        vectors_of: VectorsOf,
        seed: int = 0,
    ) -> Approx:
        """An empty index, trained where the kind needs it (on a sample of build_ids)."""

    @abstractmethod
    def tune(
        self,
        index: Approx,
        queries: FloatArray,
        truth_scores: FloatArray,
        target: float,
        vectors_of: VectorsOf,
    ) -> Tuned:
        """Search parameters reaching ``target`` recall@10 on held-out queries."""

    @abstractmethod
    def search(
        self, index: Any, q: FloatArray, k: int, params: dict[str, Any], vectors_of: VectorsOf
    ) -> SearchHits:
        """Top-k with exact scores (re-ranked from the stored vectors where needed)."""

    @abstractmethod
    def apply(self, index: Any, params: dict[str, Any]) -> None:
        """Make the tuned parameters the index's defaults."""

    @abstractmethod
    def load(self, folder: Path, params: dict[str, Any], mmap: bool) -> Approx: ...

    def save(self, index: Any, folder: Path, unchanged_from: Path | None) -> None:
        index.save(folder)

    def rebuild_for_removals(self, index: Any, removing: int, adding: int) -> str | None:
        """Why removing that many entries calls for a rebuild instead (None: it doesn't)."""
        return None

    def files_unchanged_by_removals(self) -> bool:
        """Whether an update that only removes may keep the index file as it is."""
        return False


class HNSWBuilder(Builder):
    """Float32 HNSW graph: its scores are exact, tuned on efSearch alone."""

    kind = "hnsw"
    sq8 = False
    rebuild_deleted = 0.2  # rebuild once a fifth of the graph is deleted entries

    def create(
        self,
        dim: int,
        build_ids: IdArray,
        rng: np.random.Generator,
        vectors_of: VectorsOf,
        seed: int = 0,
    ) -> Approx:
        return HNSWIndex(dim, m=HNSW_M, sq8=self.sq8, ef_construction=HNSW_EF_CONSTRUCTION)

    def tune(
        self,
        index: Approx,
        queries: FloatArray,
        truth_scores: FloatArray,
        target: float,
        vectors_of: VectorsOf,
    ) -> Tuned:
        def searcher(q: FloatArray, params: dict[str, Any], k: int) -> SearchHits:
            return self.search(index, q, k, params, vectors_of)

        return tune(hnsw_configs(10), searcher, queries, truth_scores, target)

    def search(
        self, index: Any, q: FloatArray, k: int, params: dict[str, Any], vectors_of: VectorsOf
    ) -> SearchHits:
        shortlist = scaled_shortlist(int(params["shortlist"]), k)
        hits = index.search(q, shortlist, ef_search=max(int(params["ef_search"]), shortlist))
        return SearchHits(scores=hits.scores[:, :k], ids=hits.ids[:, :k])

    def apply(self, index: Any, params: dict[str, Any]) -> None:
        index.ef_search = int(params["ef_search"])

    def load(self, folder: Path, params: dict[str, Any], mmap: bool) -> Approx:
        return HNSWIndex.load(folder, params, mmap=mmap)

    def save(self, index: Any, folder: Path, unchanged_from: Path | None) -> None:
        index.save(folder, index_unchanged_from=unchanged_from)

    def rebuild_for_removals(self, index: Any, removing: int, adding: int) -> str | None:
        dead = int(np.count_nonzero(index.deleted)) + removing
        entries = len(index.deleted) + adding
        if dead > self.rebuild_deleted * entries:
            return f"compaction: {dead} of {entries} graph entries would be deleted ones"
        return None

    def files_unchanged_by_removals(self) -> bool:
        return True  # removals only mark entries deleted (deleted.npy), not the graph


class SQ8Builder(HNSWBuilder):
    """8-bit HNSW: a shortlist from the graph, re-ranked exactly."""

    kind = "hnsw-sq8"
    sq8 = True

    def create(
        self,
        dim: int,
        build_ids: IdArray,
        rng: np.random.Generator,
        vectors_of: VectorsOf,
        seed: int = 0,
    ) -> Approx:
        index = super().create(dim, build_ids, rng, vectors_of, seed)
        n_train = min(len(build_ids), SQ8_TRAIN)
        index.train(vectors_of(np.sort(rng.choice(build_ids, n_train, False))))
        return index

    def tune(
        self,
        index: Approx,
        queries: FloatArray,
        truth_scores: FloatArray,
        target: float,
        vectors_of: VectorsOf,
    ) -> Tuned:
        graph = index
        assert isinstance(graph, HNSWIndex)  # builders are chosen by kind

        def candidates(q: FloatArray, probe: dict[str, Any], width: int) -> FloatArray:
            hits = graph.search(q, width, ef_search=max(int(probe["ef_search"]), width))
            return exact_scores(q, hits.ids, vectors_of)

        return tune_shortlist(
            hnsw_probes(max(SQ8_SHORTLISTS)),
            candidates,
            hnsw_cost(index.dim, HNSW_M),
            queries,
            truth_scores,
            target,
            shortlists=SQ8_SHORTLISTS,
        )

    def search(
        self, index: Any, q: FloatArray, k: int, params: dict[str, Any], vectors_of: VectorsOf
    ) -> SearchHits:
        shortlist = scaled_shortlist(int(params["shortlist"]), k)
        hits = index.search(q, shortlist, ef_search=max(int(params["ef_search"]), shortlist))
        return rerank(q, hits.ids, vectors_of, k)


class IVFPQBuilder(Builder):
    """IVF with product-quantised codes: a shortlist from the lists, re-ranked exactly."""

    kind = "ivfpq"

    def create(
        self,
        dim: int,
        build_ids: IdArray,
        rng: np.random.Generator,
        vectors_of: VectorsOf,
        seed: int = 0,
    ) -> Approx:
        nlist = ivf_nlist(len(build_ids))
        n_train = min(len(build_ids), IVFPQIndex.train_size(nlist))
        index = IVFPQIndex(dim, nlist=nlist, m=pq_m(dim), nbits=pq_nbits(n_train))
        sample = np.sort(rng.choice(build_ids, size=n_train, replace=False))
        index.train(vectors_of(sample), seed=seed)
        return index

    def tune(
        self,
        index: Approx,
        queries: FloatArray,
        truth_scores: FloatArray,
        target: float,
        vectors_of: VectorsOf,
    ) -> Tuned:
        ivf = index
        assert isinstance(ivf, IVFPQIndex)  # builders are chosen by kind

        def candidates(q: FloatArray, probe: dict[str, Any], width: int) -> FloatArray:
            hits = ivf.search(q, width, nprobe=int(probe["nprobe"]))
            return exact_scores(q, hits.ids, vectors_of)

        cost = ivfpq_cost(len(ivf), ivf.dim, ivf.nlist, ivf.m)
        return tune_shortlist(
            ivfpq_probes(ivf.nlist), candidates, cost, queries, truth_scores, target
        )

    def search(
        self, index: Any, q: FloatArray, k: int, params: dict[str, Any], vectors_of: VectorsOf
    ) -> SearchHits:
        shortlist = scaled_shortlist(int(params["shortlist"]), k)
        hits = index.search(q, shortlist, nprobe=int(params["nprobe"]))
        return rerank(q, hits.ids, vectors_of, k)

    def apply(self, index: Any, params: dict[str, Any]) -> None:
        index.nprobe = int(params["nprobe"])

    def load(self, folder: Path, params: dict[str, Any], mmap: bool) -> Approx:
        return IVFPQIndex.load(folder, params, mmap=mmap)


BUILDERS: dict[str, Builder] = {b.kind: b for b in (HNSWBuilder(), SQ8Builder(), IVFPQBuilder())}


def builder_for(kind: str) -> Builder:
    try:
        return BUILDERS[kind]
    except KeyError:
        raise IndexBuildError(
            f"unknown index kind {kind!r}; choose one of {', '.join(BUILDERS)}"
        ) from None
