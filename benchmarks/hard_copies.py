"""Heavy partial copies: the edits of tests/test_quality_baseline.py, on a validation set.

The test's set (10 scikit-image/scikit-learn photos, 6 edits each: a 35% corner crop, a 20%
edge strip, a 60-degree rotation, a grey crop, a wide black border, a squash to a quarter of
the height) is a reported set. This builds the same edits on photos the test does not use
(foolbox's 20 ImageNet photos; near_duplicates.py's non-CIFAR distractors as extra gallery
images), so that settings can be chosen without looking at the test: 120 queries, each
with one original. Scored as the test scores them (k = 5: mAP@5 = the mean reciprocal rank
of the original, P@5), with the reports' pipeline in the same run.

Usage: python benchmarks/hard_copies.py [--set validation|test] [--models a,b@avg/r3]
Prints one JSON object per model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reports_pipeline
from lookalike.evaluation.runner import evaluate
from model_spec import model_spec
from near_duplicates import distractors

K = 5
SIDE = 400  # as the tests' photos: the long side


def hard_copies(image: Image.Image) -> dict[str, Image.Image]:
    """The edits (tests/test_quality_baseline.py uses this function too)."""
    w, h = image.size
    grey = ImageOps.grayscale(image).convert("RGB")
    return {
        "corner-crop": image.crop((0, 0, int(w * 0.35), int(h * 0.35))),
        "edge-strip": image.crop((0, 0, int(w * 0.2), h)),
        "rotate60": image.rotate(60, expand=True, fillcolor=(255, 255, 255)),
        "grey-crop": grey.crop((int(w * 0.6), int(h * 0.5), w, h)),
        "border": ImageOps.expand(image, border=max(w, h) // 2, fill=(0, 0, 0)),
        "thin": image.resize((w, max(1, h // 4))),
    }


def _foolbox_photos() -> dict[str, Image.Image]:
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("foolbox is needed for the validation photos (a dev dependency)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return {p.stem: Image.open(p).convert("RGB") for p in sorted(folder.glob("imagenet_*.jpg"))}


def _test_photos() -> dict[str, Image.Image]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import conftest  # type: ignore[import-not-found]

    arrays = {**conftest._skimage_photos(), **conftest._sklearn_photos()}
    return {n: Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8)) for n, a in arrays.items()}


def build(which: str, root: Path) -> tuple[Path, Path]:
    gallery, queries = root / "gallery", root / "queries"
    photos = _foolbox_photos() if which == "validation" else _test_photos()
    for name, image in photos.items():
        image = image.convert("RGB")
        image.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
        (gallery / name).mkdir(parents=True)
        (queries / name).mkdir(parents=True)
        image.save(gallery / name / f"{name}.jpg", quality=92)
        for edit, copy in hard_copies(image).items():
            copy.save(queries / name / f"{edit}.jpg", quality=60)
    if which == "validation":
        for name, image in distractors():
            if not name.startswith("cifar"):
                (gallery / f"distractor-{name}").mkdir(parents=True)
                image.convert("RGB").save(gallery / f"distractor-{name}" / f"{name}.jpg")
    return gallery, queries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--set", choices=("validation", "test"), default="validation")
    parser.add_argument(
        "--models", default="efficientnet-lite0@avg/r3,efficientnet-lite0,efficientnet-lite0-int8"
    )
    parser.add_argument("--no-reports", action="store_true")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="lookalike-hard-copies-"))
    gallery, queries = build(args.set, root)
    if not args.no_reports:
        out = reports_pipeline.evaluate(gallery, queries, K)
        row = {k: out[k] for k in ("queries", "gallery", "precision_at_k", "map_at_k")}
        print(json.dumps({"set": args.set, "model": reports_pipeline.NAME, **row}), flush=True)
    for spec in args.models.split(","):
        name, options = model_spec(spec)
        result = evaluate(
            gallery, name, k=K, queries_dir=queries, model_options=options, cache_root=root / "c"
        ).to_json()
        row = {k: result[k] for k in ("queries", "gallery", "precision_at_k", "map_at_k")}
        print(json.dumps({"set": args.set, "model": spec, **row}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
