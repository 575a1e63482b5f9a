"""benchmarks/end_to_end.py: the CLI runs and stages the throughput benchmark times."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import TEST_MODEL, load_benchmark


@pytest.fixture(scope="module")
def e2e():  # type: ignore[no-untyped-def]
    return load_benchmark("end_to_end")


def test_cli_run_and_stages(e2e, tmp_path: Path, photos: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
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
