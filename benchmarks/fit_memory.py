"""Peak memory of `fit` (fitting.fit_vectors) on random labelled vectors.

Each run is a fresh process (peak RSS is per process): ``--n`` unit vectors of ``--dim``
in ``--classes`` classes plus one other view of each (as fit's mirrored views), one epoch,
one member; everything else fit's defaults. Prints one JSON object: the input's size, the
process's peak RSS before and after fitting, and their difference in multiples of the input.

Usage: python benchmarks/fit_memory.py --n 20000 --dim 4480
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

from lookalike.fitting import FitOptions, LabelledVectors, fit_vectors


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=4480)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args(argv)
    import torch  # noqa: F401  (loaded before the first reading: its own size is not fit's)

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    view = vectors + 0.1 * rng.standard_normal((args.n, args.dim), dtype=np.float32)
    labels = rng.integers(0, args.classes, args.n).astype(np.int64)
    data = LabelledVectors(
        vectors=vectors,
        labels=labels,
        classes=[f"c{i}" for i in range(args.classes)],
        model={"model": "random"},
        views=[view],
    )
    before = peak_mib()
    started = time.perf_counter()
    fit_vectors(data, FitOptions(kind="mlp", epochs=1, members=1))
    after = peak_mib()
    input_mib = (vectors.nbytes + view.nbytes) / 2**20
    row = {
        "n": args.n,
        "dim": args.dim,
        "input_mib": round(input_mib, 1),
        "peak_before_fit_mib": round(before, 1),
        "peak_mib": round(after, 1),
        "fit_added_inputs": round((after - before) / input_mib, 2),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
