"""Issue 9's untried feature ideas for efficientnet-lite0, measured on validation data.

Every variant comes from ONE PyTorch forward pass (fp32, the package's weights) per image
and input size, with hooks on two earlier stages (the last 112-ch block, 14x14 at 224 px,
and the last 320-ch block, before the 1x1 head conv):

- ``gem3`` (today's default vector: GeM p=3 of the final 1280-ch map, recipe 4; checked
  against the package's own embedder, cosine >= 0.999), ``avg``, ``gemP`` for P in 2, 4, 6;
- ``ms224+S``: the mean of the L2-normalised gem3 vectors at 224 and S px (the same
  recipe, resized to S x S), L2-normalised;
- ``stage320xW`` / ``stage112xW``: [gem3(final) ; W * gem3(stage)], each part
  L2-normalised first, the whole L2-normalised;
- ``aspect-area`` / ``aspect-short``: gem3 of the whole image resized with its aspect ratio
  kept instead of squashed to the square (issue 9's "let the fully convolutional network
  see a non-square input"): about 224 x 224 pixels in all, or the shorter side 224; sides
  rounded to multiples of 32, one image per pass (``padding_check`` shows that the
  network's static padding, computed for 224, is exact at such sizes);
- the reports' pipeline (reports_pipeline.py: bicubic, avg, its own network load).

Sets (validation unless --set test):
- Fashion-MNIST: validation = the first 200 per class of *train* (quality.py's
  fashion-mnist-val); test = the 10,000 test images (``--fmnist-limit N``: the first N/10
  of each class). Leave-one-out P@10 and mAP@10 (rerank_quality.run).
- hard copies (hard_copies.py): validation = foolbox's photos, test = the tests' photos;
  MRR@5 of the original (hard_copies.py's mAP@5) and recall@1.
- near duplicates (near_duplicates.py): the queries of the even (validation) / odd (test)
  originals, against the whole gallery (rerank_quality.py's near-duplicates-val/-test);
  recall@1 and MRR@10 (rerank_quality.run).

Usage: python benchmarks/feature_variants.py [--set validation|test] [--variants a,b]
                                             [--fmnist-limit N] [--work DIR] [--threads N]
Prints one JSON object per line: the embedder check, images/s of the forward pass per
input size and set, then one row per (set, variant).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hard_copies
import reports_pipeline
from lookalike.evaluation.dataset import LabelledImages, read_dataset
from lookalike.evaluation.metrics import average_precision_at_k
from lookalike.images import load_image
from lookalike.models import ModelOptions, create_embedder
from lookalike.models.efficientnet_lite import build_network, weights_path
from lookalike.models.preprocess import Preprocess
from lookalike.paths import cache_dir
from lookalike.vectors import l2_normalize
from quality import prepare
from rerank_quality import _half, run

MODEL = "efficientnet-lite0"
BASE = 224
GEM_PS = (2, 3, 4, 6)
ASPECT_MODES = ("area", "short")
STAGES = {"stage112": 112, "stage320": 320}  # the last block with this many channels
BATCH = 32
HARD_K = 5  # hard_copies.py's k


def _gem(x: Any, p: float) -> Any:
    """GeM as lookalike's global_pool computes it (clamped at 1e-6), any p."""
    return x.clamp(min=1e-6).pow(p).mean((2, 3)).pow(1.0 / p)


