"""Where the int8 network's time goes, per kind of layer, with and without exact kernels.

ONNX Runtime's own profiler on ``efficientnet-lite0-int8`` (lookalike's cached graph),
batches of 32 random pixels, for ``session.x64quantprecision`` on (the exact uint8 x uint8
kernels lookalike asks for where the CPU lacks int8 dot products) and off (ORT's default
kernels, which saturate on such CPUs). Kernel time is summed by op type, convolutions split
into depthwise and dense. On a CPU with VNNI the option changes the kernels too (ORT
applies it on every AVX2 CPU), so both lines are meaningful there as well.

Usage: python benchmarks/int8_profile.py [--runs 3] [--threads 1]
Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np


def layer_kinds(path: Path) -> dict[str, str]:
    """Conv node name -> "depthwise" or "dense" (a fused node keeps its conv's name)."""
    import onnx

    kinds = {}
    for node in onnx.load(str(path)).graph.node:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            kinds[node.name] = "depthwise" if group > 1 else "dense"
    return kinds


def profile(path: Path, exact: bool, runs: int, threads: int) -> Counter[str]:
    import onnxruntime as ort

    kinds = layer_kinds(path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.enable_profiling = True
    opts.add_session_config_entry("session.x64quantprecision", "1" if exact else "0")
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    x = np.random.default_rng(0).integers(0, 256, (32, 224, 224, 3), dtype=np.uint8)
    session.run(None, {feed: x})  # first run: allocations, not counted below
    for _ in range(runs):
        session.run(None, {feed: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name.removesuffix("_kernel_time")
        seen[node] += 1
        if seen[node] == 1:
            continue  # the warm-up run
        op = event["args"]["op_name"]
        if op in ("QLinearConv", "Conv"):
            base = next((k for k in kinds if node.startswith(k)), None)
            op = f"{op}-{kinds[base] if base else 'unknown'}"
        totals[op] += event["dur"]  # microseconds
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    from lookalike.models import create_embedder, runtime

    path = create_embedder("efficientnet-lite0-int8").onnx_path()  # type: ignore[attr-defined]
    print(json.dumps({"int8_dot_products": runtime.int8_dot_products(), "threads": args.threads}))
    for exact in (True, False):
        totals = profile(path, exact, args.runs, args.threads)
        per_batch = {op: round(us / args.runs / 1e3, 1) for op, us in totals.most_common(6)}
        print(
            json.dumps(
                {
                    "x64quantprecision": exact,
                    "ms_per_batch_of_32": round(sum(totals.values()) / args.runs / 1e3, 1),
                    "by_op_ms": per_batch,
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
