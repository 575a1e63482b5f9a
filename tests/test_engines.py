"""The engine seam without a cluster: planning, choosing, and errors people see."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from conftest import TEST_MODEL
from lookalike.collection import Collection
from lookalike.engines import EmbedderSpec, LocalEngine, make_engine
from lookalike.engines.ray_plan import blocks_for, plan_actors
from lookalike.errors import EngineError


def test_one_actor_per_node_reserving_part_of_it_for_reads() -> None:
    plan = plan_actors([8.0, 8.0, 8.0, 0.0])  # a CPU-less node gets no actor
    assert (plan.actors, plan.threads) == (3, 8)
    assert plan.cpus_per_actor == 6.0  # two don't fit one node; reads always fit beside
    assert plan.cpus_per_actor + plan.read_cpus <= 8.0
    tiny = plan_actors([1.0])
    assert tiny.cpus_per_actor + tiny.read_cpus <= 1.0 and tiny.threads == 1
    with pytest.raises(ValueError, match="no node with CPUs"):
        plan_actors([0.0])


def test_actors_ask_for_a_gpu_only_when_every_node_has_one() -> None:
    assert plan_actors([8.0, 8.0]).gpus_per_actor == 0.0  # no GPUs given
    both = plan_actors([8.0, 8.0, 0.0], [1.0, 2.0, 0.0])  # the CPU-less node doesn't count
    assert (both.actors, both.gpus_per_actor) == (2, 1.0)
    mixed = plan_actors([8.0, 8.0], [1.0, 0.0])  # a GPU request would idle the second node
    assert (mixed.actors, mixed.gpus_per_actor) == (2, 0.0)


def test_a_ray_client_address_is_refused_in_one_line_saying_what_to_do_instead() -> None:
    pytest.importorskip("ray")
    from lookalike.engines.ray_engine import RayEngine

    engine = RayEngine(EmbedderSpec("raw-pixels"), address="ray://127.0.0.1:10001")
    with pytest.raises(EngineError, match="does not run through Ray Client") as caught:
        engine.__enter__()
    assert "--ray-address auto" in str(caught.value) and "ray job submit" in str(caught.value)


def test_a_folder_is_split_into_blocks_that_keep_every_actor_busy() -> None:
    assert blocks_for(1024, 32, actors=3) == 8  # 4 batches per block
    assert blocks_for(128, 32, actors=3) == 4  # fewer batches than 2 per actor: one each
    assert blocks_for(128, 32, actors=1) == 2
    assert blocks_for(1, 32, actors=3) == 1
    assert blocks_for(0, 32, actors=3) == 1


def test_engine_names_and_errors() -> None:
    assert isinstance(make_engine("local"), LocalEngine)
    with pytest.raises(EngineError, match="unknown engine 'spark'; choose one of local, ray"):
        make_engine("spark")
    with pytest.raises(EngineError, match="needs --engine ray"):
        make_engine("local", ray_address="auto")


def test_the_local_engine_is_the_default_and_indexes_as_before(
    photos: dict[str, Path], db: Path
) -> None:
    class Spy(LocalEngine):
        calls = 0

        def embed(self, embedder: Any, paths: Any, batch_size: int) -> Any:
            Spy.calls += 1
            return super().embed(embedder, paths, batch_size)

    with Collection.open(db, model=TEST_MODEL, create=True) as col:
        report = col.index([str(p) for p in photos.values()], engine=Spy())
        assert col.embedder_spec() == EmbedderSpec(TEST_MODEL, col.model_options, None)
    assert (report.added, Spy.calls) == (len(photos), 1)


def test_cli_ray_address_without_the_ray_engine_is_a_usage_error(
    cli: Any, photos: dict[str, Path]
) -> None:
    result = cli("index", str(next(iter(photos.values()))), "--ray-address", "auto")
    assert result.exit_code == 2
    assert "--ray-address needs --engine ray" in result.output


def test_cli_unreachable_cluster_is_one_line_in_seconds(cli: Any, photos: dict[str, Path]) -> None:
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["--model", TEST_MODEL, "--engine", "ray", "--ray-address", f"127.0.0.1:{port}"]
    result = cli("index", str(next(iter(photos.values()))), *args)
    assert result.exit_code == 1
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused" in result.output
    assert "Traceback" not in result.output
    bad = cli("index", str(next(iter(photos.values()))), *args[:4], "--ray-address", "h:x")
    assert bad.exit_code == 1 and "expected HOST:PORT" in bad.output


def test_the_actor_embeds_a_block_like_the_local_pipeline(tmp_path: Path) -> None:
    """EmbedActor called in this process (no cluster): rows, failures, sizes, hashes."""
    import os

    import numpy as np
    from PIL import Image

    from lookalike.engines.ray_worker import EmbedActor, to_blob, to_text
    from lookalike.hashing import file_digest

    good = tmp_path / os.fsdecode(b"caf\xe9.png")  # not valid UTF-8: travels as bytes
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    actor = EmbedActor(EmbedderSpec(TEST_MODEL), threads=1, batch_size=1)
    block = {"index": np.array([7, 9]), "path": [to_blob(str(good)), to_blob(str(bad))]}
    out = actor(block)
    assert out["index"].tolist() == [7, 9]
    assert (int(out["width"][0]), int(out["height"][0])) == (40, 30)
    assert out["digest"][0] == file_digest(good)
    assert to_text(out["error"][0]) == ""
    assert to_text(out["error"][1]).startswith(f"{bad}: ")
    expected = actor.embedder.embed_images([Image.open(good).convert("RGB")])[0]
    assert float(out["vector"][0] @ expected) >= 0.9999


def test_rows_seen_twice_are_dropped_and_another_model_is_refused() -> None:
    import numpy as np

    from lookalike.engines.ray_engine import _to_batch
    from lookalike.engines.ray_worker import to_blob

    def block(indices: list[int], fingerprint: str = "fp") -> dict[str, Any]:
        n = len(indices)
        return {
            "index": np.array(indices),
            "vector": np.eye(n, 3, dtype=np.float32),
            "width": np.ones(n, np.int64),
            "height": np.ones(n, np.int64),
            "digest": np.array(["d"] * n, dtype=object),
            "size": np.ones(n, np.int64),
            "mtime_ns": np.ones(n, np.int64),
            "error": np.array([to_blob("")] * (n - 1) + [to_blob("x: broken")], dtype=object),
            "fingerprint": np.array([fingerprint] * n, dtype=object),
        }

    seen: set[int] = set()
    first = _to_batch(block([0, 1, 2]), seen, "fp", 3)
    assert (first.indices, first.failures) == ([0, 1], [(2, "x: broken")])
    again = _to_batch(block([1, 2, 3]), seen, "fp", 3)  # a retried task's rows
    assert again.indices == [] and again.failures == [(3, "x: broken")]
    with pytest.raises(EngineError, match="a Ray worker built a different model"):
        _to_batch(block([5, 6]), seen, "fp-of-the-driver", 3)
