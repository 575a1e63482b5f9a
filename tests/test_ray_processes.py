"""A cluster started the way a user starts one (`ray start --head`, `ray start --address`
as separate processes), `lookalike index --engine ray --ray-address` as a real process,
kill -9 of that driver mid-run, then a second run that resumes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import committed_images, lookalike_command
from lookalike.collection import Collection
from ray_support import ray_test_env, write_crops

pytest.importorskip("ray")

N_IMAGES = 120
COMMIT_EVERY = 4
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_nodes(address: str, n: int, deadline: float) -> None:
    probe = (
        "import ray, time\n"
        f"ray.init(address={address!r}, logging_level='ERROR')\n"
        f"while sum(x['Alive'] for x in ray.nodes()) < {n}: time.sleep(0.5)\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=deadline - time.monotonic())


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Head + one worker node, each its own `ray start --block` process (ended by pid)."""
    with ray_test_env():
        port = _free_port()
        address = f"127.0.0.1:{port}"
        common = ["--block", "--num-cpus=1", "--disable-usage-stats"]
        head = subprocess.Popen(
            [RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
             "--include-dashboard=false", *common],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        procs = [head]
        try:
            deadline = time.monotonic() + 120
            _wait_for_nodes(address, 1, deadline)
            worker = subprocess.Popen(
                [RAY, "start", f"--address={address}", "--node-ip-address=127.0.0.1", *common],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            procs.append(worker)
            _wait_for_nodes(address, 2, deadline)
            yield address
        finally:
            for proc in reversed(procs):  # --block: ending it stops that node's processes
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_kill_9_of_the_driver_then_resume(
    ray_address: str, tmp_path: Path, photo_arrays: dict[str, np.ndarray]
) -> None:
    files = write_crops(tmp_path / "photos", list(photo_arrays.values()), N_IMAGES)
    db = tmp_path / "db"
    command = [
        *lookalike_command(), "index", str(tmp_path / "photos"), "--db", str(db),
        "--model", "efficientnet-lite0", "--batch-size", str(COMMIT_EVERY),
        "--engine", "ray", "--ray-address", ray_address, "--json",
    ]  # fmt: skip
    with ray_test_env():
        env = {**os.environ, "LOOKALIKE_COMMIT_EVERY": str(COMMIT_EVERY)}
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None and committed_images(db) == 0:
                time.sleep(0.01)
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        before = committed_images(db)
        assert 0 < before < N_IMAGES

        done = subprocess.run(command, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = json.loads(done.stdout)  # stdout stays clean JSON with Ray's logs about
    assert report["total"] == N_IMAGES
    assert report["added"] + report["unchanged"] == N_IMAGES
    assert report["unchanged"] >= before  # committed work was kept, not redone
    assert report["skipped"] == []
    with Collection.open(db) as col:
        records = col.store.records()
        assert sorted(r.path for r in records) == sorted(str(p) for p in files)
        rows = [r.row for r in records]
        assert len(set(rows)) == len(rows)  # no image has two rows, no row two images
