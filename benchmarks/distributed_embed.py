"""Embedding on Ray against the local engine, in the same run, on the same photos.

Setups: ``local`` (engines.LocalEngine: today's threads), ``ray-local`` (a one-node Ray
started by this script with all this machine's CPUs) and ``ray-2node`` (a
``ray.cluster_utils.Cluster``: head + one worker node, half the CPUs each). Each Ray
setup is started once (its ``startup`` line: cluster start and connect), then rounds
alternate it with the local engine over ``--images`` and ``--small`` photos, so both
see the same machine load.

Ray's CPU time counts this process *and all its descendants* (Ray's GCS, raylets,
workers; sampled from /proc every 0.1 s, Linux only), so Ray's own processes are charged
to Ray; the local engine's is this process's own. Per-image figures are *marginal*:
(cost at --images - cost at --small) / (--images - --small), which leaves out each run's
fixed cost (actor start, model build: reported as ``fixed_seconds``).
``overhead`` = Ray's marginal CPU per image over the local engine's, minus 1.
``driver_ms_per_image``: the driver process's own CPU per image under Ray (receiving);
with the CPU to commit an image (timed apart) it bounds what one driver can take in
(``driver_cap_images_per_s``). The projection for ``--nodes`` nodes of this machine's
size: min(nodes x the one-node Ray marginal images/s, the driver's cap).

Usage::

    python benchmarks/distributed_embed.py [--images 1000] [--small 200] [--rounds 2]

Prints one JSON object per line; every measured line carries ``other_cores`` (CPU time
other processes used meanwhile, in cores). The photos are those of embed_throughput.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _throughput_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_embed", HERE / "embed_throughput.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_cpu() -> dict[tuple[int, int], float]:
    """CPU s (utime + stime) of this process and each descendant, keyed by (pid, start)."""
    tick = os.sysconf("SC_CLK_TCK")
    tree, out, todo = _children(), {}, [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            out[(pid, int(fields[19]))] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            pass
        todo.extend(tree.get(pid, []))
    return out


class TreeSampler:
    """CPU of the process tree over an interval. Ray starts and ends worker processes as it
    goes; a sampler thread records each one's last-seen CPU, so one that exits mid-run is
    still counted (up to the last ``every`` s of its life). Its own CPU is left out."""

    def __init__(self, every: float = 0.1) -> None:
        self.every = every
        self.last: dict[tuple[int, int], float] = {}
        self.first: dict[tuple[int, int], float] = {}
        self.stop = threading.Event()
        self.own = 0.0

    def _loop(self) -> None:
        start = time.thread_time()
        while not self.stop.wait(self.every):
            self.last.update(tree_cpu())
        self.last.update(tree_cpu())
        self.own = time.thread_time() - start

    def __enter__(self) -> TreeSampler:
        self.first = tree_cpu()
        self.last = dict(self.first)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def seconds(self) -> float:
        used = sum(v - self.first.get(k, 0.0) for k, v in self.last.items())
        return used - self.own


def measure(fn: Callable[[], int], busy: Callable[[], float], tree_cpu: bool) -> dict[str, float]:
    """Run fn (returns rows embedded); wall, CPU, driver CPU, others' CPU seconds. ``cpu``
    is the whole process tree's (``tree_cpu``: Ray's processes are ours) or this process's
    own (the local engine: Ray's idle processes, up meanwhile, are not its cost)."""
    machine = busy()
    with TreeSampler() as sampler:
        own, wall = time.process_time(), time.perf_counter()
        rows = fn()
        wall = time.perf_counter() - wall
        own = time.process_time() - own
    tree = sampler.seconds()
    return {
        "rows": rows,
        "wall": wall,
        "cpu": tree if tree_cpu else own - sampler.own,
        "driver": own - sampler.own,
        "others": max(0.0, busy() - machine - tree - sampler.own),
    }


def run_engine(engine: Any, embedder: Any, paths: list[Path], batch_size: int) -> int:
    rows = sum(len(b.indices) for b in engine.embed(embedder, paths, batch_size))
    if rows != len(paths):
        raise SystemExit(f"{engine.name}: embedded {rows} of {len(paths)} images")
    return rows


def commit_ms_per_image(model: str, dim: int, n: int = 4096, every: int = 256) -> float:
    """The driver's CPU to commit one image (SQLite row + vector row), in batches as the
    indexer commits them: the other half of what one driver does per image under Ray."""
    import tempfile

    import numpy as np

    from lookalike.collection import Collection
    from lookalike.store import NewImage

    rng = np.random.default_rng(0)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Collection.open(Path(tmp) / "db", model=model, create=True) as col,
    ):
        start = time.process_time()
        for first in range(0, n, every):
            images = [
                NewImage(f"/photos/{i:08d}.jpg", 1000 + i, i, f"{i:032x}", 640, 480)
                for i in range(first, first + every)
            ]
            vectors = rng.standard_normal((every, dim)).astype(np.float32)
            col.store.add_images(images, vectors / np.linalg.norm(vectors, axis=1)[:, None])
        return 1e3 * (time.process_time() - start) / n


