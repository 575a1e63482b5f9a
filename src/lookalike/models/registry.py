"""Model names -> embedders. Models register an entry; nothing heavy is imported until
``create_embedder`` is called for that model."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lookalike.errors import ModelError
from lookalike.models.base import Embedder


@dataclass(frozen=True)
class ModelOptions:
    """Options a user may pass with a model name."""

    weights: Path | None = None  # an explicit weights file (--weights)
    # Global pooling of the last feature map: avg | gem; None = the model's default
    # (gem for the EfficientNet-Lite family since issue 9/10, avg for timm models). A
    # collection records the resolved value and reopens with it.
    pool: str | None = None
    backend: str = "auto"  # auto (ONNX Runtime, else torch) | onnx | torch
    threads: int | None = None  # inference threads; None = all cores
    # Preprocessing recipe (preprocess.RECIPE); None = this version's. A collection
    # records its recipe and reopens with it, so its vectors never mix two recipes.
    recipe: int | None = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    dim: int
    input_size: int
    description: str
    factory: Callable[[ModelOptions], Embedder]
    # Cheap check (no model built): are the weights on this machine now?
    weights_available: Callable[[], bool]
    precision: str = "fp32"  # of the vectors: "fp32" or "int8" (runtime.precision_of)
    runtime: str = "onnxruntime"  # what runs it: "onnxruntime" (CPU or GPU) or "numpy"


_REGISTRY: dict[str, ModelEntry] = {}
# Modules that register built-in models when imported; each must import only light things.
_BUILTIN_MODULES = (
    "lookalike.models.pixels",
    "lookalike.models.efficientnet_lite",
    "lookalike.models.timm_models",
    "lookalike.models.combined",
    "lookalike.models.presets",
)
_loaded = False


def register(entry: ModelEntry) -> None:
    _REGISTRY[entry.name] = entry


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # Only a missing *built-in module* is tolerated (optional parts); a missing
            # third-party dependency inside it must surface when that model is used.
            if exc.name != module:
                raise


def list_models() -> list[ModelEntry]:
    _load_builtins()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_entry(name: str) -> ModelEntry:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ModelError(
            f"unknown model {name!r}; known models: {known} (see `lookalike models`)"
        ) from None


def create_embedder(name: str, options: ModelOptions | None = None) -> Embedder:
    """Build the embedder for a model name (e.g. ``efficientnet-lite0``)."""
    options = options or ModelOptions()
    resolver = _resolver_for(name)
    if resolver is not None:
        return resolver(name, options)
    return get_entry(name).factory(options)


# Name forms that are not single registry entries ("a+b", "timm:<name>") are handled by
# resolvers: functions that recognise a name and build its embedder.
NameResolver = Callable[[str, ModelOptions], Embedder]
_RESOLVERS: list[tuple[Callable[[str], bool], NameResolver]] = []


def register_resolver(matches: Callable[[str], bool], build: NameResolver) -> None:
    _RESOLVERS.append((matches, build))


def _resolver_for(name: str) -> NameResolver | None:
    _load_builtins()
    for matches, build in _RESOLVERS:
        if matches(name):
            return build
    return None
