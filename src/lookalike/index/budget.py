"""Which index kind to use: memory estimates, the `--memory-budget` option, `auto`.

Deciding lives here, doing lives in hnsw.py / ivfpq.py, measuring in tuning.py.
The estimates count what an index keeps resident while it answers queries: its codes,
graph or inverted lists, and lookalike's id arrays (ids.npy, rows.npy: 16 bytes a
vector). They do not count the collection's own vector file, which every kind reads
through the page cache (exact reads all of it per query, the others a short list).
"""

from __future__ import annotations

import math
import re

from lookalike.errors import IndexBuildError
from lookalike.memory import physical_memory_bytes

KINDS = ("auto", "exact", "hnsw", "hnsw-sq8", "ivfpq")
APPROXIMATE_KINDS = ("hnsw", "hnsw-sq8", "ivfpq")

EXACT_MAX = 50_000  # auto: up to and including this, brute force is fast enough (and perfect)
MIN_APPROX = 1_000  # any kind: below this, exact search is used (nothing to tune on)
HNSW_M = 24  # graph degree; 2*M neighbours on level 0, 4 bytes each
ID_BYTES = 16  # ids.npy + rows.npy, per vector

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_memory_budget(text: str | int) -> int:
    """'4G', '512M', '1.5GiB', '800k', '1000000' -> bytes (binary units: 1K = 1024)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = _BUDGET_RE.match(str(text))
        if match is None:
            raise IndexBuildError(
                f"memory budget {text!r} is not a size; write e.g. 4G, 512M or 800K"
            )
        value, unit = float(match.group(1)), match.group(2).upper()
    budget = int(value * _UNITS[unit])
    if budget <= 0:
        raise IndexBuildError(f"memory budget {text!r} must be more than zero bytes")
    return budget


def format_bytes(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if abs(n) < 1024:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"


def default_budget() -> int:
    """A quarter of physical memory: room for the index without crowding out the rest."""
    return physical_memory_bytes() // 4


def ivf_nlist(n: int) -> int:
    """Inverted lists: a power of two near 2*sqrt(n), with >= 39 training points each.

    Capped at 1024: on two cores the k-means and the assignment of every vector to its
    list dominate an ivfpq build (at 1M x 1280, 4096 lists would take most of 10 minutes
    for the k-means alone), and scanning a few lists of ~1000 64-byte codes is cheap.
    """
    if n <= 0:
        return 1
    target = 2.0 * math.sqrt(n)
    nlist = 1 << max(0, round(math.log2(target)))
    return int(max(1, min(nlist, 1024, 1 << int(math.log2(max(1, n // 39))))))


def pq_m(dim: int) -> int:
    """PQ sub-quantizers: the largest divisor of dim <= min(64, dim/16).

    At least 16 dimensions per sub-quantizer: FAISS trains 8-dimensional codebooks about
    ten times slower than 16-dimensional ones (a slow small-d code path), and re-ranking
    makes up for the coarser codes. 1280-d embeddings get 64 bytes of 20 dimensions each.
    """
    cap = max(1, min(64, dim // 16))
    return max(m for m in range(1, cap + 1) if dim % m == 0)


def exact_fits(n: int, dim: int, budget: int | None = None) -> bool:
    """Whether exact search may replace an approximate index that missed its recall target:
    it reads the whole vector file per query batch, so that file must fit the budget."""
    budget = default_budget() if budget is None else budget
    return n * dim * 4 <= budget


def estimate_bytes(kind: str, n: int, dim: int) -> int:
    """Resident bytes of an index of ``n`` vectors (see the module docstring)."""
    graph = int(2 * HNSW_M * 4 * 1.07) + 8  # level 0 plus ~7% upper levels, + offsets
    if kind == "exact":
        return 0
    if kind == "hnsw":
        return n * (4 * dim + graph + ID_BYTES)
    if kind == "hnsw-sq8":
        return n * (dim + graph + ID_BYTES) + 8 * dim
    if kind == "ivfpq":
        # codes + faiss's 8-byte ids in the lists, coarse centroids, PQ codebooks
        return n * (pq_m(dim) + 8 + ID_BYTES) + ivf_nlist(n) * dim * 4 + 256 * dim * 4
    raise IndexBuildError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")


def choose_kind(n: int, dim: int, budget: int | None = None, current: str | None = None) -> str:
    """The kind `auto` uses for ``n`` vectors of ``dim`` within ``budget`` bytes.

    ``current`` (the kind already built) adds hysteresis so a collection hovering around
    a threshold is not rebuilt back and forth: an approximate index stays until the
    collection shrinks below half the exact threshold, and stays while it fits.
    """
    budget = default_budget() if budget is None else budget
    if n <= EXACT_MAX:
        stays = current in APPROXIMATE_KINDS and n >= EXACT_MAX // 2
        if stays and estimate_bytes(str(current), n, dim) <= budget:
            return str(current)
        return "exact"
    if current in APPROXIMATE_KINDS and estimate_bytes(str(current), n, dim) <= budget:
        return str(current)
    for kind in APPROXIMATE_KINDS:
        if estimate_bytes(kind, n, dim) <= budget:
            return kind
    need = estimate_bytes("ivfpq", n, dim)
    raise IndexBuildError(
        f"memory budget {format_bytes(budget)} is too small for {n} vectors of {dim} "
        f"dimensions: the smallest index (ivfpq) needs about {format_bytes(need)}; "
        f"raise --memory-budget or use --index exact"
    )
