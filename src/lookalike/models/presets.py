"""Named presets: a short name for a model setup chosen by measurement.

``best``: efficientnet-lite0+lite1+lite2 at their native sizes (224/240/260), combined so
the cosine is the mean of the three (models/combined.py). Chosen on the validation splits
(BENCHMARKS.md, "Ensembles and other feature variants"); it embeds several times slower
than the default. A collection records the combined name, so it reopens without the preset.
"""

from __future__ import annotations

import functools

from lookalike.models.base import Embedder
from lookalike.models.registry import ModelEntry, ModelOptions, create_embedder, get_entry, register

PRESETS = {"best": "efficientnet-lite0+efficientnet-lite1+efficientnet-lite2"}


def resolve(name: str) -> str:
    """The model name a preset stands for; any other name unchanged."""
    return PRESETS.get(name, name)


def _build(target: str, options: ModelOptions) -> Embedder:
    return create_embedder(target, options)


def _available(parts: list[str]) -> bool:
    return all(get_entry(p).weights_available() for p in parts)


def _register() -> None:
    for preset, target in PRESETS.items():
        parts = target.split("+")

        register(
            ModelEntry(
                name=preset,
                dim=1280 * len(parts),
                input_size=260,
                description=f"preset: {target} (better retrieval, several times slower)",
                factory=functools.partial(_build, target),
                weights_available=functools.partial(_available, parts),
            )
        )


_register()
