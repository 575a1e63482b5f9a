"""Combined representations: ``vgg16+resnet101v2``, optionally weighted ``a*0.7+b*0.3``.

The vector is the concatenation of each part's L2-normalised vector scaled by
``sqrt(weight)``, L2-normalised again. With weights summing to 1 the concatenation already
has unit length, so the combined cosine similarity is exactly the weighted mean of the
parts' cosine similarities: ``a*0.7+b*0.3`` scores ``0.7 * cos_a + 0.3 * cos_b``.
Without weights every part counts the same.

The canonical name (stored as the collection's model id) keeps the parts in the order
given, with weights normalised to sum to 1 and dropped when all are equal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from lookalike.errors import ModelError
from lookalike.models.base import Embedder, ModelInfo
from lookalike.models.registry import ModelOptions, create_embedder, register_resolver
from lookalike.vectors import FloatArray, l2_normalize

_WEIGHT = re.compile(r"^(?P<name>.+?)\s*\*\s*(?P<weight>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")


def parse(name: str) -> list[tuple[str, float]]:
    """``"a*0.7+b*0.3"`` -> [("a", 0.7), ("b", 0.3)], weights normalised to sum to 1."""
    parts: list[tuple[str, float]] = []
    for raw in name.split("+"):
        token = raw.strip()
        match = _WEIGHT.match(token)
        part, weight = (match["name"].strip(), float(match["weight"])) if match else (token, 1.0)
        if not part or "*" in part:
            raise ModelError(
                f"bad combined model name {name!r}; write models joined by '+', each "
                "optionally weighted: vgg16+resnet101v2 or vgg16*0.7+resnet101v2*0.3"
            )
        if not weight > 0 or not math.isfinite(weight):
            raise ModelError(f"{name!r}: the weight of {part!r} must be a positive number")
        parts.append((part, weight))
    if len(parts) < 2:
        raise ModelError(f"{name!r}: a combined model needs at least two models joined by '+'")
    names = [p for p, _ in parts]
    if len(set(names)) != len(names):
        raise ModelError(f"{name!r}: each model may appear only once")
    total = sum(w for _, w in parts)
    return [(p, w / total) for p, w in parts]


def canonical_name(name: str) -> str:
    """The one spelling of a combination: ``"a *2 + b*2"`` -> ``"a+b"``."""
    return _format(parse(name))


def _format(parts: Sequence[tuple[str, float]]) -> str:
    weights = [w for _, w in parts]
    if max(weights) - min(weights) < 1e-9:
        return "+".join(p for p, _ in parts)
    return "+".join(f"{p}*{w:.4g}" for p, w in parts)


def combine(parts: Sequence[FloatArray], weights: Sequence[float]) -> FloatArray:
    """The combined vectors from each part's (n, d_i) L2-normalised vectors."""
    if len(parts) != len(weights):
        raise ModelError(f"{len(parts)} parts but {len(weights)} weights")
    scaled = [
        np.asarray(v, dtype=np.float32) * np.float32(math.sqrt(w))
        for v, w in zip(parts, weights, strict=True)
    ]
    return l2_normalize(np.concatenate(scaled, axis=1))


class CombinedEmbedder(Embedder):
    """Runs each part on the same image; ``prepare`` returns a tuple of their inputs."""

    def __init__(self, parts: Sequence[tuple[Embedder, float]]) -> None:
        self.parts = list(parts)
        self.name = _format([(e.info.name, w) for e, w in self.parts])
        self.info = ModelInfo(
            name=self.name,
            dim=sum(e.info.dim for e, _ in self.parts),
            input_size=max(e.info.input_size for e, _ in self.parts),
            # Everything that makes each part's vectors what they are, in JSON form.
            preprocessing={
                "parts": [{**e.info.identity(), "weight": round(w, 6)} for e, w in self.parts]
            },
            weights_id="+".join(e.info.weights_id for e, _ in self.parts),
        )

    @property
    def draft_size(self) -> int:
        return max(e.draft_size for e, _ in self.parts)

    def prepare(self, image: Image.Image) -> tuple[Any, ...]:
        return tuple(e.prepare(image) for e, _ in self.parts)

    def embed_prepared(self, batch: Sequence[Any]) -> FloatArray:
        return self._embed(batch, serial=False)

    @property
    def inference_lanes(self) -> int:
        return min(e.inference_lanes for e, _ in self.parts)

    def embed_serial(self, batch: Sequence[Any]) -> FloatArray:
        return self._embed(batch, serial=True)

    def _embed(self, batch: Sequence[Any], serial: bool) -> FloatArray:
        if not batch:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        vectors = [
            (embedder.embed_serial if serial else embedder.embed_prepared)(
                [inputs[i] for inputs in batch]
            )
            for i, (embedder, _) in enumerate(self.parts)
        ]
        return combine(vectors, [w for _, w in self.parts])


def create(name: str, options: ModelOptions) -> CombinedEmbedder:
    parts = parse(name)
    if options.weights is not None:
        raise ModelError(
            f"--weights names one model's file, but {name!r} combines "
            f"{len(parts)}; put the files in $LOOKALIKE_WEIGHTS_DIR instead"
        )
    return CombinedEmbedder([(create_embedder(part, options), w) for part, w in parts])


register_resolver(lambda name: "+" in name, create)
