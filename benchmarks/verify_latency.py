"""Latency of `--rerank verify` searches made one after another on one open collection
(as `lookalike serve` makes them): the stored files' SIFT features kept across searches
(verify.FeatureCache, the collection's own) against computed on every search (a cache of
capacity 0: how every search worked before).

The gallery and queries are one of hard_copies.py's sets, indexed with the default model;
each query is an in-memory image (as an upload is), searched alone with k = 5. The two
modes alternate by rounds, each round on a fresh cache; the first search of a round pays
for its shortlist in both modes.

``--setups "verify:contrast=0.04;verify"`` times several settings of the check, alternating
with the modes in each round.

Usage: python benchmarks/verify_latency.py [--set validation|test|wallpapers] [--rounds 3]
       [--setups "verify;..."]
Prints one JSON object per setup, mode and round, then one per setup and mode over all
rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hard_copies
from lookalike.collection import Collection
from lookalike.reranking import parse_rerank
from lookalike.verify import FeatureCache

MODES = {"kept": FeatureCache, "per-search": lambda: FeatureCache(capacity=0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--set", choices=hard_copies.SETS, default="validation")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--setups", default="verify", help="';'-separated, as search --rerank")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="lookalike-verify-latency-"))
    gallery, queries = hard_copies.build(args.set, root)
    images = [Image.open(p).convert("RGB") for p in sorted(queries.rglob("*.jpg"))]
    setups = {text: parse_rerank(text) for text in args.setups.split(";")}
    runs = [(text, mode) for text in setups for mode in MODES]
    times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    firsts: dict[tuple[str, str], list[list[int]]] = {}
    with Collection.open(root / "db", create=True) as col:
        col.index(sorted(gallery.rglob("*.jpg")))
        col.search(images[:1], k=hard_copies.K)  # the model built before any timing
        for round_ in range(args.rounds):
            for text, mode in runs:
                col._verify_files = MODES[mode]()
                took, ids = [], []
                for image in images:
                    start = time.perf_counter()
                    [result] = col.search([image], k=hard_copies.K, rerank=setups[text])
                    took.append(time.perf_counter() - start)
                    ids.append([h.id for h in result.results])
                times[text, mode] += took
                firsts.setdefault((text, mode), ids)
                row = {"set": args.set, "setup": text, "mode": mode, "round": round_}
                print(json.dumps({**row, **_summary(took)}), flush=True)
    for (text, mode), took in times.items():
        same = firsts[text, "kept"] == firsts[text, "per-search"]
        row = {"set": args.set, "setup": text, "mode": mode, "round": "all", **_summary(took)}
        print(json.dumps({**row, "same_hits_in_both_modes": same}), flush=True)
    return 0


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {
        "searches": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p90_ms": round(float(np.percentile(ms, 90)), 1),
        "mean_ms": round(float(ms.mean()), 1),
    }


if __name__ == "__main__":
    sys.exit(main())
