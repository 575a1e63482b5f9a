"""All-pairs work at scale: `lookalike duplicates` and `lookalike search --all` on a large
collection, in bounded memory, through the collection's search index.

Builds a real collection (SQLite metadata + memory-mapped vector file) of ``--n`` clustered
synthetic vectors (lookalike.index.synthetic, as benchmarks/search_latency.py) into which
``--planted`` near-duplicate pairs are written: a stored vector plus a little noise
(cosine ~0.99 to its original). Then the CLI itself runs in a child process, as a user
would run it, and the child's wall time and peak memory are taken (ru_maxrss, which counts
the memory-mapped vector file's pages, and anonymous memory sampled from /proc):

* ``lookalike index``-time index build (``IndexManager.sync``, in this process: build_s);
* ``lookalike duplicates --threshold T --json``: groups found, and how many planted pairs
  ended up in one group (recall of the planted pairs);
* ``lookalike search --all -k 10 --json`` (output streamed to /dev/null).

Baseline in the same run: exact search (``--index exact``) on the same collection for the
same duplicates job, and the N x N float32 matrix a dense approach would hold (computed).

Usage::

    python benchmarks/all_pairs.py --n 200000 --dim 1280 [--index hnsw-sq8] [--exact-baseline]

Prints one JSON object per measured command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index.manager import IndexManager
from lookalike.index.synthetic import ClusteredGenerator, default_spec
from lookalike.store import NewImage, Store, write_json_atomic
from lookalike.vectors import l2_normalize

ADD_BATCH = 65536
PLANT_NOISE = 0.1  # relative noise on a planted copy: cosine to the original ~0.99


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_collection(
    root: Path, n: int, dim: int, planted: int, seed: int
) -> list[tuple[str, str]]:
    """The collection at ``root``; returns the planted (original, copy) path pairs."""
    shutil.rmtree(root, ignore_errors=True)
    store = Store.create(
        root, {"model": {"model": "benchmark", "dim": dim}, "index": {"kind": "auto"}}
    )
    gen = ClusteredGenerator(default_spec(n, dim, seed))
    rng = np.random.default_rng(seed + 1)
    originals = set(rng.choice(n, size=planted, replace=False).tolist())
    pairs: list[tuple[str, str]] = []
    first = 0
    for chunk in gen.stream(n, ADD_BATCH):
        paths = [f"/bench/{j}.jpg" for j in range(first, first + len(chunk))]
        vectors = [chunk]
        for j in range(first, first + len(chunk)):
            if j in originals:
                v = chunk[j - first]
                noisy = v + rng.normal(0, PLANT_NOISE / np.sqrt(dim), dim).astype(np.float32)
                vectors.append(l2_normalize(noisy[None]))
                paths.append(f"/bench/{j}-copy.jpg")
                pairs.append((f"/bench/{j}.jpg", f"/bench/{j}-copy.jpg"))
        stacked = np.concatenate(vectors)
        images = [NewImage(p, 1, 1, f"h{p}") for p in paths]
        store.add_images(images, stacked)
        first += len(chunk)
        log(f"  stored {first}/{n} vectors (+{len(pairs)} planted copies)")
    store.close()
    return pairs


def set_index(root: Path, kind: str) -> float:
    """Make ``kind`` the collection's index and build it; returns the build seconds."""
    manifest = Store.read_manifest(root)
    assert manifest is not None
    manifest["index"] = {"kind": kind}
    write_json_atomic(root / "manifest.json", manifest)
    store = Store.open(root)
    try:
        started = time.perf_counter()
        IndexManager(store, kind=kind).sync()
        return time.perf_counter() - started
    finally:
        store.close()


# Started by a small launcher, not forked from this process: on Linux a child's peak RSS
# (ru_maxrss) starts at its parent's RSS when it was forked, and this process holds the
# generated vectors.
_LAUNCHER = """
import json, os, subprocess, sys, time
child = subprocess.Popen(sys.argv[2:])
peak_anon = 0  # KiB of anonymous memory: what the page cache cannot take back
while True:
    pid, status, usage = os.wait4(child.pid, os.WNOHANG)
    if pid:
        break
    try:
        with open(f"/proc/{child.pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    peak_anon = max(peak_anon, int(line.split()[1]))
    except OSError:
        pass
    time.sleep(0.05)
result = {
    "rc": os.waitstatus_to_exitcode(status),
    "maxrss_kib": usage.ru_maxrss,
    "peak_anon_kib": peak_anon,
}
with open(sys.argv[1], "w") as fh:
    json.dump(result, fh)
"""