def _ms(*sizes: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    def combine(f: dict[str, np.ndarray]) -> np.ndarray:
        return l2_normalize(sum(l2_normalize(f[f"final-gem3@{s}"]) for s in sizes))

    return combine


def _stage(stage: str, w: float) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    def combine(f: dict[str, np.ndarray]) -> np.ndarray:
        parts = [l2_normalize(f[f"final-gem3@{BASE}"]), w * l2_normalize(f[f"{stage}-gem3@{BASE}"])]
        return l2_normalize(np.concatenate(parts, axis=1))

    return combine


def _rmac_regions(side: int, levels: int = 3) -> list[tuple[int, int, int]]:
    """R-MAC's square regions on a side x side map (Tolias et al., 2016): at level l,
    side 2*side/(l+1) rounded, l x l positions evenly spread; (top, left, size)."""
    regions = []
    for level in range(1, levels + 1):
        size = max(1, min(side, round(2 * side / (level + 1))))
        starts = np.linspace(0, side - size, level).round().astype(int) if level > 1 else [0]
        regions += [(int(t), int(left), size) for t in starts for left in starts]
    return regions


def aspect_shape(width: int, height: int, mode: str) -> tuple[int, int]:
    """(W, H) network input keeping the image's aspect ratio, each side a multiple of 32
    (so the network's static "same" padding, computed for 224, stays exact): ``area`` about
    224 x 224 pixels in all, ``short`` the shorter side 224."""
    if mode == "area":
        w, h = BASE * math.sqrt(width / height), BASE * math.sqrt(height / width)
    else:
        scale = BASE / min(width, height)
        w, h = width * scale, height * scale
    return max(32, round(w / 32) * 32), max(32, round(h / 32) * 32)


def _regional(name: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    def combine(f: dict[str, np.ndarray]) -> np.ndarray:
        return l2_normalize(f[f"final-{name}@{BASE}"])

    return combine


# variant -> (the input sizes it needs, its vectors from the pooled features)
VARIANTS: dict[str, tuple[tuple[int, ...], Callable[[dict[str, np.ndarray]], np.ndarray]]] = {
    "gem3": ((BASE,), lambda f: l2_normalize(f[f"final-gem3@{BASE}"])),
    "avg": ((BASE,), lambda f: l2_normalize(f[f"final-avg@{BASE}"])),
    # both global poolings in 1280 dims: the sum of the two L2-normalised vectors
    "avg+gem3-sum": (
        (BASE,),
        lambda f: l2_normalize(
            l2_normalize(f[f"final-avg@{BASE}"]) + l2_normalize(f[f"final-gem3@{BASE}"])
        ),
    ),
    **{
        f"gem{p}": ((BASE,), lambda f, p=p: l2_normalize(f[f"final-gem{p}@{BASE}"]))
        for p in GEM_PS
        if p != 3
    },
    "ms224+288": ((BASE, 288), _ms(BASE, 288)),
    "ms224+320": ((BASE, 320), _ms(BASE, 320)),
    **{
        f"{stage}x{w}": ((BASE,), _stage(stage, w))
        for stage in ("stage320", "stage112")
        for w in (0.5, 0.75, 1.0, 1.5, 2.0)
    },
    # regional pooling of the final map: the sum of L2-normalised region vectors
    **{v: ((BASE,), _regional(v)) for v in ("rmac", "rgem3", "rgem3+g", "avg+gem3")},
    # the whole image with its aspect ratio kept (no squash), one image per forward pass
    **{
        f"aspect-{mode}": ((), lambda f, mode=mode: l2_normalize(f[f"aspect-{mode}-gem3"]))
        for mode in ASPECT_MODES
    },
}


class Extractor:
    """lite0 in PyTorch with hooks on the last 112-ch and 320-ch blocks."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.network = build_network(MODEL, weights_path(MODEL)).eval()
        self.captured: dict[str, Any] = {}
        blocks = self.network._blocks
        for stage, channels in STAGES.items():
            index = max(i for i, b in enumerate(blocks) if b._project_conv.out_channels == channels)
            blocks[index].register_forward_hook(self._hook(stage))
        self.seconds: dict[int, float] = {}
        self.images: dict[int, int] = {}

    def _hook(self, stage: str) -> Callable[..., None]:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            self.captured[stage] = output

        return hook

    def pooled(self, pixels: np.ndarray, size: int, everything: bool) -> dict[str, np.ndarray]:
        """(n, s, s, 3) uint8 -> {"final-gem3@224": (n, 1280), ...}."""
        mul, add = Preprocess.tf_efficientnet(size).affine
        x = np.ascontiguousarray((pixels * mul + add).transpose(0, 3, 1, 2), dtype=np.float32)
        started = time.perf_counter()
        with self.torch.no_grad():
            final = self.network.extract_features(self.torch.from_numpy(x))
            out = {f"final-gem3@{size}": _gem(final, 3.0)}
            if everything:
                out[f"final-avg@{size}"] = final.mean((2, 3))
                for p in GEM_PS:
                    out[f"final-gem{p}@{size}"] = _gem(final, float(p))
                for stage in STAGES:
                    out[f"{stage}-gem3@{size}"] = _gem(self.captured[stage], 3.0)
                out |= {f"final-{k}@{size}": v for k, v in self._regional(final).items()}
        self.seconds[size] = self.seconds.get(size, 0.0) + time.perf_counter() - started
        self.images[size] = self.images.get(size, 0) + len(pixels)
        return {k: v.numpy() for k, v in out.items()}

    def _regional(self, final: Any) -> dict[str, Any]:
        torch = self.torch
        norm = torch.nn.functional.normalize
        side = final.shape[-1]
        maxes, gems = [], []
        for top, left, size in _rmac_regions(side):
            region = final[:, :, top : top + size, left : left + size]
            maxes.append(norm(region.amax((2, 3)), dim=1))
            gems.append(norm(_gem(region, 3.0), dim=1))
        whole_gem = norm(_gem(final, 3.0), dim=1)
        return {
            "rmac": sum(maxes),
            "rgem3": sum(gems),
            "rgem3+g": sum(gems) + len(gems) * whole_gem,
            "avg+gem3": torch.cat([norm(final.mean((2, 3)), dim=1), whole_gem], dim=1),
        }

    def features(
        self, paths: list[Path], sizes: tuple[int, ...], aspects: tuple[str, ...] = ()
    ) -> dict[str, np.ndarray]:
        """Every pooled feature of every image, decoded once, batches of BATCH (one image
        at a time for the ``aspects`` modes: each has its own input shape)."""
        recipes = {s: Preprocess.tf_efficientnet(s) for s in sizes}
        chunks: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(paths), BATCH):
            images = [load_image(p) for p in paths[start : start + BATCH]]
            for size, recipe in recipes.items():
                pixels = np.stack([recipe.pixels(im) for im in images])
                for key, value in self.pooled(pixels, size, size == BASE).items():
                    chunks.setdefault(key, []).append(value)
            for mode in aspects:
                for image in images:
                    chunks.setdefault(f"aspect-{mode}-gem3", []).append(self.aspect(image, mode))
        return {k: np.concatenate(v) for k, v in chunks.items()}

    def aspect(self, image: Any, mode: str) -> np.ndarray:
        """(1, 1280) gem3 of ``image`` resized (bilinear, as recipe 4) to aspect_shape."""
        from PIL import Image

        shape = aspect_shape(image.width, image.height, mode)
        pixels = np.asarray(image.convert("RGB").resize(shape, Image.Resampling.BILINEAR))
        mul, add = Preprocess.tf_efficientnet(BASE).affine
        x = np.ascontiguousarray((pixels * mul + add).transpose(2, 0, 1)[None], np.float32)
        started = time.perf_counter()
        with self.torch.no_grad():
            out = _gem(self.network.extract_features(self.torch.from_numpy(x)), 3.0).numpy()
        self.seconds[0] = self.seconds.get(0, 0.0) + time.perf_counter() - started
        self.images[0] = self.images.get(0, 0) + 1
        return np.asarray(out)


def padding_check(extractor: Extractor) -> dict[str, Any]:
    """The network built for 224 x 224 (static "same" padding) against one built for the
    input's own shape, on a non-square input whose sides are multiples of 32."""
    from efficientnet_lite_pytorch import EfficientNet

    torch = extractor.torch
    height, width = 160, 320
    exact = EfficientNet.from_name(MODEL, image_size=(height, width))
    exact.load_state_dict(extractor.network.state_dict())
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, height, width)))
    with torch.no_grad():
        a = extractor.network.extract_features(x.float())
        b = exact.eval().extract_features(x.float())
    return {
        "check": "static padding on a non-square input",
        "input": f"{width}x{height}",
        "max_abs_difference": float((a - b).abs().max()),
        "ok": bool(torch.equal(a, b)),
    }