def line(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


@contextmanager
def ray_setup(name: str, cpus: int) -> Iterator[float]:
    """Start the setup and connect; yields its start-up seconds."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    src = str(HERE.parent / "src")  # workers import this checkout's lookalike
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    cluster = None
    if name == "ray-local":
        ray.init(
            address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR
        )
    else:
        from ray.cluster_utils import Cluster

        half = max(1, cpus // 2)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": half})
        cluster.add_node(num_cpus=half)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level=logging.ERROR)
    try:
        yield time.perf_counter() - start
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def summary(
    setup: str, big: list[dict[str, float]], small: list[dict[str, float]], n: int, m: int
) -> dict[str, Any]:
    def total(runs: list[dict[str, float]], key: str) -> float:
        return sum(r[key] for r in runs) / len(runs)

    wall = (total(big, "wall") - total(small, "wall")) / (n - m)
    cpu = (total(big, "cpu") - total(small, "cpu")) / (n - m)
    driver = (total(big, "driver") - total(small, "driver")) / (n - m)
    return {
        "setup": setup,
        "round": "all",
        "images_per_s": round(n / total(big, "wall"), 1),
        "marginal_images_per_s": round(1 / wall, 1),
        "cpu_ms_per_image": round(1e3 * cpu, 2),
        "driver_ms_per_image": round(1e3 * driver, 2),
        "fixed_seconds": round(total(big, "wall") - n * wall, 2),
        "other_cores": round(
            (total(big, "others") + total(small, "others"))
            / (total(big, "wall") + total(small, "wall")),
            2,
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--small", type=int, default=200, help="the run that sizes fixed costs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--setups", default="ray-local,ray-2node")
    parser.add_argument("--nodes", type=int, default=10, help="project images/s to this many")
    args = parser.parse_args(argv)
    if not 0 < args.small < args.images:
        raise SystemExit("--small must be between 0 and --images")

    from lookalike.engines import EmbedderSpec, LocalEngine
    from lookalike.engines.ray_engine import RayEngine
    from lookalike.models import onnx_backend

    bench = _throughput_module()
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / "lookalike-bench-photos-distributed"
    paths = bench.build_photos(folder, args.images)
    cpus = onnx_backend.available_cpus()
    line({"photos": len(paths), "folder": str(folder), "cpus": cpus})
    spec = EmbedderSpec(args.model)
    embedder = spec.build()
    local = LocalEngine()
    run_engine(local, embedder, paths[: args.batch_size], args.batch_size)  # warm-up
    sizes = {"big": args.images, "small": args.small}
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    for setup in [s for s in args.setups.split(",") if s]:
        with ray_setup(setup, cpus) as startup:
            line({"startup": setup, "seconds": round(startup, 2)})
            engine = RayEngine(spec)  # reuses the connection made above
            run_engine(engine, embedder, paths[: args.batch_size], args.batch_size)  # warm-up
            for r in range(args.rounds):
                for size, n in sizes.items():
                    engines: list[tuple[str, Any]] = [("local", local), (setup, engine)]
                    for name, eng in engines:
                        got = measure(
                            partial(run_engine, eng, embedder, paths[:n], args.batch_size),
                            bench.machine_busy_seconds,
                            tree_cpu=name != "local",
                        )
                        key = name if name != "local" else f"local-vs-{setup}"
                        runs.setdefault(key, {}).setdefault(size, []).append(got)
                        line(
                            {
                                "setup": name,
                                "round": r,
                                "images": n,
                                "seconds": round(got["wall"], 2),
                                "images_per_s": round(n / got["wall"], 1),
                                "cpu_ms_per_image": round(1e3 * got["cpu"] / n, 2),
                                "driver_ms_per_image": round(1e3 * got["driver"] / n, 2),
                                "other_cores": round(got["others"] / got["wall"], 2),
                            }
                        )
            actors = engine.plan.actors if engine.plan else 0
        ours = summary(setup, runs[setup]["big"], runs[setup]["small"], args.images, args.small)
        base = runs[f"local-vs-{setup}"]
        theirs = summary("local", base["big"], base["small"], args.images, args.small)
        line({**theirs, "alternated_with": setup})
        overhead = ours["cpu_ms_per_image"] / theirs["cpu_ms_per_image"] - 1
        line({**ours, "actors": actors, "overhead": round(overhead, 3)})
        if setup == "ray-local":
            # A node of this size under Ray embeds marginal_images_per_s; N of them N times
            # that, unless one driver can't commit that fast.
            commit = commit_ms_per_image(args.model, embedder.info.dim)
            driver = ours["driver_ms_per_image"] + commit
            cap = 1e3 / driver
            per_node = ours["marginal_images_per_s"]
            line(
                {
                    "projection": f"{args.nodes} nodes of {cpus} CPUs",
                    "per_node_images_per_s": per_node,
                    "driver_receive_ms_per_image": ours["driver_ms_per_image"],
                    "driver_commit_ms_per_image": round(commit, 3),
                    "driver_cap_images_per_s": round(cap, 1),
                    "projected_images_per_s": round(min(args.nodes * per_node, cap), 1),
                }
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
