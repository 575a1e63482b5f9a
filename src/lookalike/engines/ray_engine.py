"""The ray engine: a pool of actors (Ray Data ``map_batches``) reads, decodes and embeds
blocks of files on the cluster's nodes.

Results stream back to the caller block by block as actors finish them, in any order;
each row names its input index, so the indexer commits batches as they arrive and a
killed driver loses only what it had not committed. A row seen twice (a retried task on
a node that died) is dropped here, so nothing is indexed twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.engines.base import EmbedderSpec, EmbedEngine
from lookalike.engines.ray_plan import ActorPlan, blocks_for, plan_actors
from lookalike.errors import EngineError
from lookalike.models.base import Embedder
from lookalike.pipeline import EmbeddedBatch, FileRead

# Paths go to the cluster this many at a time: bounds what the driver and the object
# store hold for a 50-million-file run (each chunk restarts the actor pool: ~seconds).
CHUNK_FILES = 100_000
AUTH_HINT = (
    "if the cluster uses token auth (`ray start`'s default), this machine needs its token "
    "too: ~/.ray/auth_token or RAY_AUTH_TOKEN"
)


# Ray Data's streaming executor needs a driver with its own core worker, which a Ray Client
# connection does not have ("'Worker' object has no attribute 'core_worker'", measured with
# ray 2.60; upstream: ray-project/ray#42739, #48682). So the driver runs on the cluster.
RAY_CLIENT_REFUSED = (
    "--ray-address {address}: Ray Data (which the ray engine uses) does not run through Ray "
    "Client; run lookalike on a node of the cluster with --ray-address auto (or the head's "
    "HOST:6379), or submit it there: ray job submit --address http://HEAD:8265 -- lookalike "
    "index PATH --engine ray --ray-address auto"
)


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on an address nobody listens at (ray.init retries for minutes)."""
    import socket

    if address == "auto":
        # The cluster last started on this machine (`ray start` records it), or $RAY_ADDRESS.
        try:
            from ray._private.services import canonicalize_bootstrap_address

            resolved = canonicalize_bootstrap_address("auto")
        except Exception:  # a private helper: if it moves or fails, ray.init decides
            return
        if not resolved:
            return
        address = resolved
    hostport = address.removeprefix("ray://")
    if ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    if not port.isdigit():
        raise EngineError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise EngineError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; "
            "is `ray start --head` running there, and is the port open?"
        ) from None


class RayEngine(EmbedEngine):
    name = "ray"

    def __init__(
        self, spec: EmbedderSpec, address: str | None = None, chunk_files: int = CHUNK_FILES
    ) -> None:
        self.spec = spec
        self.address = address
        self.chunk_files = chunk_files
        self._owns_connection = False
        self.plan: ActorPlan | None = None

    # ----- the cluster -------------------------------------------------------------------
    def __enter__(self) -> RayEngine:
        # No Ray, or an unreachable address, fails now, before a long scan; connecting
        # (starting a local Ray) waits until there is something to embed.
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise EngineError("the ray engine needs Ray: pip install 'lookalike[ray]'")
        if self.address is not None and self.address.startswith("ray://"):
            raise EngineError(RAY_CLIENT_REFUSED.format(address=self.address))
        if self.address is not None:
            _probe(self.address)
        return self

    def connect(self) -> Any:
        try:
            import ray
            import ray.data
        except ModuleNotFoundError:
            raise EngineError("the ray engine needs Ray: pip install 'lookalike[ray]'") from None
        if not ray.is_initialized():
            where = self.address or "a local Ray started for this run"
            if self.address is not None:
                _probe(self.address)
            kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            if self.address is None:
                from lookalike.models.onnx_backend import available_cpus

                kwargs.update(num_cpus=available_cpus(), include_dashboard=False)
            try:
                # "local": a new Ray even if `ray start` recorded a cluster on this machine.
                ray.init(address=self.address or "local", **kwargs)
            except Exception as exc:  # ConnectionError, auth errors, a bad address
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise EngineError(
                    f"cannot connect to the Ray cluster at {where}: "
                    f"{type(exc).__name__}: {detail} ({AUTH_HINT})"
                ) from None
            self._owns_connection = True
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # lookalike shows its own (rate, ETA)
        context.print_on_execution_start = False
        return ray

    def close(self) -> None:
        if self._owns_connection:
            import ray

            ray.shutdown()
            self._owns_connection = False

    def _plan(self, ray: Any) -> ActorPlan:
        alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        try:
            return plan_actors(
                [r.get("CPU", 0.0) for r in alive], [r.get("GPU", 0.0) for r in alive]
            )
        except ValueError as exc:
            raise EngineError(f"{self.address or 'local Ray'}: {exc}") from None

    # ----- embedding ---------------------------------------------------------------------
    def embed(
        self, embedder: Embedder, paths: Sequence[Path], batch_size: int
    ) -> Iterator[EmbeddedBatch]:
        if not paths:
            return
        ray = self.connect()
        self.plan = self._plan(ray)
        expected = embedder.info.fingerprint()
        seen: set[int] = set()
        for start in range(0, len(paths), self.chunk_files):
            chunk = paths[start : start + self.chunk_files]
            for block in self._dataset(ray, chunk, start, batch_size).iter_batches(
                batch_size=None, batch_format="numpy"
            ):
                batch = _to_batch(block, seen, expected, embedder.info.dim)
                if batch.indices or batch.failures:
                    yield batch

    def _dataset(self, ray: Any, paths: Sequence[Path], start: int, batch_size: int) -> Any:
        from ray.data import ActorPoolStrategy

        from lookalike.engines.ray_worker import EmbedActor, to_blob

        plan = self.plan
        assert plan is not None
        items = [{"index": start + i, "path": to_blob(str(p))} for i, p in enumerate(paths)]
        blocks = blocks_for(len(items), batch_size, plan.actors)
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        return ds.map_batches(
            EmbedActor,
            fn_constructor_args=(self.spec, plan.threads, batch_size),
            # min 1: a pool that lost a node's actor goes on with the others.
            compute=ActorPoolStrategy(min_size=1, max_size=plan.actors),
            num_cpus=plan.cpus_per_actor,
            num_gpus=plan.gpus_per_actor,
            batch_size=None,  # one block per call
        )


def _to_batch(block: dict[str, Any], seen: set[int], expected: str, dim: int) -> EmbeddedBatch:
    from lookalike.engines.ray_worker import to_text

    batch = EmbeddedBatch(indices=[], vectors=np.zeros((0, dim), np.float32))
    rows: list[int] = []
    for row, index in enumerate(block["index"].tolist()):
        if index in seen:
            continue  # a retried task's second copy
        error = to_text(block["error"][row])
        if error:
            batch.failures.append((index, error))
            seen.add(index)
            continue
        fingerprint = str(block["fingerprint"][row])
        if fingerprint != expected:
            raise EngineError(
                f"a Ray worker built a different model (fingerprint {fingerprint}, expected "
                f"{expected}): install the same lookalike version, model weights and "
                "options on every node"
            )
        seen.add(index)
        rows.append(row)
        batch.indices.append(index)
        batch.sizes.append((int(block["width"][row]), int(block["height"][row])))
        batch.reads.append(
            FileRead(
                str(block["digest"][row]), int(block["size"][row]), int(block["mtime_ns"][row])
            )
        )
    if rows:
        batch.vectors = np.ascontiguousarray(np.asarray(block["vector"])[rows], np.float32)
    return batch