def hard_score(g: np.ndarray, g_labels: np.ndarray, q: np.ndarray, q_labels: np.ndarray) -> dict:
    """hard_copies.py's mAP@5 (one original per query: its MRR@5) and recall@1."""
    top = np.argsort(-(q @ g.T), axis=1, kind="stable")[:, :HARD_K]
    labels = g_labels[top]
    ap = average_precision_at_k(q_labels, labels, np.bincount(g_labels)[q_labels])
    return {
        "mrr_at_5": round(float(np.nanmean(ap)), 4),
        "recall_at_1": round(float((labels[:, 0] == q_labels).mean()), 4),
    }


def photos_score(g: np.ndarray, g_labels: np.ndarray, q: None, q_labels: np.ndarray) -> dict:
    """Leave-one-out P@5 and mAP@5, as quality.py scores the stamp photo sets."""
    sims = g @ g.T
    np.fill_diagonal(sims, -np.inf)
    labels = g_labels[np.argsort(-sims, axis=1, kind="stable")[:, :HARD_K]]
    ap = average_precision_at_k(g_labels, labels, np.bincount(g_labels)[g_labels] - 1)
    return {
        "precision_at_5": round(float((labels == g_labels[:, None]).mean()), 4),
        "map_at_5": round(float(np.nanmean(ap)), 4),
    }


