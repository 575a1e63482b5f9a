"""Pooling names: how a feature map (or two) becomes the vector. No heavy imports.

- ``avg``: the mean of the last feature map; ``gem``: its generalised mean, p = 3;
- ``gem-2stage`` (EfficientNet-Lite only): the GeM vectors of the last feature map and of
  the last MBConv block's output (the map before the 1x1 head conv), each L2-normalised,
  the second times ``STAGE_WEIGHT``, concatenated (1280 + 320 = 1600-d for lite0). Weight
  chosen on validation sets for lite0 (BENCHMARKS.md "Two stages"); opt-in. The block's
  map keeps detail the head conv pools away, from the same network pass (no extra layers).
"""

from __future__ import annotations

AVG = "avg"
GEM = "gem"
GEM_TWO_STAGE = "gem-2stage"
MAP_POOLS = (AVG, GEM)  # any model's last feature map
POOLS = (*MAP_POOLS, GEM_TWO_STAGE)  # what --pool offers
GEM_P = 3.0
GEM_EPS = 1e-6
# The stage vector's weight against the head's (both unit length): 1.5 won the validation
# sets among 0.5-2.0. Part of the pool's identity: change it only with a new pool name.
STAGE_WEIGHT = 1.5
