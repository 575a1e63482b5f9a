"""Adapting features to a domain: precision@10 on Fashion-MNIST with and without an adapter.

Adapters are fit on (a class-balanced part of) the training split, with the code behind
``lookalike fit``, then scored on the 10,000 test images, which the fit never saw: each
test image queries the other 9,999 (exact cosine search) and precision@10 is the share of
its 10 nearest neighbours of its own class.

``--combine-with raw-pixels`` also scores the combined model ``MODEL+raw-pixels`` with and
without an adapter. Its vectors are computed from the cached vectors of each part with
``models.combined.combine`` (the function the combined embedder runs), so the slow model
is not run twice; the ``end_to_end`` lines check that indexing through the real combined
model and ``--adapter`` stores the same vectors.

Needs Debian's ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist). The images
are written as PNG folders under the cache dir by ``benchmarks/datasets.py``; the vectors
are cached in collections, so a second run only trains and scores.

Usage::

    python benchmarks/adaptation.py [--per-class 6000] [--kinds linear,mlp,pca]
        [--model efficientnet-lite0[@gem-2stage]] [--combine-with raw-pixels]
        [--epochs 30] [--seed 0]
        [--dim 256] [--members 3] [--hidden 1024] [--temperature 0.15] [--no-mirror]

Prints one JSON object per line: the data, one ``fit`` line per adapter (with the held-out
P@10 that fit reports), one ``test`` line per variant (``none`` = no adapter), and
``end_to_end`` lines (largest difference between the vectors a collection stored and the
adapted cached vectors; 0 up to float rounding).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datasets import write_fashion_mnist
from lookalike.adapters import load_adapter
from lookalike.evaluation.metrics import average_precision_at_k, precision_at_k
from lookalike.fitting import FitOptions, LabelledVectors, embed_folder, fit_folder, fit_vectors
from lookalike.index.exact import topk_blockwise
from lookalike.models import create_embedder
from lookalike.models.combined import combine
from lookalike.paths import cache_dir
from lookalike.vectors import FloatArray
from model_spec import model_spec

K = 10


def emit(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def progress(done: int, total: int) -> None:
    if total and (done == total or done % 2000 < 32):
        log(f"embedded {done}/{total}")


def leave_one_out(vectors: FloatArray, labels: np.ndarray) -> dict[str, float]:
    """P@10 and mAP@10 of every vector as a query against all the others."""
    ids = np.arange(len(vectors), dtype=np.int64)
    hits = topk_blockwise(vectors, ids, vectors, K + 1)
    neighbours = np.zeros((len(vectors), K), dtype=np.int64)
    for row in range(len(vectors)):  # drop the query itself wherever it ranks (ties)
        neighbours[row] = hits.ids[row][hits.ids[row] != row][:K]
    neighbour_labels = labels[neighbours]
    n_relevant = np.bincount(labels)[labels] - 1
    return {
        "p_at_10": round(float(precision_at_k(labels, neighbour_labels).mean()), 4),
        "map_at_10": round(
            float(np.nanmean(average_precision_at_k(labels, neighbour_labels, n_relevant))), 4
        ),
    }


def embed(folder: Path, models: list[str], mirror: bool = False) -> dict[str, LabelledVectors]:
    out = {}
    for model in models:
        started = time.perf_counter()
        name, options = model_spec(model)
        out[model] = embed_folder(folder, name, options, progress=progress, mirror=mirror)
        emit(
            {
                "step": "embed",
                "folder": folder.name,
                "model": model,
                "images": len(out[model].vectors),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    first = out[models[0]]
    for model in models[1:]:  # same images in the same order: parts line up row by row
        if not np.array_equal(out[model].labels, first.labels):
            raise SystemExit(f"{folder}: {model} and {models[0]} saw different images")
    return out


def combined(parts: dict[str, LabelledVectors], name: str) -> LabelledVectors:
    """The combined model's vectors from its parts' cached vectors."""
    embedder = create_embedder(name)
    weights = [w for _, w in embedder.parts]  # type: ignore[attr-defined]
    vectors = combine([parts[e.info.name].vectors for e, _ in embedder.parts], weights)  # type: ignore[attr-defined]
    first = next(iter(parts.values()))
    views = [
        combine([parts[e.info.name].views[i] for e, _ in embedder.parts], weights)  # type: ignore[attr-defined]
        for i in range(len(first.views))
    ]
    return LabelledVectors(
        vectors, first.labels, first.classes, embedder.info.identity(), views=views
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=6000, help="training images per class")
    parser.add_argument("--kinds", default="linear,mlp,pca")
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--combine-with", default="", help="e.g. raw-pixels")
    parser.add_argument("--combined-kinds", default="mlp")
    # Left out: `lookalike fit`'s defaults (FitOptions).
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=None, help="where to write the PNGs")
    args = parser.parse_args(argv)

    data = args.data or cache_dir() / "bench" / "fashion-mnist"
    train_dir = data / f"train-{args.per_class}"
    test_dir = data / "test"
    emit({"step": "data", **write_fashion_mnist(train_dir, "train", args.per_class)})
    emit({"step": "data", **write_fashion_mnist(test_dir, "test")})
    out_dir = data / "adapters"
    models = [args.model] + [m for m in args.combine_with.split(",") if m]
    if len(models) > 1 and "@" in args.model:
        raise SystemExit("--combine-with needs a plain --model name (no @options)")
    model_name, model_options = model_spec(args.model)  # e.g. efficientnet-lite0@gem-2stage
    given = {
        k: getattr(args, k) for k in ("epochs", "dim", "members", "mirror", "hidden", "temperature")
    }
    base = dataclasses.replace(
        FitOptions(), seed=args.seed, **{k: v for k, v in given.items() if v is not None}
    )
    train = embed(train_dir, models, mirror=base.mirror)
    test = embed(test_dir, models)

    variants: list[tuple[str, str, LabelledVectors, Path | None]] = [
        (args.model, "none", test[args.model], None)
    ]
    for kind in [k for k in args.kinds.split(",") if k]:
        label = args.model.replace("@", "_").replace("/", "_")
        out = out_dir / f"{label}-{kind}-{args.per_class}-s{args.seed}.npz"
        options = dataclasses.replace(base, kind=kind)
        report = fit_folder(train_dir, out, model_name, model_options, options=options, log=log)
        emit({"step": "fit", **{k: v for k, v in report.to_json().items() if k != "history"}})
        variants.append((args.model, kind, test[args.model], out))

    if len(models) > 1:
        name = "+".join(models)
        train_c, test_c = combined(train, name), combined(test, name)
        variants.append((name, "none", test_c, None))
        for kind in [k for k in args.combined_kinds.split(",") if k]:
            out = out_dir / f"{name}-{kind}-{args.per_class}-s{args.seed}.npz"
            options = dataclasses.replace(base, kind=kind)
            started = time.perf_counter()
            adapter, report = fit_vectors(train_c, options, log)
            report.sha256, report.out = adapter.save(out), str(out)
            report.seconds = round(time.perf_counter() - started, 2)
            emit({"step": "fit", **{k: v for k, v in report.to_json().items() if k != "history"}})
            variants.append((name, kind, test_c, out))

    for model, kind, vectors, path in variants:
        record: dict[str, object] = {"step": "test", "model": model, "adapter": kind}
        if path is None:
            scores = leave_one_out(vectors.vectors, vectors.labels)
        else:
            adapter, digest = load_adapter(path)
            record.update(file=str(path), sha256=digest, dim=adapter.dim_out)
            scores = leave_one_out(adapter.apply(vectors.vectors), vectors.labels)
        emit(
            {**record, "train_per_class": args.per_class, "images": len(vectors.vectors), **scores}
        )

    for model, kind, vectors, path in variants:
        if path is not None and kind != "pca":
            emit(end_to_end(test_dir, model, path, vectors))  # model: a spec (model_spec.py)
    return 0


def end_to_end(
    test_dir: Path, model: str, adapter_path: Path, cached: LabelledVectors
) -> dict[str, object]:
    """Index 20 test images through the real model with ``adapter=``; compare with the
    adapter applied to the cached vectors the scores above were computed from."""
    from lookalike.collection import Collection

    adapter, _ = load_adapter(adapter_path)
    paths = sorted(str(p) for p in test_dir.glob("*/*.png"))
    chosen = paths[::500]
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample"
        for src in map(Path, chosen):
            (sample / src.parent.name).mkdir(parents=True, exist_ok=True)
            (sample / src.parent.name / src.name).write_bytes(src.read_bytes())
        name, options = model_spec(model)
        with Collection.open(
            Path(tmp) / "db", model=name, model_options=options, adapter=adapter_path, create=True
        ) as col:
            col.index([sample])
            by_name = {
                Path(r.path).parent.name + "/" + Path(r.path).name: r.id
                for r in col.store.iter_records()
            }
            got = col.store.vectors_for([by_name["/".join(Path(p).parts[-2:])] for p in chosen])
    want = adapter.apply(cached.vectors[[paths.index(p) for p in chosen]])
    return {
        "step": "end_to_end",
        "model": model,
        "adapter": adapter.kind,
        "images": len(chosen),
        "max_abs_diff": round(float(np.max(np.abs(got - want))), 6),
    }


if __name__ == "__main__":
    sys.exit(main())
