"""Where a model's cosine scores put near duplicates: the defaults that depend on them.

GeM pooling (the default for new EfficientNet-Lite collections since the identity bump of
issues 9/10) spreads scores differently from average pooling, so ``duplicates``' default
threshold and the window of pairs checked by local features (lookalike.verify) are
calibrated per pooling, each on the planted near-duplicate set of
``benchmarks/near_duplicates.py --duplicates`` (BENCHMARKS.md "Near duplicates per edit
type"): the threshold is the lowest at which no unrelated pair scores at or above it, with
a margin; the floor keeps as many 30-degree rotations among the candidates as before.
A collection's scale follows the pooling its manifest records, so an older (avg)
collection keeps the figures it was calibrated on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScoreScale:
    pool: str
    threshold: float  # duplicates' default: least cosine for "near duplicates"
    candidate_floor: float  # verification checks pairs from here up to the threshold

    @property
    def verify_up_to(self) -> float:
        # Verification says "the same picture", not how close: above the default threshold
        # the score alone decides.
        return self.threshold


AVG = ScoreScale("avg", threshold=0.95, candidate_floor=0.4)
GEM = ScoreScale("gem", threshold=0.95, candidate_floor=0.4)
_BY_POOL = {s.pool: s for s in (AVG, GEM)}


def scale_of(identity: Mapping[str, Any]) -> ScoreScale:
    """The scale of a model identity (ModelInfo.identity(), manifest["model"]).

    A combined model is on the GeM scale only when every part is; anything that records no
    pooling (raw pixels, older collections) is on the average-pooling scale.
    """
    preprocessing = identity.get("preprocessing") or {}
    parts = preprocessing.get("parts")
    if isinstance(parts, list) and parts:
        pools = {scale_of(p).pool for p in parts if isinstance(p, Mapping)}
        return GEM if pools == {"gem"} else AVG
    return _BY_POOL.get(str(preprocessing.get("pool", "avg")), AVG)
