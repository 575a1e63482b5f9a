"""The retrieval-quality table: each model available here on Fashion-MNIST test and on the
near-duplicate set, with raw-pixels and the reports' plain pipeline (reports_pipeline.py,
computed in the same run on the same files) as baseline rows.

Usage:
    python benchmarks/quality.py [--models a,b] [--datasets fashion-mnist,near-duplicates]
                                 [--work DIR] [-k 10] [--markdown] [--per-class N]
                                 [--no-reports]

A model may carry options after "@" (model_spec.py): ``efficientnet-lite0-int8@avg/r3`` is
the int8 model with average pooling and preprocessing recipe 3 (the default before the
identity bump).

- fashion-mnist-val: the first 200 per class of Fashion-MNIST *train*, the validation split
  on which settings are chosen (never the reported figures).

- fashion-mnist: leave-one-out over the 10,000 test images (Debian's dataset-fashion-mnist);
  precision@k, mAP@k, recall@k, k-NN accuracy.
- photos / photos-val: stamp_photos.py's cut-out photos on white (issue 9's six classes,
  132 photos; ten other classes, 94, for choosing), leave-one-out, always at k = 5 as the
  issue scored them; each query's precision is paired with the reports' (the mean
  difference and a bootstrap 95% interval).
- near-duplicates: the altered copies of benchmarks/near_duplicates.py as queries against
  originals + distractors; recall@1 and mAP@k of finding the original (mAP@k here is the
  mean reciprocal rank within k, each query having exactly one original), and recall@1
  per alteration.

Datasets are written under --work (default: <lookalike cache>/benchmark-data) once; the
embeddings are cached by `lookalike eval`'s cache, so a rerun only scores. Prints one JSON
object per (dataset, model); --markdown also prints the table rows on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reports_pipeline
from datasets import write_fashion_mnist
from lookalike.evaluation.metrics import recall_at_k
from lookalike.evaluation.paired import compare
from lookalike.evaluation.runner import EvalResult, evaluate
from lookalike.models import list_models
from lookalike.paths import cache_dir
from model_spec import model_spec
from near_duplicates import build as build_near_duplicates
from stamp_photos import SETS, write_stamp_photos

DATASETS = ("fashion-mnist", "near-duplicates", "photos")
# Validation sets for choosing settings (never the reported figures): Fashion-MNIST train,
# other classes of stamp photos.
VALIDATION = ("fashion-mnist-val", "photos-val")
STAMP_SETS = tuple(SETS)
PHOTOS_K = 5  # the photo set was scored at k = 5
BASELINE = "raw-pixels"
REPORTS = reports_pipeline.NAME  # the reports' plain script, computed in the same run


def available_models() -> list[str]:
    """Every registered model whose weights are on this machine, the baseline first."""
    names = [m.name for m in list_models() if m.weights_available()]
    return sorted(names, key=lambda n: (n != BASELINE, n))


def prepare(dataset: str, work: Path, per_class: int | None = None) -> tuple[Path, Path | None]:
    """(gallery folder, query folder or None for leave-one-out), written if missing.

    ``per_class``: Fashion-MNIST keeps the first N images of each class (N=200: 2,000).
    """
    if dataset in ("fashion-mnist", "fashion-mnist-val"):
        split = "test" if dataset == "fashion-mnist" else "train"
        if dataset == "fashion-mnist-val" and per_class is None:
            per_class = 200
        suffix = "" if per_class is None else f"-{per_class}"
        folder = work / f"fashion-mnist-{split}{suffix}"
        write_fashion_mnist(folder, split=split, per_class=per_class)
        return folder, None
    if dataset in STAMP_SETS:
        folder = work / dataset
        write_stamp_photos(dataset, folder)
        return folder, None
    if dataset == "near-duplicates":
        folder = work / "near-duplicates"
        if not (folder / "manifest.json").exists():
            build_near_duplicates(folder)
        return folder / "gallery", folder / "queries"
    raise SystemExit(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS + VALIDATION)}")


def recall_at_1(result: EvalResult) -> np.ndarray:
    """(q,) recall@1 of each query (NaN where nothing is relevant)."""
    labels = result.neighbour_labels()[:, :1]
    return recall_at_k(result.scores.query_labels, labels, result.n_relevant)


def row(dataset: str, result: EvalResult, seconds: float) -> dict[str, Any]:
    data = result.to_json()
    out: dict[str, Any] = {
        "dataset": dataset,
        "model": result.model,
        "k": result.k,
        "mode": result.mode,
        "queries": data["queries"],
        "gallery": data["gallery"],
        "precision_at_k": data["precision_at_k"],
        "map_at_k": data["map_at_k"],
        "recall_at_k": data["recall_at_k"],
        "knn_accuracy": data["knn_accuracy"],
        "embedded": result.embedded,
        "embed_seconds": data["embed_seconds"],
        "seconds": round(seconds, 2),
    }
    if result.embedded:
        out["images_per_second"] = round(result.embedded / max(result.embed_seconds, 1e-9), 1)
    if dataset.startswith("near-duplicates"):
        # One original per query: recall@1 = "the original is the nearest neighbour".
        out["recall_at_1"] = round(float(np.nanmean(recall_at_1(result))), 6)
        # Query files are named after their alteration (crop.png, jpeg20.jpg, ...).
        per_query = recall_at_1(result)
        alterations = [Path(p).stem for p in result.query_paths]
        out["recall_at_1_by_alteration"] = {
            name: round(float(np.nanmean(per_query[[a == name for a in alterations]])), 4)
            for name in dict.fromkeys(alterations)
        }
    return out


def reports_row(dataset: str, gallery: Path, queries: Path | None, k: int) -> dict[str, Any]:
    """The reports' pipeline on the same files, scored by the same metrics."""
    started = time.perf_counter()
    out = reports_pipeline.evaluate(gallery, queries, k)
    paths, top1 = out.pop("query_paths"), np.asarray(out.pop("top1_correct"), dtype=float)
    REPORTS_PRECISION[dataset] = dict(zip(paths, out.pop("precision_per_query"), strict=True))
    out.pop("average_precision_per_query")
    out = {"dataset": dataset, **out, "seconds": round(time.perf_counter() - started, 2)}
    out["images_per_second"] = round(out["embedded"] / max(out["embed_seconds"], 1e-9), 1)
    if dataset.startswith("near-duplicates"):
        out["recall_at_1"] = round(float(top1.mean()), 6)
        alterations = [Path(p).stem for p in paths]
        out["recall_at_1_by_alteration"] = {
            name: round(float(top1[[a == name for a in alterations]].mean()), 4)
            for name in dict.fromkeys(alterations)
        }
    return out


