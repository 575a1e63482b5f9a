"""How many embedding actors, and what each asks for, from a Ray cluster's resources.

One actor per node: its ONNX Runtime session and decode threads use all the node's cores,
as the local engine does on one machine. Each actor *reserves* only ACTOR_SHARE of the
node's CPUs, so Ray Data's own tasks (READ_CPUS: what one needs) always find room: an
actor pool that claims every CPU starves the other tasks and the job hangs
(ray-project/ray#44687), and a share above half keeps two actors off one node.

GPUs: when every node with CPUs also has a GPU, each actor asks for one; Ray then sets the
actor's CUDA_VISIBLE_DEVICES and the ONNX backend runs on the CUDA execution provider when
onnxruntime-gpu is installed there, after checking its vectors against the CPU's
(models/onnx_backend.py). A cluster where only some nodes have GPUs stays on the CPUs: one
resource request must fit every actor of the pool, and a GPU request would leave the other
nodes idle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ACTOR_SHARE = 0.75  # of a node's CPUs reserved per actor (> 0.5: one actor per node)
READ_CPUS = 0.1  # room left per node for Ray Data's small tasks
BATCHES_PER_BLOCK = 4  # an actor's decode threads run ahead of inference within a block


@dataclass(frozen=True)
class ActorPlan:
    actors: int  # pool size: one per node with CPUs
    cpus_per_actor: float  # what each actor reserves (a scheduling token, not a limit)
    threads: int  # inference and decode threads per actor
    read_cpus: float = READ_CPUS
    gpus_per_actor: float = 0.0  # 1 when every node has a GPU (see the module's docstring)


def plan_actors(node_cpus: Sequence[float], node_gpus: Sequence[float] = ()) -> ActorPlan:
    """``node_cpus`` / ``node_gpus``: the CPUs and GPUs of each alive node (Ray's per-node
    "CPU" and "GPU" resources, in the same order; no GPUs given: none)."""
    gpus = list(node_gpus) or [0.0] * len(node_cpus)
    usable = [(c, g) for c, g in zip(node_cpus, gpus, strict=True) if c > 0]
    if not usable:
        raise ValueError("the Ray cluster has no node with CPUs")
    smallest = min(c for c, _ in usable)
    every_node_has_a_gpu = all(g >= 1 for _, g in usable)
    return ActorPlan(
        actors=len(usable),
        cpus_per_actor=round(ACTOR_SHARE * smallest, 3),
        threads=max(1, math.floor(smallest)),
        gpus_per_actor=1.0 if every_node_has_a_gpu else 0.0,
    )


def blocks_for(n_files: int, batch_size: int, actors: int) -> int:
    """Blocks of BATCHES_PER_BLOCK batches, but at least two per actor while there are
    batches to share: a folder sent as one block would feed one actor only."""
    batches = max(1, math.ceil(n_files / batch_size))
    return max(math.ceil(batches / BATCHES_PER_BLOCK), min(batches, 2 * actors))
