"""kill -9 in the middle of `lookalike index`, then run it again: the collection must be
consistent and equal to one indexed in a single go."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TEST_MODEL, committed_images, lookalike_command
from lookalike.collection import Collection

N_IMAGES = 400
COMMIT_EVERY = 4


@pytest.fixture
def many_images(tmp_path: Path, photo_arrays: dict[str, np.ndarray]) -> list[Path]:
    """Distinct small JPEGs: seeded random crops of the real photos, in nested folders."""
    rng = np.random.default_rng(0)
    sources = list(photo_arrays.values())
    out = []
    for i in range(N_IMAGES):
        arr = sources[i % len(sources)]
        h, w = arr.shape[:2]
        y, x = int(rng.integers(0, h - 96)), int(rng.integers(0, w - 96))
        path = tmp_path / "many" / f"d{i % 7}" / f"img{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr[y : y + 96, x : x + 96]).save(path, quality=90)
        out.append(path)
    return out


def _kill_after_first_commit(root: Path, db: Path) -> int:
    """Start indexing, SIGKILL it once something is committed; returns the count then."""
    env = {**os.environ, "LOOKALIKE_COMMIT_EVERY": str(COMMIT_EVERY)}
    command = [
        *lookalike_command(),
        "index",
        str(root),
        "--db",
        str(db),
        "--model",
        TEST_MODEL,
        "--batch-size",
        str(COMMIT_EVERY),
    ]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if committed_images(db) > 0:
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"indexing ended before it could be killed: {proc.stderr}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return committed_images(db)


def test_kill_9_then_resume(many_images: list[Path], tmp_path: Path) -> None:
    root = tmp_path / "many"
    db = tmp_path / "db"
    at_kill = _kill_after_first_commit(root, db)
    assert 0 < at_kill < N_IMAGES, at_kill

    env = {**os.environ, "LOOKALIKE_COMMIT_EVERY": str(COMMIT_EVERY)}
    done = subprocess.run(
        [*lookalike_command(), "index", str(root), "--db", str(db), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["total"] == N_IMAGES and report["skipped"] == []
    assert report["unchanged"] == at_kill and report["added"] == N_IMAGES - at_kill

    with Collection.open(db) as col:
        store = col.store
        records = list(store.iter_records())
        paths = [r.path for r in records]
        # Every file exactly once, nothing else.
        assert len(paths) == len(set(paths)) == N_IMAGES
        assert set(paths) == {str(p) for p in many_images}
        # Every record points at a whole vector row, and no two share one.
        rows = [r.row for r in records]
        assert max(rows) < store.vector_rows() and len(set(rows)) == len(rows)
        resumed = {
            r.path: v
            for r, v in zip(records, store.vectors_for([r.id for r in records]), strict=True)
        }
        assert col.search([many_images[0]], k=1)[0].results  # searchable

    # The same vectors as a fresh, uninterrupted index.
    with Collection.open(tmp_path / "fresh", model=TEST_MODEL, create=True) as fresh:
        fresh.index([root])
        expected = {r.path: fresh.store.vectors_for([r.id])[0] for r in fresh.store.iter_records()}
    assert set(expected) == set(resumed)
    for path, vector in expected.items():
        np.testing.assert_allclose(resumed[path], vector, atol=1e-6, err_msg=path)
