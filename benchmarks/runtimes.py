"""Runtime and precision candidates for the default model, on the same exported graphs.

ONNX Runtime fp32 and int8 (lookalike's graphs), and, when the ``openvino`` package is
installed, OpenVINO on the same files: fp32, bf16 and fp16 inference precision on the float
graph, and the int8 graph (with fp32 and with bf16 for its float parts). For each: the
vectors' agreement (runtime.agreement: mean / min cosine) with ONNX Runtime fp32 and with
ONNX Runtime int8 on the 13 calibration photos and the 20 foolbox photos, and with the int8
graph computed exactly (``exact_int8``: what a CPU with VNNI gives; without VNNI, ORT's int8
kernels may saturate), the time to import the runtime and compile the graph, and images/s
and CPU ms per image on prepared 224x224 inputs (batches of 32, all cores), candidates
alternating in ``--rounds`` rounds.

Usage: python benchmarks/runtimes.py [--rounds 3] [--seconds 3]
Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from embed_throughput import machine_busy_seconds

Runner = Callable[[np.ndarray], np.ndarray]


def line(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def real_pixels(embedder: Any) -> np.ndarray:
    from PIL import Image

    from lookalike.models.calibration import source_photos

    images = list(source_photos())
    spec = importlib.util.find_spec("foolbox")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "data"
        for path in sorted(folder.glob("imagenet_*.jpg")):
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
    return np.stack([embedder.prepare(im) for im in images])


def plain_session(path: Path, threads: int, level: str = "ORT_ENABLE_ALL") -> Runner:
    """An ORT session without lookalike's settings (make_session): on a CPU without VNNI,
    the int8 graph then runs on ORT's saturating uint8 x int8 kernels."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    return lambda x: session.run(None, {feed: x})[0]


def exact_int8(path: Path) -> Runner:
    """The int8 graph with ORT's graph optimisations off: every QuantizeLinear /
    DequantizeLinear pair and convolution runs in float, so the integer products are summed
    exactly (what VNNI's int32 dot products give), with no int16 saturation. The
    reference the int8 kernels of this machine are checked against."""
    return plain_session(path, 1, "ORT_DISABLE_ALL")


def candidates(threads: int) -> dict[str, tuple[Runner, float]]:
    """name -> (run, seconds to import the runtime and load/compile the graph)."""
    from lookalike.models import create_embedder, runtime
    from lookalike.models.onnx_backend import make_session

    fp32, int8 = create_embedder("efficientnet-lite0"), create_embedder("efficientnet-lite0-int8")
    graphs = {"fp32": fp32.onnx_path(), "int8": int8.onnx_path()}  # type: ignore[attr-defined]
    out: dict[str, tuple[Runner, float]] = {}
    for precision, path in graphs.items():
        start = time.perf_counter()
        session = make_session(path, threads)
        feed = session.get_inputs()[0].name
        out[f"onnxruntime-{precision}"] = (
            lambda x, s=session, f=feed: s.run(None, {f: x})[0],
            time.perf_counter() - start,
        )
    if not runtime.int8_dot_products():
        out["onnxruntime-int8-ort-default"] = (plain_session(graphs["int8"], threads), 0.0)
    out["onnxruntime-int8-exact"] = (exact_int8(graphs["int8"]), 0.0)
    if importlib.util.find_spec("openvino") is None:
        line({"note": "openvino not installed: pip install openvino for its lines"})
        return out
    start = time.perf_counter()
    import openvino as ov

    core = ov.Core()
    imported = time.perf_counter() - start
    line({"openvino": ov.__version__, "import_s": round(imported, 3)})
    plans = [("fp32", "f32"), ("fp32", "bf16"), ("fp32", "f16"), ("int8", "f32"), ("int8", "bf16")]
    for precision, hint in plans:
        start = time.perf_counter()
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        config["INFERENCE_PRECISION_HINT"] = hint
        compiled = core.compile_model(str(graphs[precision]), "CPU", config)
        seconds = time.perf_counter() - start + imported
        out[f"openvino-{precision}-{hint}"] = (
            lambda x, c=compiled: np.asarray(c(x)[0]),
            seconds,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per candidate and round")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    from lookalike.models import create_embedder, runtime
    from lookalike.models.onnx_backend import available_cpus

    threads = args.threads or available_cpus()
    line(
        {
            "cpus": available_cpus(),
            "threads": threads,
            "int8_fast": runtime.int8_is_fast(),
            "int8_dot_products": runtime.int8_dot_products(),
        }
    )
    runners = candidates(threads)
    x = real_pixels(create_embedder("efficientnet-lite0"))
    ref32 = runners["onnxruntime-fp32"][0](x)
    ref8 = runners["onnxruntime-int8"][0](x)
    exact8 = runners.pop("onnxruntime-int8-exact")[0](x)
    for name, (run, start_s) in runners.items():
        got = run(x)
        m32, lo32 = runtime.agreement(got, ref32)
        m8, lo8 = runtime.agreement(got, ref8)
        m8x, lo8x = runtime.agreement(got, exact8)
        line(
            {
                "candidate": name,
                "photos": len(x),
                "vs_fp32_mean": round(m32, 5),
                "vs_fp32_min": round(lo32, 5),
                "agrees_with_fp32": runtime.agrees(got, ref32),
                "vs_int8_mean": round(m8, 5),
                "vs_int8_min": round(lo8, 5),
                "agrees_with_int8": runtime.agrees(got, ref8),
                "vs_exact_int8_mean": round(m8x, 5),
                "vs_exact_int8_min": round(lo8x, 5),
                "start_s": round(start_s, 3),
            }
        )
    rng = np.random.default_rng(0)
    batch = x[rng.integers(0, len(x), 32)]
    totals = {name: [0.0, 0.0, 0.0, 0] for name in runners}
    for r in range(args.rounds):
        for name, (run, _) in runners.items():
            run(batch)
            busy, cpu, wall, n = machine_busy_seconds(), time.process_time(), time.perf_counter(), 0
            while time.perf_counter() - wall < args.seconds:
                run(batch)
                n += len(batch)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            others = max(0.0, machine_busy_seconds() - busy - cpu)
            t = totals[name]
            totals[name] = [t[0] + wall, t[1] + cpu, t[2] + others, int(t[3]) + n]
            line(
                {
                    "candidate": name,
                    "round": r,
                    "images_per_s": round(n / wall, 1),
                    "cpu_ms_per_image": round(1e3 * cpu / n, 2),
                    "other_cores": round(others / wall, 2),
                }
            )
    for name, (wall, cpu, others, n) in totals.items():
        line(
            {
                "candidate": name,
                "round": "all",
                "images_per_s": round(n / wall, 1),
                "cpu_ms_per_image": round(1e3 * cpu / n, 2),
                "other_cores": round(others / wall, 2),
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
