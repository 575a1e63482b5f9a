"""Would `lookalike fit` reach issue 9's 0.92 if the adapter saw *where* features are?

`fit` trains on the collection's stored vectors. GeM pools the whole 7x7 map, so the layout
of a Fashion-MNIST garment (sleeve length, neckline) is pooled away; the raw pixels, added to
lite0, once gave the adapter +1.9 points (BENCHMARKS.md "Model adaptation"). This tries the
layout of the network's own maps: GeM over a grid of cells of the same pass.

It adds outputs to the int8 ``gem-2stage`` graph (the best adapter input so far, 0.9166):

- ``g2x320``: GeM of the last block's 320-ch map over a 2x2 grid (overlapping 4x4 cells of
  the 7x7 map), 1280-d;
- ``g3x320``: the same over a 3x3 grid (3x3 cells, stride 2), 2880-d;
- ``g2x1280``: GeM of the head's 1280-ch map over the 2x2 grid, 5120-d.

Each grid vector is L2-normalised and appended to the 1600-d vector with weight 1. Then it
fits with `fit`'s default options (image and mirror views) on Fashion-MNIST *train* and
prints fit's held-out P@10 (the figure to choose on) and P@10 on the 10,000 test images
(leave-one-out), with no grid in the same run as the baseline. The outputs are cached
under ``--work``.

Usage: python benchmarks/fit_layout.py [--setups "none;g2x320;g3x320;g2x1280"]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adaptation import leave_one_out
from datasets import load_fashion_mnist
from fit_views import fit_and_score
from lookalike.fitting import LabelledVectors
from lookalike.models import create_embedder
from lookalike.models.pooling import GEM_P
from lookalike.paths import cache_dir
from model_spec import model_spec

MODEL = "efficientnet-lite0-int8"
GRIDS = {  # name: (tensor raised to p in the gem-2stage graph, kernel, stride)
    "g2x320": ("pow_102", 4, 3),
    "g3x320": ("pow_102", 3, 2),
    "g2x1280": ("pow_97", 4, 3),
}


def session_with_grids(path: Path) -> Any:
    """The cached int8 gem-2stage graph with one more output per grid (GeM per cell)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    names = {o for n in graph.node for o in n.output}
    inv_p = helper.make_tensor("grid_inv_p", onnx.TensorProto.FLOAT, [], [1.0 / GEM_P])
    graph.initializer.append(inv_p)
    for name, (tensor, kernel, stride) in GRIDS.items():
        if tensor not in names:
            raise SystemExit(f"{path.name} has no tensor {tensor}: the graph changed")
        graph.node.extend(
            [
                helper.make_node(
                    "AveragePool",
                    [tensor],
                    [f"{name}_mean"],
                    kernel_shape=[kernel, kernel],
                    strides=[stride, stride],
                ),
                helper.make_node("Pow", [f"{name}_mean", "grid_inv_p"], [f"{name}_gem"]),
                helper.make_node("Flatten", [f"{name}_gem"], [name], axis=1),
            ]
        )
        graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    return ort.InferenceSession(model.SerializeToString(), options)


def embed(embedder: Any, session: Any, images: np.ndarray, mirror: bool) -> dict[str, Any]:
    outputs = ["features", *GRIDS]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    for start in range(0, len(images), 64):
        batch = []
        for a in images[start : start + 64]:
            a = a[:, ::-1] if mirror else a
            image = Image.fromarray(np.ascontiguousarray(a)).convert("RGB")
            batch.append(embedder.prepare(image))
        results = session.run(outputs, {"pixels": np.stack(batch)})
        for name, out in zip(outputs, results, strict=True):
            parts[name].append(out.astype(np.float32))
    out = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    out["features"] = unit(out["features"])  # as the embedder returns it
    return out


def cached(embedder: Any, session: Any, images: np.ndarray, mirror: bool, path: Path) -> Any:
    if path.exists():
        return dict(np.load(path))
    started = time.perf_counter()
    out = embed(embedder, session, images, mirror)
    np.savez(path, **out)
    seconds = round(time.perf_counter() - started, 1)
    print(json.dumps({"embedded": path.stem, "images": len(images), "seconds": seconds}))
    return out


def unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


def vectors(parts: dict[str, np.ndarray], setup: str) -> np.ndarray:
    """The 1600-d gem-2stage vector, with the setup's grids appended, unit length."""
    pieces = [parts["features"]] + [unit(parts[g]) for g in setup.split("+") if g != "none"]
    return unit(np.concatenate(pieces, axis=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--setups", default="none;g2x320;g3x320;g2x1280")
    parser.add_argument("--work", type=Path, default=cache_dir() / "benchmark-data" / "fit-layout")
    args = parser.parse_args(argv)
    embedder = create_embedder(*model_spec(MODEL + "@gem-2stage"))
    embedder.embed_prepared([embedder.prepare(Image.new("RGB", (28, 28)))])  # builds the graph
    path = embedder.onnx_path()
    if path is None or not path.exists():
        raise SystemExit(f"{MODEL} with gem-2stage has no cached ONNX graph here")
    session = session_with_grids(path)
    args.work.mkdir(parents=True, exist_ok=True)
    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    train = cached(embedder, session, train_x, False, args.work / "train-orig.npz")
    mirror = cached(embedder, session, train_x, True, args.work / "train-mirror.npz")
    test = cached(embedder, session, test_x, False, args.work / "test-orig.npz")
    direct = embedder.embed_prepared([embedder.prepare(Image.fromarray(test_x[0]).convert("RGB"))])
    check = float(np.abs(direct[0] - test["features"][0]).max())
    print(json.dumps({"check": "features equal the embedder's", "max_abs_diff": check}))
    labels, test_labels = train_y.astype(np.int64), test_y.astype(np.int64)
    classes = [str(c) for c in range(10)]
    for setup in args.setups.split(";"):
        x_test = vectors(test, setup)
        row: dict[str, Any] = {"setup": setup, "dim": x_test.shape[1]}
        row["plain_test"] = leave_one_out(x_test, test_labels)
        data = LabelledVectors(
            vectors(train, setup),
            labels,
            classes,
            embedder.info.identity(),
            views=[vectors(mirror, setup)],
        )
        print(json.dumps(row | fit_and_score(data, x_test, test_labels)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
