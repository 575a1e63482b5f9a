"""Pooling names: how a feature map (or two) becomes the vector. No heavy imports.

- ``avg``: the mean of the last feature map; ``gem``: its generalised mean, p = 3;
- ``gem-2stage`` (EfficientNet-Lite only): the GeM vectors of the last feature map and of
  the last MBConv block's output (the map before the 1x1 head conv), each L2-normalised,
  the second times ``STAGE_WEIGHT``, concatenated (1280 + 320 = 1600-d for lite0). Weight
  chosen on validation sets for lite0 (BENCHMARKS.md "Two stages"); opt-in. The block's
  map keeps detail the head conv pools away, from the same network pass (no extra layers).
- ``gem-grid`` (EfficientNet-Lite only): ``gem-2stage`` plus where things are: the last
  block's map GeM-pooled over a ``GRID`` x ``GRID`` grid of cells, L2-normalised, times
  ``GRID_WEIGHT`` (4480-d for lite0). For `lookalike fit` on images with a fixed layout
  (BENCHMARKS.md "Where things are"): it gave the adapter +0.6 point over gem-2stage.
"""

from __future__ import annotations

import math

AVG = "avg"
GEM = "gem"
GEM_TWO_STAGE = "gem-2stage"
GEM_GRID = "gem-grid"
MAP_POOLS = (AVG, GEM)  # any model's last feature map
STAGE_POOLS = (GEM_TWO_STAGE, GEM_GRID)  # these read the last block's map too
POOLS = (*MAP_POOLS, *STAGE_POOLS)  # what --pool offers
GEM_P = 3.0
GEM_EPS = 1e-6
# The stage vector's weight against the head's (both unit length): 1.5 won the validation
# sets among 0.5-2.0. Part of the pool's identity: change it only with a new pool name.
STAGE_WEIGHT = 1.5
# gem-grid: a 3x3 grid won fit's held-out images over 2x2 (and over 2x2 of the head's map).
# Its part weighs as much as the two global parts together, as measured. Part of the
# pool's identity, as above.
GRID = 3
GRID_WEIGHT = math.sqrt(1.0 + STAGE_WEIGHT**2)


def grid_cells(side: int, cells: int = GRID) -> tuple[int, int]:
    """(kernel, stride) of the pooling windows that tile a side x side map with ``cells``
    windows per side, first and last at the edges (7 -> 3, 2: rows 0-2, 2-4, 4-6)."""
    stride = max(1, side // cells)
    return max(1, side - (cells - 1) * stride), stride