def load_sets(which: str, work: Path, fmnist_limit: int | None) -> dict[str, dict[str, Any]]:
    """name -> gallery/queries (LabelledImages; queries None: leave-one-out) and scorer."""
    test = which == "test"
    sets: dict[str, dict[str, Any]] = {}
    photos_dir, _ = prepare("photos" if test else "photos-val", work)
    sets["photos" + ("" if test else "-val")] = {
        "gallery": read_dataset(photos_dir),
        "queries": None,
        "score": photos_score,
    }
    fm_dir, _ = prepare("fashion-mnist" if test else "fashion-mnist-val", work)
    fm = read_dataset(fm_dir)
    if fmnist_limit is not None:
        keep = np.zeros(len(fm), dtype=bool)
        for label in range(len(fm.class_names)):
            keep[np.flatnonzero(fm.labels == label)[: fmnist_limit // len(fm.class_names)]] = True
        fm = fm.subset(keep)
    sets["fashion-mnist" + ("" if test else "-val")] = {"gallery": fm, "queries": None}
    root = Path(tempfile.mkdtemp(prefix="lookalike-featvar-"))
    hard_g, hard_q = hard_copies.build(which, root)
    gallery = read_dataset(hard_g)
    sets["hard-copies" + ("-test" if test else "-val")] = {
        "gallery": gallery,
        "queries": read_dataset(hard_q, gallery.class_names),
        "score": hard_score,
    }
    nd_g, nd_q = prepare("near-duplicates", work)
    gallery = read_dataset(nd_g)
    queries = read_dataset(nd_q, gallery.class_names)
    sets["near-duplicates" + ("-test" if test else "-val")] = {
        "gallery": gallery,
        "queries": queries.subset(_half(queries, odd=test)),
    }
    return sets


def score(data: dict[str, Any], g: np.ndarray, q: np.ndarray | None) -> dict[str, Any]:
    gallery: LabelledImages = data["gallery"]
    queries: LabelledImages | None = data["queries"]
    if "score" in data:
        labels = gallery.labels if queries is None else queries.labels
        return data["score"](g, gallery.labels, q, labels)
    labels = gallery.labels if queries is None else queries.labels
    out = run(g, gallery.labels, q, labels, None)
    out.pop("seconds_per_query")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--set", choices=("validation", "test"), default="validation")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--fmnist-limit", type=int, default=None, help="first N/10 per class")
    parser.add_argument("--no-reports", action="store_true", help="skip the reports' row")
    parser.add_argument("--sets", default=None, help="only these (comma-separated names)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: its own)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    chosen = args.variants.split(",")
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    sizes = tuple(sorted({s for v in chosen for s in VARIANTS[v][0]}))
    aspects = tuple(m for m in ASPECT_MODES if f"aspect-{m}" in chosen)
    work = args.work or cache_dir() / "benchmark-data"
    sets = load_sets(args.set, work, args.fmnist_limit)
    if args.sets:
        sets = {name: data for name, data in sets.items() if name in args.sets.split(",")}
    extractor = Extractor()
    if aspects:
        print(json.dumps(padding_check(extractor)), flush=True)
    checked = False
    for name, data in sets.items():
        parts = {"gallery": data["gallery"]}
        if data["queries"] is not None:
            parts["queries"] = data["queries"]
        extractor.seconds.clear()
        extractor.images.clear()
        features = {
            part: extractor.features(images.paths, sizes, aspects) for part, images in parts.items()
        }
        for size in sizes + ((0,) if aspects else ()):
            rate = extractor.images[size] / max(extractor.seconds[size], 1e-9)
            row = {"set": name, "size": size or "aspect kept"}
            print(json.dumps(row | {"forward_images_per_s": round(rate, 1)}))
        if not checked:  # the default vector is the package's own, on this set's images
            paths = (parts.get("queries") or parts["gallery"]).paths[:64]
            embedder = create_embedder(MODEL, ModelOptions())
            recipe = Preprocess.tf_efficientnet(BASE)
            package = embedder.embed_prepared([recipe.pixels(load_image(p)) for p in paths])
            mine = l2_normalize(extractor.features(paths, (BASE,))[f"final-gem3@{BASE}"])
            cosine = np.sum(package * mine, axis=1)
            check = {"check": "gem3 vs the package's embedder", "set": name, "images": len(paths)}
            check |= {
                "min_cosine": round(float(cosine.min()), 6),
                "ok": bool(cosine.min() >= 0.999),
            }
            print(json.dumps(check), flush=True)
            checked = True
        for variant in chosen:
            combine = VARIANTS[variant][1]
            g = combine(features["gallery"])
            q = combine(features["queries"]) if "queries" in features else None
            row = {"set": name, "variant": variant, "dim": int(g.shape[1])}
            print(json.dumps({**row, **score(data, g, q)}), flush=True)
        if not args.no_reports:
            started = time.perf_counter()
            g = l2_normalize(reports_pipeline.embed([str(p) for p in parts["gallery"].paths]))
            q = None
            if "queries" in parts:
                q = l2_normalize(reports_pipeline.embed([str(p) for p in parts["queries"].paths]))
            row = {"set": name, "variant": reports_pipeline.NAME, "dim": int(g.shape[1])}
            row |= score(data, g, q) | {"seconds": round(time.perf_counter() - started, 1)}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
