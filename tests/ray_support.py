"""Shared by the Ray tests: the environment a test cluster needs, and image folders."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parent.parent / "src"
# What every node of a test cluster gets; the head also no dashboard (as `ray start` in
# test_ray_processes.py): tests don't use it and it is the heaviest thing a head starts.
NODE_ARGS: dict[str, Any] = {"num_cpus": 1}
HEAD_ARGS: dict[str, Any] = {**NODE_ARGS, "include_dashboard": False}
START_ATTEMPTS = 3
RAY_LOGS = Path("/tmp/ray/session_latest/logs")
_RAY_PROBLEM = re.compile(r"^\[[^\]]* [WEF] \d+ \d+\]")  # Ray's "[date time W pid tid]" lines


@contextmanager
def ray_test_env() -> Iterator[None]:
    """Token auth off (ray 2.60's `ray start` turns it on) and this checkout's lookalike on
    every worker's path: worker processes do not run in the test's working directory."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        old = os.environ.get("PYTHONPATH")
        mp.setenv("PYTHONPATH", f"{SRC}{os.pathsep}{old}" if old else str(SRC))
        yield


def start_test_cluster(workers: int) -> Any:
    """A head and ``workers`` worker nodes on this machine (``ray.cluster_utils.Cluster``).

    Ray gives a new node a fixed 30 s to register with its GCS. Once, on a new CI machine, the
    head missed that ("The current node timed out during startup"), so a failed start is torn
    down and tried again; the last failure carries the tail of Ray's own logs to say why.
    """
    from ray.cluster_utils import Cluster

    for attempt in range(1, START_ATTEMPTS + 1):
        before = _descendants()
        cluster = None
        try:
            cluster = Cluster(initialize_head=True, head_node_args=HEAD_ARGS)
            for _ in range(workers):
                cluster.add_node(**NODE_ARGS)
            cluster.wait_for_nodes()
            return cluster
        except Exception as exc:
            logs = _ray_log_tail()  # before the teardown writes its own lines there
            if cluster is not None:
                cluster.shutdown()
            _kill_descendants_except(before)
            if attempt == START_ATTEMPTS:
                raise RuntimeError(
                    f"a local Ray test cluster did not start in {attempt} attempts: {exc}\n{logs}"
                ) from exc
            print(f"Ray test cluster, attempt {attempt} failed ({exc}); trying again")
    raise AssertionError("unreachable")


def _descendants() -> set[int]:
    """Pids of every process below this one (from /proc: psutil is not a dependency)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _kill_descendants_except(keep: set[int]) -> None:
    """SIGKILL what a failed start left running (Ray's GCS, raylet, agents); nothing older."""
    left = _descendants() - keep
    for pid in left:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in left:  # reap our own children; the rest are reaped by their (dead) parents' init
        with suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _ray_log_tail(lines: int = 15) -> str:
    """The warnings and errors of the newest session's GCS and raylet logs (their .out files
    are mostly periodic state dumps), and all of their .err files."""
    parts = []
    for name in ("gcs_server.out", "gcs_server.err", "raylet.out", "raylet.err"):
        log = RAY_LOGS / name
        if not log.exists():
            continue
        text = log.read_text(errors="replace").splitlines()
        keep = [t for t in text if t.strip() and (name.endswith(".err") or _RAY_PROBLEM.match(t))]
        parts.append(f"--- {log}, last warnings/errors:\n" + "\n".join(keep[-lines:]))
    return "\n".join(parts) or f"(no Ray logs under {RAY_LOGS})"


def write_crops(folder: Path, arrays: list[np.ndarray], n: int, side: int = 96) -> list[Path]:
    """``n`` distinct JPEGs: seeded random crops of real photos, in nested folders."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        arr = arrays[i % len(arrays)]
        h, w = arr.shape[:2]
        y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        path = folder / f"d{i % 3}" / f"img{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr[y : y + side, x : x + side]).save(path, quality=90)
        out.append(path)
    return out


def write_bad_files(folder: Path) -> None:
    """Files every engine must skip, each with its reason."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00 cut here")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text-named.jpg").write_bytes(b"hello, not an image\n" * 10)
    # A name that is not valid UTF-8 (Arrow text must be): it travels as bytes.
    (folder / os.fsdecode(b"caf\xe9-broken.gif")).write_bytes(b"GIF89a broken")
