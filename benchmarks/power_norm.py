"""Power normalisation of the default's vectors (x -> x^alpha, then L2 again; GeM outputs
are non-negative), measured on the validation sets (validation_sets.py) only.

Raising each component to alpha < 1 evens out "bursty" features that dominate the cosine,
a common step in retrieval pipelines. It needs no network change: the stored vectors are
transformed, so the network runs once and every alpha is scored on the same vectors.

Usage: python benchmarks/power_norm.py [--alphas 1,0.85,0.7,0.5,0.35]
Prints one JSON object per alpha (1 = the default).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import validation_sets
from lookalike.images import load_image
from lookalike.models import DEFAULT_MODEL, ModelOptions, create_embedder


def power_normalise(vectors: np.ndarray, alpha: float) -> np.ndarray:
    powered = np.sign(vectors) * np.abs(vectors) ** alpha
    return powered / np.linalg.norm(powered, axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--alphas", default="1,0.85,0.7,0.5,0.35")
    args = parser.parse_args(argv)
    model = create_embedder(DEFAULT_MODEL, ModelOptions())

    def embed(paths: list[Path]) -> np.ndarray:
        return np.concatenate(
            [
                model.embed_prepared([model.prepare(load_image(p)) for p in paths[i : i + 64]])
                for i in range(0, len(paths), 64)
            ]
        )

    sets = validation_sets.load()
    vectors = sets.embed(embed)
    lowest = min(float(v.min()) for v in vectors.values())
    for alpha in (float(a) for a in args.alphas.split(",")):
        powered = {name: power_normalise(v, alpha) for name, v in vectors.items()}
        row = {"alpha": alpha, **sets.score(powered), "lowest_component": lowest}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
