"""The floor of end-to-end indexing on this machine: how fast any pipeline could go.

Issue 10's goals compare `lookalike index` with the naive pipeline and with the network
alone (the ceiling). This times, on one core (CPU time per photo, in this process), each step
the pipeline runs for a photo: reading the file, hashing its bytes, decoding at reduced
scale, resizing to the network's input, and the network itself (one lane, slices of
``--slice`` inputs, as each core runs it in the per-core pipeline). It also times the fixed
start of a `lookalike index` process: Python and imports, then opening a collection with
the model (``end_to_end.stages``, a child process). From those it derives two bounds for a
pipeline that decodes on the same cores as the network:

- ``of_ceiling_bound`` = network / (network + every other step). No such pipeline can reach
  a higher fraction of the network-alone ceiling.
- ``best_images_per_s`` for n photos = n / (start + n * per_photo / cores). This is the rate
  with every core busy from the first photo to the last and nothing else in the way.
  ``best_speedup`` divides it by the naive pipeline's rate, timed in the same run (the
  faster of torch's default threads and one thread, as embed_throughput.py takes it).

Usage: python benchmarks/pipeline_floor.py --folder DIR [--counts 300,1000] [--images 120]
                                           [--naive-images 30]
Prints one JSON object per line: the steps, the start, the naive rate, then the bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import end_to_end
from embed_throughput import run_naive, timed
from lookalike.hashing import bytes_digest
from lookalike.images import load_image, read_file
from lookalike.models import ModelOptions, create_embedder
from lookalike.models.defaults import choose_default


def step_costs(embedder: Any, paths: list[Path], slice_size: int) -> dict[str, float]:
    """CPU ms per photo of each step, one photo (or one slice, for the network) at a time."""
    cpu = {"read": 0.0, "hash": 0.0, "decode": 0.0, "resize": 0.0, "network": 0.0}
    prepared = []
    for path in paths:
        started = time.process_time()
        data, _ = read_file(path)
        after_read = time.process_time()
        bytes_digest(data)
        after_hash = time.process_time()
        image = load_image(path, min_side=embedder.draft_size, data=data)
        after_decode = time.process_time()
        prepared.append(embedder.prepare(image))
        done = time.process_time()
        cpu["read"] += after_read - started
        cpu["hash"] += after_hash - after_read
        cpu["decode"] += after_decode - after_hash
        cpu["resize"] += done - after_decode
    embedder.embed_serial(prepared[:slice_size])  # the first run's one-off set-up
    started = time.process_time()
    for i in range(0, len(prepared), slice_size):
        embedder.embed_serial(prepared[i : i + slice_size])
    cpu["network"] = time.process_time() - started
    return {step: round(1e3 * seconds / len(paths), 3) for step, seconds in cpu.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True, help="photos (JPEG) to time")
    parser.add_argument("--counts", default="300,1000", help="photo counts for the bounds")
    parser.add_argument("--images", type=int, default=120, help="photos timed per step")
    parser.add_argument("--naive-images", type=int, default=30)
    parser.add_argument("--slice", type=int, default=16, help="network inputs per run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    paths = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        raise SystemExit(f"no JPEGs in {args.folder}")
    cores = len(os.sched_getaffinity(0))
    embedder = create_embedder(choose_default().model, ModelOptions())
    torch_embedder = create_embedder("efficientnet-lite0", ModelOptions(backend="torch"))
    run_naive(torch_embedder, paths[:2])  # warm: the first call builds torch's kernels
    line = {"folder": str(args.folder), "model": embedder.info.name, "cores": cores}
    print(json.dumps(line), flush=True)
    # Rounds alternate the three measurements; each keeps its lowest (least disturbed).
    steps: dict[str, float] = {}
    start = naive_s = float("inf")
    for r in range(args.rounds):
        costs = step_costs(embedder, paths[: args.images], args.slice)
        steps = {k: min(v, steps.get(k, v)) for k, v in costs.items()}
        stages = end_to_end.stages(args.folder, None, dict(os.environ))
        # Everything before the first photo: the process, imports, the model.
        fixed = stages["process_total_s"] - stages["index_s"] - stages["first_batch_s"]
        start = min(start, fixed)
        record = {"round": r, **costs, "start_s": round(fixed, 3)}
        naive = paths[: args.naive_images]
        for threads in (None, 1):  # torch's default (the reports'), and one thread
            wall, _, others = timed(partial(run_naive, torch_embedder, naive, threads))
            naive_s = min(naive_s, wall / len(naive))
            key = f"naive_{'default' if threads is None else threads}_thread"
            record[f"{key}_images_per_s"] = round(len(naive) / wall, 1)
            record[f"{key}_other_cores"] = round(others / wall, 2)
        print(json.dumps(record), flush=True)
    counts = [int(c) for c in args.counts.split(",")]
    record = {"bounds": "lowest of the rounds", **bounds(steps, start, naive_s, cores, counts)}
    print(json.dumps(record), flush=True)
    return 0


def bounds(
    steps: dict[str, float], start: float, naive_s: float, cores: int, counts: list[int]
) -> dict[str, Any]:
    """``steps``: CPU ms per photo of each step; ``start``: s before the first photo;
    ``naive_s``: the naive pipeline's s per photo. What the module doc calls the bounds."""
    per_photo = sum(steps.values())
    out: dict[str, Any] = {"per_photo_cpu_ms": round(per_photo, 3), **steps}
    out |= {"start_s": round(start, 3), "naive_images_per_s": round(1 / naive_s, 1)}
    out["of_ceiling_bound"] = round(steps["network"] / per_photo, 3)
    for n in counts:
        rate = n / (start + n * per_photo / 1e3 / cores)
        out[f"best_images_per_s_{n}"] = round(rate, 1)
        out[f"best_speedup_{n}"] = round(rate * naive_s, 2)
    return out


if __name__ == "__main__":
    sys.exit(main())
