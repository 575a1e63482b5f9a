"""Why `--rerank verify` misses the originals of hard copies: the shortlist, or SIFT?

For each query of a hard_copies.py set, the original's rank by cosine (the default model)
and the verdict of `search --rerank verify`'s check between the query and its original
(its settings, Rerank("verify"): at least 10 inliers, 0.5 of the ratio-test matches, SIFT
contrast 0.005; 0.6 and 0.04 before the twelfth session). A copy whose original passes
but ranks beyond the 30-image shortlist would be found by a deeper shortlist; one
whose original fails the check would not be found by any. Also counted: queries where a
wrong image among the first 30 passes (what could push the original down).

``--sweep`` then re-scores the set as `--rerank verify` would order it for other settings
of the check (the share of matches that must be inliers, and the inliers needed), from
the same verdicts: the original at rank 1, MRR@5, and queries where a wrong image passes.
``--contrast 0.04,0.01`` computes the verdicts again with each SIFT contrast threshold
(0.04 is OpenCV's and the check's own; lower keeps weaker keypoints, which smooth designs
need) and prints the set's tally and the search's ordering for each; ``--features 500,2000``
the same for other caps on the keypoints kept per image (the strongest first).

A diagnosis, not a choice: it changes no setting, so it may run on the reported sets.

Usage: python benchmarks/verify_misses.py [--set wallpapers|validation|test|...] [--sweep]
       [--contrast 0.04,0.02,0.01] [--features 500,2000]
Prints one JSON object for the set, then one per edit and one for all edits (then one per
swept setting).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hard_copies
from lookalike import verify
from lookalike.evaluation.runner import EvalResult, evaluate
from lookalike.reranking import Rerank, verified_first
from lookalike.verified_search import check_settings

MODEL = "efficientnet-lite0-int8"
SEARCH = Rerank("verify")  # search --rerank verify's own settings
SHORTLIST = SEARCH.width
MAX_RANK = 100  # originals ranked below this count as beyond any shortlist tried
SWEEP_SHARES = (0.6, 0.5, 0.4, 0.3, 0.2, 0.1)  # 0.6: duplicates' setting, 0.5: the search's
SWEEP_INLIERS = (10, 15, 20)  # 10: search --rerank verify's own setting


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--set", choices=hard_copies.SETS, default="wallpapers")
    parser.add_argument("--sweep", action="store_true", help="re-score other check settings")
    parser.add_argument("--contrast", help="SIFT contrast thresholds to compare, e.g. 0.04,0.01")
    parser.add_argument("--features", help="keypoint caps to compare, e.g. 500,2000")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="lookalike-verify-misses-"))
    gallery, queries = hard_copies.build(args.set, root)
    size = sum(1 for _ in gallery.rglob("*.jpg"))
    result = evaluate(
        gallery, MODEL, k=min(MAX_RANK, size), queries_dir=queries, cache_root=root / "c"
    )
    settings = check_settings(SEARCH)
    rows = _verdicts(result, settings)
    print(json.dumps({"set": args.set, "model": MODEL, "queries": len(rows), "gallery": size}))
    for edit in [*sorted({r["edit"] for r in rows}), "all"]:
        chosen = [r for r in rows if edit in ("all", r["edit"])]
        print(json.dumps({"edit": edit, "queries": len(chosen), **_tally(chosen)}), flush=True)
    if args.sweep:
        for share in SWEEP_SHARES:
            for inliers in SWEEP_INLIERS:
                check = verify.VerifySettings(min_inliers=inliers, min_share=share)
                print(json.dumps({"share": share, "inliers": inliers, **_rescore(rows, check)}))
    variants = [{"contrast": float(c)} for c in (args.contrast or "").split(",") if c]
    variants += [{"features": int(n)} for n in (args.features or "").split(",") if n]
    for changed in variants:
        other = replace(settings, **changed)
        found = _verdicts(result, other)
        print(json.dumps({**changed, **_tally(found), **_rescore(found, other)}), flush=True)
    return 0


def _verdicts(result: EvalResult, settings: verify.VerifySettings) -> list[dict[str, Any]]:
    """Per query: its original's cosine rank, the check's verdicts on the shortlist and on
    the original."""
    paths = result.gallery_paths
    original_of = {Path(p).parent.name: i for i, p in enumerate(paths)}
    query_files: dict[int, str] = {}
    verifier = verify.Verifier(lambda i: paths[i] if i >= 0 else query_files[i], settings)
    rows: list[dict[str, Any]] = []
    for row, query in enumerate(result.query_paths):
        original = original_of[Path(query).parent.name]
        neighbours = [int(i) for i in result.neighbours[row]]
        rank = neighbours.index(original) + 1 if original in neighbours else MAX_RANK + 1
        query_id = -2 - row  # stored ids are >= 0
        query_files[query_id] = query
        shortlist = [(i, verifier.check(query_id, i)) for i in neighbours[:SHORTLIST]]
        checked = dict(shortlist)
        verdict = checked[original] if original in checked else verifier.check(query_id, original)
        rows.append(
            {
                "edit": Path(query).stem,
                "rank": rank,
                "matches": verdict.matches,
                "passes": verdict.passes(settings),
                "wrong_passes": any(v.passes(settings) for i, v in shortlist if i != original),
                "original": original,
                "shortlist": shortlist,
                "cosines": result.neighbour_scores[row, : len(shortlist)],
            }
        )
    return rows


def _rescore(rows: list[dict[str, Any]], check: verify.VerifySettings) -> dict[str, float]:
    """Ordered by --rerank verify's own ordering (reranking.verified_first) from the
    verdicts under ``check``; an original outside the shortlist keeps its cosine rank."""
    first = reciprocal = wrong = 0.0
    for r in rows:
        ids = np.array([[i for i, _ in r["shortlist"]]], dtype=np.int64)
        passes = np.array([v.passes(check) for _, v in r["shortlist"]], dtype=bool)
        order_by = verified_first(ids, r["cosines"][None, :], _given(passes))
        order = ids[0, np.argsort(-order_by[0], kind="stable")].tolist()
        rank = order.index(r["original"]) + 1 if r["original"] in order else r["rank"]
        first += rank == 1
        reciprocal += 1 / rank if rank <= hard_copies.K else 0.0
        wrong += bool(np.any(passes & (ids[0] != r["original"])))
    n = len(rows)
    return {
        "at_rank_1": round(first / n, 4),
        "mrr_at_5": round(reciprocal / n, 4),
        "queries_a_wrong_image_passes": int(wrong),
    }


def _given(passes: np.ndarray) -> Callable[[int, np.ndarray], np.ndarray]:
    """A Verified callback that answers with verdicts already computed."""
    return lambda _row, _ids: passes


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
