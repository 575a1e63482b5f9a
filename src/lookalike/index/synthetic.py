"""Clustered synthetic vectors shaped like image embeddings, for tests and benchmarks.

Uniform random vectors are the wrong stand-in for image embeddings: in high dimension
they are all nearly orthogonal, nearest neighbours barely stand out, and no index can
beat brute force on them. Real CNN embeddings instead have (a) a low intrinsic
dimension, (b) clusters of similar images of uneven sizes, (c) non-negative coordinates
(they are average-pooled ReLU outputs), so random pairs have a clearly positive cosine.

This generator reproduces those three traits:

1. cluster centres in a ``latent_dim``-dimensional space whose axes have decaying scale
   (variance ~ 1/i, the slowly falling spectrum seen in embedding PCA), cluster sizes
   drawn from a Dirichlet(1) so some clusters are much bigger than others;
2. each vector = its centre + Gaussian spread (``spread`` times the centre scale);
3. mapped to ``dim`` coordinates by a fixed random linear map followed by ReLU, plus
   isotropic Gaussian noise (``noise`` relative to the signal's per-coordinate size),
   then L2-normalised.

Generation is chunked and deterministic for a given ``seed`` and chunk size,
so a million 1280-d vectors can be streamed to disk without holding them in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from lookalike.vectors import FloatArray, l2_normalize

CHUNK = 65536


@dataclass(frozen=True)
class ClusteredSpec:
    """Parameters of the generator; ``describe()`` is written next to benchmark figures."""

    dim: int
    n_clusters: int
    latent_dim: int = 64
    spread: float = 0.35
    noise: float = 0.5
    seed: int = 0

    def describe(self) -> str:
        return (
            f"clustered synthetic: {self.n_clusters} Gaussian clusters (Dirichlet(1) sizes) in a "
            f"{self.latent_dim}-d latent space with 1/i variance spectrum, within-cluster "
            f"spread {self.spread}, random linear map to {self.dim}-d + ReLU, isotropic "
            f"noise {self.noise}, L2-normalised; seed {self.seed}"
        )


def default_spec(n: int, dim: int, seed: int = 0) -> ClusteredSpec:
    """About one cluster per 250 vectors, between 8 and 4000 ("a few thousand" at 1M)."""
    return ClusteredSpec(
        dim=dim,
        n_clusters=int(np.clip(n // 250, 8, 4000)),
        latent_dim=min(64, dim),
        seed=seed,
    )


class ClusteredGenerator:
    """Draws vectors from one fixed clustered distribution (see the module docstring)."""

    def __init__(self, spec: ClusteredSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 0])
        lat = spec.latent_dim
        self._scale = (1.0 / np.sqrt(np.arange(1, lat + 1))).astype(np.float32)
        self._centres = (rng.standard_normal((spec.n_clusters, lat)) * self._scale).astype(
            np.float32
        )
        self._weights = rng.dirichlet(np.ones(spec.n_clusters))
        self._map = (rng.standard_normal((lat, spec.dim)) / np.sqrt(lat)).astype(np.float32)
        # Per-coordinate size of the ReLU signal, so `noise` is relative to it.
        probe = self._signal(rng, 2048)
        self._noise_sd = float(spec.noise * probe.std())

    def _signal(self, rng: np.random.Generator, n: int) -> FloatArray:
        labels = rng.choice(self.spec.n_clusters, size=n, p=self._weights)
        z = self._centres[labels] + self.spec.spread * self._scale * rng.standard_normal(
            (n, self.spec.latent_dim), dtype=np.float32
        )
        out: FloatArray = np.maximum(z @ self._map, 0.0).astype(np.float32)
        return out

    def chunk(self, index: int, size: int) -> FloatArray:
        """Chunk number ``index`` of the stream (``size`` rows), independent of other chunks."""
        rng = np.random.default_rng([self.spec.seed, 1, index])
        x = self._signal(rng, size)
        x += self._noise_sd * rng.standard_normal(x.shape, dtype=np.float32)
        return l2_normalize(x)

    def stream(self, n: int, chunk: int = CHUNK) -> Iterator[FloatArray]:
        """``n`` vectors in chunks of ``chunk`` rows (the last one shorter)."""
        for i, start in enumerate(range(0, n, chunk)):
            yield self.chunk(i, min(chunk, n - start))

    def sample(self, n: int, chunk: int = CHUNK) -> FloatArray:
        parts = list(self.stream(n, chunk))
        if not parts:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def clustered_vectors(n: int, dim: int, seed: int = 0) -> FloatArray:
    """``n`` clustered unit vectors of ``dim`` coordinates (the default spec for that n)."""
    return ClusteredGenerator(default_spec(n, dim, seed)).sample(n)
