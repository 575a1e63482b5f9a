"""benchmarks/end_to_end.py: the CLI runs and stages the throughput benchmark times."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from conftest import TEST_MODEL, load_benchmark


@pytest.fixture(scope="module")
def e2e() -> Any:
    return load_benchmark("end_to_end")


def test_cli_run_and_stages(e2e: Any, tmp_path: Path, photos: dict[str, Path]) -> None:
    folder = e2e.linked_folder(sorted(photos.values())[:3], tmp_path / "three")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in sorted(photos.values())[:3]
    )
    assert all(p.is_file() and not p.is_symlink() for p in folder.iterdir())
    env = dict(os.environ)
    run = e2e.run_cli(folder, TEST_MODEL, env)
    assert run["report"]["added"] == 3 and run["report"]["model"] == TEST_MODEL
    assert run["wall"] > 0 and run["cpu"] > 0
    stages = e2e.stages(folder, TEST_MODEL, env)
    assert stages["images"] == 3 and stages["model"] == TEST_MODEL
    parts = ("imports_s", "model_load_s", "discovery_s", "first_batch_s", "index_s")
    assert sum(stages[k] for k in parts) <= stages["process_total_s"]


def test_pipeline_floor_bounds_by_hand() -> None:
    """4 ms of network and 2 ms of everything else per photo, 2 cores, 0.3 s of start:
    300 photos take at best 0.3 + 300 * 6 ms / 2 = 1.2 s (250 img/s); the network is 2/3
    of the CPU; against a naive 25 ms per photo (40 img/s) that is 6.25x."""
    floor = load_benchmark("pipeline_floor")
    steps = {"read": 0.5, "hash": 0.25, "decode": 1.0, "resize": 0.25, "network": 4.0}
    out = floor.bounds(steps, start=0.3, naive_s=0.025, cores=2, counts=[300])
    assert out["per_photo_cpu_ms"] == 6.0
    assert out["of_ceiling_bound"] == round(4 / 6, 3)
    assert out["best_images_per_s_300"] == 250.0
    assert out["best_speedup_300"] == 6.25
    assert out["naive_images_per_s"] == 40.0


def test_pipeline_floor_times_every_step(photos: dict[str, Path]) -> None:
    from lookalike.models import create_embedder

    floor = load_benchmark("pipeline_floor")
    embedder = create_embedder(TEST_MODEL)
    costs = floor.step_costs(embedder, sorted(photos.values())[:4], 2)
    assert set(costs) == {"read", "hash", "decode", "resize", "network"}
    assert all(v >= 0 for v in costs.values())
    assert costs["decode"] > 0 and costs["network"] > 0