REPORTS_PRECISION: dict[str, dict[str, float]] = {}  # dataset -> query path -> its P@k


def against_reports(dataset: str, result: EvalResult) -> dict[str, Any] | None:
    """Each query's P@k against the reports' on it (``lookalike.evaluation.paired``: the
    mean difference, a paired bootstrap 95% interval, better / worse, the sign test's p);
    None without the reports' row."""
    theirs = REPORTS_PRECISION.get(dataset)
    if theirs is None:
        return None
    reports = [theirs[q] for q in result.query_paths]
    return compare(result.scores.precision, reports).to_json()


def markdown(rows: list[dict[str, Any]], k: int) -> str:
    def f(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    lines = [
        f"| model | FMNIST P@{k} | FMNIST mAP@{k} | FMNIST R@{k} | FMNIST k-NN acc | "
        f"near-dup recall@1 | near-dup mAP@{k} | photos P@{PHOTOS_K} | photos mAP@{PHOTOS_K} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    models = list(dict.fromkeys(r["model"] for r in rows))
    for model in models:
        fm = next((r for r in rows if r["model"] == model and "fashion" in r["dataset"]), {})
        nd = next((r for r in rows if r["model"] == model and "near" in r["dataset"]), {})
        ph = next((r for r in rows if r["model"] == model and r["dataset"] in STAMP_SETS), {})
        lines.append(
            f"| {model} | {f(fm.get('precision_at_k'))} | {f(fm.get('map_at_k'))} | "
            f"{f(fm.get('recall_at_k'))} | {f(fm.get('knn_accuracy'))} | "
            f"{f(nd.get('recall_at_1'))} | {f(nd.get('map_at_k'))} | "
            f"{f(ph.get('precision_at_k'))} | {f(ph.get('map_at_k'))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=None, help="comma-separated (default: all here)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument(
        "--per-class", type=int, default=None, help="Fashion-MNIST: first N of each class"
    )
    parser.add_argument("--no-reports", action="store_true", help="skip the reports' pipeline row")
    args = parser.parse_args(argv)

    models = args.models.split(",") if args.models else available_models()
    work = args.work or cache_dir() / "benchmark-data"
    rows = []
    for dataset in args.datasets.split(","):
        gallery, queries = prepare(dataset, work, args.per_class)
        k = PHOTOS_K if dataset in STAMP_SETS else args.k
        if not args.no_reports:
            rows.append(reports_row(dataset, gallery, queries, k))
            print(json.dumps(rows[-1]), flush=True)
        for model in models:
            started = time.perf_counter()
            name, options = model_spec(model)
            result = evaluate(gallery, name, k=k, queries_dir=queries, model_options=options)
            rows.append({**row(dataset, result, time.perf_counter() - started), "model": model})
            paired = against_reports(dataset, result)
            if paired is not None:
                rows[-1]["precision_against_reports"] = paired
            print(json.dumps(rows[-1]), flush=True)
    if args.markdown:
        print(markdown(rows, args.k), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
