"""Heavy partial copies: the edits of tests/test_quality_baseline.py, on a validation set.

The test's set (10 scikit-image/scikit-learn photos, 6 edits each: a 35% corner crop, a 20%
edge strip, a 60-degree rotation, a grey crop, a wide black border, a squash to a quarter of
the height) is a reported set. This builds the same edits on photos the test does not use
(foolbox's 20 ImageNet photos; near_duplicates.py's non-CIFAR distractors as extra gallery
images), so that settings can be chosen without looking at the test: 120 queries, each
with one original. Scored as the test scores them (k = 5: mAP@5 = the mean reciprocal rank
of the original, P@5), with the reports' pipeline in the same run.

A third set, ``wallpapers``, is there for statistical power: the same edits on the 79
desktop pictures of five Debian packages (wallpapers.py: which, and how variants are kept
once), never used to choose anything, with the other two sets' photos as extra gallery
images.

Usage: python benchmarks/hard_copies.py [--set validation|test|wallpapers[-val|-test]]
       [--models a,b@avg/r3]
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
from lookalike.evaluation.paired import compare, sign_test_p
from lookalike.evaluation.runner import EvalResult, evaluate
from lookalike.reranking import parse_rerank
from model_spec import model_spec
from near_duplicates import distractors
from wallpapers import wallpaper_photos

K = 5
SIDE = 400  # as the tests' photos: the long side
SETS = ("validation", "test", "wallpapers", "wallpapers-val", "wallpapers-test")
# the names the other benchmarks give these sets beside their own
SET_NAMES = {"hard-copies-val": "validation", "hard-copies-test": "test"} | {
    name: name for name in SETS if name.startswith("wallpapers")
}


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


def _wallpaper_half(photos: dict[str, Image.Image], which: str) -> dict[str, Image.Image]:
    """All of them, or the pictures at even (``-val``) or odd (``-test``) positions."""
    if which == "wallpapers":
        return photos
    start = 0 if which == "wallpapers-val" else 1
    return dict(list(photos.items())[start::2])


def build(which: str, root: Path, wallpaper_root: Path = Path("/usr/share")) -> tuple[Path, Path]:
    gallery, queries = root / "gallery", root / "queries"
    if which.startswith("wallpapers"):
        photos = _wallpaper_half(wallpaper_photos(wallpaper_root, SIDE), which)
        for name, image in {**_foolbox_photos(), **_test_photos()}.items():
            image = image.convert("RGB")
            image.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
            (gallery / f"distractor-{name}").mkdir(parents=True)
            image.save(gallery / f"distractor-{name}" / f"{name}.jpg", quality=92)
    else:
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
    parser.add_argument("--set", choices=SETS, default="validation")
    parser.add_argument("--wallpaper-root", type=Path, default=Path("/usr/share"))
    parser.add_argument(
        "--models", default="efficientnet-lite0@avg/r3,efficientnet-lite0,efficientnet-lite0-int8"
    )
    parser.add_argument("--no-reports", action="store_true")
    parser.add_argument(
        "--rerank", default="none", help="re-ranking for every model row, as search --rerank"
    )
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="lookalike-hard-copies-"))
    gallery, queries = build(args.set, root, args.wallpaper_root)
    print(f"{root}: {sum(1 for _ in queries.rglob('*.jpg'))} queries", file=sys.stderr)
    reports_first: dict[str, bool] | None = None
    reports_rr: dict[str, float] = {}
    if not args.no_reports:
        out = reports_pipeline.evaluate(gallery, queries, K)
        reports_first = dict(zip(out["query_paths"], out["top1_correct"], strict=True))
        reports_rr = dict(zip(out["query_paths"], out["average_precision_per_query"], strict=True))
        row = {k: out[k] for k in ("queries", "gallery", "precision_at_k", "map_at_k")}
        row["at_rank_1"] = round(float(np.mean(out["top1_correct"])), 4)
        row["at_rank_1_by_edit"] = by_edit(reports_first)
        print(json.dumps({"set": args.set, "model": reports_pipeline.NAME, **row}), flush=True)
    for spec in args.models.split(","):
        name, options = model_spec(spec)
        result = evaluate(
            gallery,
            name,
            k=K,
            queries_dir=queries,
            model_options=options,
            cache_root=root / "c",
            rerank=parse_rerank(args.rerank),
        )
        summary = result.to_json()
        row = {k: summary[k] for k in ("queries", "gallery", "precision_at_k", "map_at_k")}
        first = first_hit_is_the_original(result)
        row["at_rank_1"] = round(float(np.mean(list(first.values()))), 4)
        row["at_rank_1_by_edit"] = by_edit(first)
        if reports_first is not None:
            row["against_reports_at_rank_1"] = paired(first, reports_first)
            # each query's reciprocal rank of its original (AP@5 with one relevant image)
            ours_rr = np.nan_to_num(result.scores.average_precision)
            theirs_rr = [reports_rr[q] for q in result.query_paths]
            row["against_reports_reciprocal_rank"] = compare(ours_rr, theirs_rr).to_json()
        row["rerank"] = result.rerank
        print(json.dumps({"set": args.set, "model": spec, **row}), flush=True)
    return 0


def first_hit_is_the_original(result: EvalResult) -> dict[str, bool]:
    """Per query path: is the first hit the query's original (its folder's one image)?"""
    first = result.neighbours[:, 0]
    names = [Path(result.gallery_paths[i]).parent.name if i >= 0 else "" for i in first]
    return {
        path: Path(path).parent.name == name
        for path, name in zip(result.query_paths, names, strict=True)
    }


def by_edit(first: dict[str, bool]) -> dict[str, float]:
    edits = sorted({Path(p).stem for p in first})
    return {
        e: round(float(np.mean([ok for p, ok in first.items() if Path(p).stem == e])), 3)
        for e in edits
    }


def paired(ours: dict[str, bool], theirs: dict[str, bool]) -> dict[str, float]:
    """Queries only one of the two gets right at rank 1, and the two-sided sign test's p
    for that split (small p: the difference is unlikely to be chance)."""
    c = compare([ours[p] for p in ours], [theirs[p] for p in ours])
    chance = sign_test_p(c.better, c.worse)  # unrounded, then to 2 figures as before
    return {"wins": c.better, "losses": c.worse, "sign_test_p": float(f"{chance:.2g}")}


if __name__ == "__main__":
    sys.exit(main())
