"""Where embedding runs: ``local`` (threads in this process, the default) or ``ray`` (a Ray
cluster). Both satisfy engines.base.EmbedEngine; ray is imported only when chosen."""

from __future__ import annotations

from lookalike.engines.base import EmbedderSpec, EmbedEngine
from lookalike.engines.local import LocalEngine
from lookalike.errors import EngineError

ENGINES = ("local", "ray")

__all__ = ["ENGINES", "EmbedEngine", "EmbedderSpec", "LocalEngine", "make_engine"]


def make_engine(
    name: str, spec: EmbedderSpec | None = None, ray_address: str | None = None
) -> EmbedEngine:
    """The engine called ``name``; ``spec`` (how workers rebuild the model) is needed by ray."""
    if name == "local":
        if ray_address is not None:
            raise EngineError("--ray-address needs --engine ray")
        return LocalEngine()
    if name == "ray":
        if spec is None:
            raise EngineError("the ray engine needs the model's spec to rebuild it on workers")
        from lookalike.engines.ray_engine import RayEngine

        return RayEngine(spec, address=ray_address)
    raise EngineError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
