"""Deciding, not doing: which index kind a collection should have, when an index must be
rebuilt rather than updated, and what to do when tuning misses its recall target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lookalike.index.budget import MIN_APPROX, choose_kind, exact_fits
from lookalike.index.tuning import Tuned

REBUILD_GROWTH = 2.0  # rebuild and re-tune when the collection doubled or halved


def target_kind(
    requested: str, n: int, dim: int, budget: int | None, meta: dict[str, Any] | None
) -> str:
    """The kind ``n`` vectors should be searched with, given the kind asked for."""
    if n < MIN_APPROX:
        return "exact"
    if requested != "auto":
        return requested
    # auto fell back to exact because tuning missed its target: stay until the
    # collection has grown enough to be worth tuning again (as for a rebuild).
    fallback = (meta or {}).get("fallback")
    if (
        meta
        and meta["kind"] == "exact"
        and fallback
        and n < REBUILD_GROWTH * int(fallback["count"])
        and exact_fits(n, dim, budget)
    ):
        return "exact"
    return choose_kind(n, dim, budget, meta["kind"] if meta else None)


def rebuild_reason(meta: dict[str, Any] | None, target: str, n: int, root: Path) -> str | None:
    """Why the index must be built afresh (None: an in-place update will do)."""
    if meta is None:
        return "no index yet"
    if meta["kind"] != target:
        return f"index kind changes from {meta['kind']} to {target}"
    if target == "exact":
        return None
    if meta.get("dir") is None or not (root / meta["dir"]).is_dir():
        return "index files are missing"
    built = max(1, int(meta.get("built_count", 0)))
    if n >= REBUILD_GROWTH * built or n * REBUILD_GROWTH <= built:
        return f"collection changed from {built} to {n} vectors since the index was tuned"
    return None


def missed_target(
    requested: str, meta: dict[str, Any], tuned: Tuned, n: int, dim: int, budget: int | None
) -> tuple[dict[str, Any], bool]:
    """Tuning could not reach the recall target: (the index's metadata, keep the index?).

    `auto` promised the target, so it falls back to exact search when the vector file fits
    the memory budget; an explicitly asked-for kind is kept. Either way the note says so
    (info, the index report)."""
    missed = f"{meta['kind']} reached recall@10 {tuned.recall:.3f}, below the {tuned.target} target"
    if requested != "auto" or not exact_fits(n, dim, budget):
        why = "as asked" if requested != "auto" else "exact search does not fit the memory budget"
        return {**meta, "note": f"{missed}; kept ({why})"}, True
    fallen = {
        **meta,
        "kind": "exact",
        "params": {},
        "recall": {"recall_at_10": 1.0, "recall_target": tuned.target, "recall_target_met": True},
        "fallback": {"kind": meta["kind"], "count": n, **tuned.to_json()},
        "note": f"{missed}; fell back to exact search",
    }
    return fallen, False
