"""The ray engine on a real multi-node cluster on this machine (head + 2 worker nodes).

One cluster for the module (starting one costs ~15 s); tiny nodes (1 CPU each) because the
machine is small. The node-killing test runs last and leaves the cluster as it found it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lookalike.collection import Collection
from lookalike.engines import LocalEngine
from ray_support import NODE_ARGS, ray_test_env, start_test_cluster, write_bad_files, write_crops

ray = pytest.importorskip("ray")

from lookalike.engines.ray_engine import RayEngine  # noqa: E402

REAL_MODEL = "efficientnet-lite0"
FAST_MODEL = "raw-pixels"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with ray_test_env():
        c = start_test_cluster(workers=2)
        ray.init(address=c.address)  # engines reuse this connection
        try:
            yield c
        finally:
            ray.shutdown()
            c.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, photo_arrays: dict[str, np.ndarray]) -> Path:
    root = tmp_path_factory.mktemp("ray-photos")
    write_crops(root / "crops", list(photo_arrays.values()), 24)
    write_bad_files(root / "bad")
    odd = root / os.fsdecode(b"na\xefve")  # a folder whose name is not valid UTF-8
    odd.mkdir()
    Image.fromarray(photo_arrays["chelsea"]).save(odd / "cat.jpg")
    return root


def _index(db: Path | str, paths: list[Path], engine: Any, model: str, **kw: Any) -> Any:
    with Collection.open(db, model=model, create=True) as col:
        return col.index([str(p) for p in paths], engine=engine, **kw)


def _by_path(db: Path | str) -> dict[str, tuple[Any, np.ndarray]]:
    with Collection.open(db) as col:
        records = col.store.records()
        vectors = col.store.vectors_for([r.id for r in records])
        return {r.path: (r, v) for r, v in zip(records, vectors, strict=True)}


def _engine(cluster: Any, model: str) -> RayEngine:
    return RayEngine(_spec(model), address=cluster.address)


def _spec(model: str) -> Any:
    from lookalike.engines import EmbedderSpec

    return EmbedderSpec(model)


def test_same_vectors_sizes_hashes_and_skips_as_the_local_engine(
    cluster: Any, folder: Path, tmp_path: Path
) -> None:
    local = _index(tmp_path / "local", [folder], LocalEngine(), REAL_MODEL, batch_size=4)
    engine = RayEngine(_spec(REAL_MODEL), address=cluster.address, chunk_files=11)  # 3 chunks
    remote = _index(tmp_path / "ray", [folder], engine, REAL_MODEL, batch_size=4)
    assert engine.plan is not None and engine.plan.actors == 3  # one per node
    assert remote.added == local.added == 25
    assert sorted((s.path, s.reason) for s in remote.skipped) == sorted(
        (s.path, s.reason) for s in local.skipped
    )
    assert len(local.skipped) >= 3  # the bad files really were tried
    ours, theirs = _by_path(tmp_path / "ray"), _by_path(tmp_path / "local")
    assert ours.keys() == theirs.keys()
    for path, (record, vector) in ours.items():
        other, expected = theirs[path]
        assert float(vector @ expected) >= 0.9999, path
        assert (record.hash, record.size, record.mtime_ns) == (
            other.hash,
            other.size,
            other.mtime_ns,
        )
        assert (record.width, record.height) == (other.width, other.height)


def test_incremental_runs_send_only_new_and_changed_files(
    cluster: Any, folder: Path, tmp_path: Path, photo_arrays: dict[str, np.ndarray]
) -> None:
    root = tmp_path / "photos"
    files = write_crops(root, list(photo_arrays.values()), 12)
    db = tmp_path / "db"
    first = _index(db, [root], _engine(cluster, FAST_MODEL), FAST_MODEL, batch_size=4)
    assert (first.added, first.total) == (12, 12)

    again = _index(db, [root], _engine(cluster, FAST_MODEL), FAST_MODEL, batch_size=4)
    assert (again.added, again.updated, again.unchanged, again.total) == (0, 0, 12, 12)

    Image.fromarray(photo_arrays["coffee"][:80, :80]).save(files[0])  # changed content
    write_crops(tmp_path / "more", list(photo_arrays.values())[3:], 2)
    (tmp_path / "more" / "d0" / "img0000.jpg").rename(root / "new-a.jpg")
    (tmp_path / "more" / "d1" / "img0001.jpg").rename(root / "new-b.jpg")
    files[1].unlink()
    spy = _CountingEngine(_engine(cluster, FAST_MODEL))
    third = _index(db, [root], spy, FAST_MODEL, batch_size=4)
    assert (third.added, third.updated, third.removed, third.unchanged) == (2, 1, 1, 10)
    assert spy.sent == 3  # only the new and the changed files went to the cluster
    assert third.total == 13


def test_ray_engine_fills_a_milvus_collection_like_the_local_engine_fills_a_folder(
    cluster: Any, tmp_path: Path, photo_arrays: dict[str, np.ndarray]
) -> None:
    from milvus_helpers import require_milvus

    require_milvus()
    root = tmp_path / "photos"
    write_crops(root, list(photo_arrays.values()), 10)
    local = _index(tmp_path / "local", [root], LocalEngine(), FAST_MODEL, batch_size=4)
    milvus = f"milvus-lite:///{tmp_path / 'ray.db'}"
    remote = _index(milvus, [root], _engine(cluster, FAST_MODEL), FAST_MODEL, batch_size=4)
    assert remote.added == local.added == 10
    again = _index(milvus, [root], _engine(cluster, FAST_MODEL), FAST_MODEL, batch_size=4)
    assert (again.added, again.unchanged) == (0, 10)
    ours, theirs = _by_path(milvus), _by_path(tmp_path / "local")
    assert ours.keys() == theirs.keys()
    for path, (record, vector) in ours.items():
        assert float(vector @ theirs[path][1]) >= 0.9999, path
        assert record.hash == theirs[path][0].hash


class _CountingEngine(LocalEngine):
    """Wraps an engine and counts the paths it is given."""

    def __init__(self, inner: RayEngine) -> None:
        super().__init__()
        self.inner, self.sent = inner, 0

    def embed(self, embedder: Any, paths: Any, batch_size: int) -> Any:
        self.sent += len(paths)
        return self.inner.embed(embedder, paths, batch_size)


def test_a_worker_node_killed_mid_run_loses_and_duplicates_nothing(
    cluster: Any, tmp_path: Path, photo_arrays: dict[str, np.ndarray]
) -> None:
    files = write_crops(tmp_path / "photos", list(photo_arrays.values()), 48)
    victim = _busy_worker_node(cluster)
    killed: list[int] = []

    def progress(done: int, total: int) -> None:
        if done and not killed:
            killed.append(done)
            cluster.remove_node(victim, allow_graceful=False)  # kill -9 of its processes

    engine = _engine(cluster, REAL_MODEL)
    try:
        report = _index(
            tmp_path / "db",
            [tmp_path / "photos"],
            engine,
            REAL_MODEL,
            batch_size=2,
            progress=progress,
        )
    finally:
        cluster.add_node(**NODE_ARGS)  # back to three nodes for any later test
    assert killed and killed[0] < len(files)  # the node died with work still to do
    assert (report.added, report.total, report.skipped) == (48, 48, [])
    stored = _by_path(tmp_path / "db")
    assert sorted(stored) == sorted(str(p) for p in files)  # each once, none lost
    with Collection.open(tmp_path / "db") as col:
        rows = [r.row for r in col.store.records()]
        assert len(set(rows)) == len(rows) == col.store.vector_rows()
        embedder = col.embedder
    expected = embedder.embed_images([Image.open(p).convert("RGB") for p in files])
    for path, vector in zip(files, expected, strict=True):
        assert float(stored[str(path)][1] @ vector) >= 0.9999, path


def _busy_worker_node(cluster: Any) -> Any:
    """A non-head node: the one to kill (the head holds the driver's objects)."""
    nodes = list(cluster.worker_nodes)
    assert nodes, "the cluster has no worker node"
    return nodes[0]