def reuse_index(root: Path, kind: str) -> float | None:
    """Build seconds of the index a previous run left, if it is of this kind and current."""
    meta_path = root / "index.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != kind:
        return None
    store = Store.open(root)
    try:
        fresh = IndexManager(store, kind=kind).describe().get("up_to_date", False)
    finally:
        store.close()
    return float(meta.get("build_seconds", 0.0)) if fresh else None


def run_cli(args: list[str], stdout_path: Path | None, workdir: Path) -> dict[str, Any]:
    """Run `lookalike ARGS` in a child; its wall seconds and its own peak RSS."""
    usage_file = workdir / "usage.json"
    started = time.perf_counter()
    with open(stdout_path or os.devnull, "wb") as out:
        command = [sys.executable, "-m", "lookalike", *args]
        launcher = [sys.executable, "-c", _LAUNCHER, str(usage_file), *command]
        subprocess.run(launcher, stdout=out, check=True)
    seconds = time.perf_counter() - started
    usage = json.loads(usage_file.read_text())
    if usage["rc"] != 0:
        raise SystemExit(f"lookalike {' '.join(args)} exited with {usage['rc']}")
    return {
        "seconds": round(seconds, 1),
        # Peak resident memory, mapped vector file pages included (evictable page cache).
        "peak_rss_mb": round(usage["maxrss_kib"] / 1024, 1),
        # Peak anonymous memory (sampled every 50 ms): what the process itself holds.
        "peak_anon_mb": round(usage["peak_anon_kib"] / 1024, 1),
    }


def planted_recall(groups_file: Path, pairs: list[tuple[str, str]]) -> tuple[int, float]:
    groups = json.loads(groups_file.read_text())
    group_of = {path: i for i, g in enumerate(groups) for path in g["paths"]}
    found = sum(1 for a, b in pairs if a in group_of and group_of.get(a) == group_of.get(b))
    return len(groups), found / max(1, len(pairs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--index", default="hnsw-sq8", help="approximate kind to measure")
    parser.add_argument("--planted", type=int, default=1000, help="near-duplicate pairs")
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("bench-data/all-pairs"))
    parser.add_argument(
        "--exact-baseline", action="store_true", help="also run duplicates with exact search"
    )
    parser.add_argument("--skip-search-all", action="store_true")
    parser.add_argument(
        "--effort",
        default="",
        help="duplicates --effort value(s), comma-separated (default: its own)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="keep the collection and index a run left in --workdir"
    )
    args = parser.parse_args(argv)

    root = args.workdir / f"db-{args.n}-{args.dim}"
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.reuse and (root / "manifest.json").exists():
        store = Store.open(root)
        copies = [r.path for r in store.iter_records() if r.path.endswith("-copy.jpg")]
        store.close()
        pairs = [(c.replace("-copy", ""), c) for c in copies]
    else:
        pairs = build_collection(root, args.n, args.dim, args.planted, args.seed)
    total = args.n + len(pairs)
    common = {
        "n": total,
        "dim": args.dim,
        "planted_pairs": len(pairs),
        "threshold": args.threshold,
        "dense_matrix_gb": round(total * total * 4 / 1e9, 1),
        "vector_file_mb": round(total * args.dim * 4 / 1e6, 1),
    }
    kinds = [args.index] + (["exact"] if args.exact_baseline else [])
    for kind in kinds:
        build_s = reuse_index(root, kind) if args.reuse else None
        if build_s is None:
            build_s = set_index(root, kind)
        log(f"{kind}: index built in {build_s:.0f} s")
        groups_file = args.workdir / f"groups-{kind}.json"
        for effort in [e for e in args.effort.split(",") if e] or [None]:
            extra = ["--effort", effort] if effort else []
            threshold = ["--threshold", str(args.threshold)]
            dup = run_cli(
                ["duplicates", "--db", str(root), *threshold, "--json", *extra],
                groups_file,
                args.workdir,
            )
            n_groups, recall = planted_recall(groups_file, pairs)
            line = {
                "command": "duplicates",
                "index": kind,
                "effort": float(effort) if effort else "default",
                **common,
                "build_s": round(build_s, 1),
                **dup,
                "groups": n_groups,
                "planted_recall": round(recall, 4),
            }
            print(json.dumps(line), flush=True)
        if kind != "exact" and not args.skip_search_all:
            listing = run_cli(
                ["search", "--all", "-k", "10", "--json", "--db", str(root)], None, args.workdir
            )
            print(
                json.dumps({"command": "search --all", "index": kind, **common, **listing}),
                flush=True,
            )


if __name__ == "__main__":
    main()
