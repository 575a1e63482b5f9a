"""Why `--rerank verify` misses the originals of hard copies: the shortlist, or SIFT?

For each query of a hard_copies.py set, the original's rank by cosine (the default model)
and the verdict of `search --rerank verify`'s check between the query and its original
(its settings: at least 10 inliers, 0.6 of the ratio-test matches). A copy whose original
passes but ranks beyond the 30-image shortlist would be found by a deeper shortlist; one
whose original fails the check would not be found by any. Also counted: queries where a
wrong image among the first 30 passes (what could push the original down).

A diagnosis, not a choice: it changes no setting, so it may run on the reported sets.

Usage: python benchmarks/verify_misses.py [--set wallpapers|validation|test]
Prints one JSON object for the set, then one per edit and one for all edits.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hard_copies
from lookalike import verify
from lookalike.evaluation.runner import evaluate

MODEL = "efficientnet-lite0-int8"
SHORTLIST = 30  # --rerank verify's default shortlist
MAX_RANK = 100  # originals ranked below this count as beyond any shortlist tried


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--set", choices=("validation", "test", "wallpapers"), default="wallpapers")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="lookalike-verify-misses-"))
    gallery, queries = hard_copies.build(args.set, root)
    size = sum(1 for _ in gallery.rglob("*.jpg"))
    result = evaluate(
        gallery, MODEL, k=min(MAX_RANK, size), queries_dir=queries, cache_root=root / "c"
    )
    paths = result.gallery_paths
    original_of = {Path(p).parent.name: i for i, p in enumerate(paths)}
    query_files: dict[int, str] = {}
    settings = verify.VerifySettings(min_inliers=10)  # as search --rerank verify
    verifier = verify.Verifier(lambda i: paths[i] if i >= 0 else query_files[i], settings)
    rows: list[dict[str, Any]] = []
    for row, query in enumerate(result.query_paths):
        original = original_of[Path(query).parent.name]
        neighbours = [int(i) for i in result.neighbours[row]]
        rank = neighbours.index(original) + 1 if original in neighbours else MAX_RANK + 1
        query_id = -2 - row  # stored ids are >= 0
        query_files[query_id] = query
        verdict = verifier.check(query_id, original)
        wrong = [i for i in neighbours[:SHORTLIST] if i != original]
        rows.append(
            {
                "edit": Path(query).stem,
                "rank": rank,
                "matches": verdict.matches,
                "passes": verdict.passes(settings),
                "wrong_passes": any(verifier.check(query_id, i).passes(settings) for i in wrong),
            }
        )
    print(json.dumps({"set": args.set, "model": MODEL, "queries": len(rows), "gallery": size}))
    for edit in [*sorted({r["edit"] for r in rows}), "all"]:
        chosen = [r for r in rows if edit in ("all", r["edit"])]
        print(json.dumps({"edit": edit, "queries": len(chosen), **_tally(chosen)}), flush=True)
    return 0


def _tally(rows: list[dict[str, Any]]) -> dict[str, float]:
    counts: Counter[str] = Counter()
    for r in rows:
        counts["cosine_rank_1"] += r["rank"] == 1
        counts["passes_in_shortlist"] += r["passes"] and r["rank"] <= SHORTLIST
        counts["passes_beyond_shortlist"] += r["passes"] and r["rank"] > SHORTLIST
        counts["fails_check"] += not r["passes"]
        counts["a_wrong_image_passes"] += r["wrong_passes"]
    failing = [r["matches"] for r in rows if not r["passes"]]
    return {
        **{k: counts[k] for k in sorted(counts)},
        "median_matches_when_failing": float(np.median(failing)) if failing else 0.0,
    }


if __name__ == "__main__":
    sys.exit(main())
