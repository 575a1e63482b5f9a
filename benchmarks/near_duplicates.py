"""Build a copy-detection set from real photos available offline.

For each original photo (skimage.data, scikit-learn's sample images, foolbox's ImageNet
photos) the script writes altered copies (crop, rescale, JPEG at quality 20/50/90,
rotation, flip, colour shift, text overlay, logo overlay, border, and one combination)
as queries, and the originals plus unrelated distractor photos as the gallery::

    OUT_DIR/gallery/<original>/<original>.png        one class per original
    OUT_DIR/gallery/distractor-<name>/<name>.png     one class per distractor
    OUT_DIR/queries/<original>/<alteration>.(png|jpg)
    OUT_DIR/manifest.json                            what was written, and the seed

Each query's class holds exactly one gallery image (its original), so with
``lookalike eval OUT_DIR/gallery --queries OUT_DIR/queries -k 10``
precision@1 = recall@1 of finding the original, and mAP@10 is the mean reciprocal rank
of the original within the top 10.

Usage: python benchmarks/near_duplicates.py OUT_DIR [--seed 0]
Prints one JSON object: counts and the output folder.

``--duplicates [--model M]`` instead measures `lookalike duplicates` per edit type (JPEG
q75/q40, aspect, crop, flip, grey, rotations) against a pHash baseline: see
duplicate_edits.py. Rerun it after a change to preprocessing to recalibrate the threshold.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

Alteration = Callable[[Image.Image, np.random.Generator], tuple[Image.Image, dict[str, object]]]

# Photos used as originals (scenes and objects, colour and grey) and as distractors.
SKIMAGE_ORIGINALS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "coins",
    "moon",
    "clock",
    "brick",
    "grass",
    "gravel",
)
SKIMAGE_DISTRACTORS = (
    "page",
    "text",
    "cell",
    "microaneurysms",
    "binary_blobs",
    "checkerboard",
    "shepp_logan_phantom",
    "colorwheel",
    "horse",
)


def _to_pil(array: np.ndarray) -> Image.Image:
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)
    image = Image.fromarray(arr)
    return image.convert("RGB")


def _foolbox_dir() -> Path | None:
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


def originals() -> Iterator[tuple[str, Image.Image]]:
    """(name, photo) of every original available offline."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    for name in SKIMAGE_ORIGINALS:
        yield name, _to_pil(getattr(skimage.data, name)())
    left, _right, _disparity = skimage.data.stereo_motorcycle()
    yield "stereo_motorcycle_left", _to_pil(left)
    sample = load_sample_images()
    for filename, image in zip(sample.filenames, sample.images, strict=True):
        yield Path(filename).stem, _to_pil(image)
    folder = _foolbox_dir()
    if folder is not None:
        for path in sorted(folder.glob("imagenet_*.jpg")):
            with Image.open(path) as im:
                yield path.stem, im.convert("RGB")


def distractors() -> Iterator[tuple[str, Image.Image]]:
    """(name, photo) of unrelated images: none is a copy of an original."""
    import skimage.data

    for name in SKIMAGE_DISTRACTORS:
        # binary_blobs draws new blobs on every call unless seeded: the same set each build.
        args = {"rng": 0} if name == "binary_blobs" else {}
        yield name, _to_pil(getattr(skimage.data, name)(**args))
    # The other eye of the stereo pair: a near miss, same scene from another viewpoint.
    _left, right, _disparity = skimage.data.stereo_motorcycle()
    yield "stereo_motorcycle_right", _to_pil(right)
    folder = _foolbox_dir()
    if folder is not None:
        for path in sorted(folder.glob("cifar*.png")):
            with Image.open(path) as im:
                yield path.stem, im.convert("RGB")


# ----- alterations: each returns the altered image and the parameters it drew ----------------
def crop(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, object]]:
    keep = float(rng.uniform(0.55, 0.85))  # of each side
    w, h = image.size
    cw, ch = int(w * keep), int(h * keep)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x, y, x + cw, y + ch)), {"keep_side": round(keep, 3), "box": [x, y, cw, ch]}


def rescale(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, object]]:
    factor = float(rng.uniform(0.25, 0.5))
    size = (max(8, int(image.width * factor)), max(8, int(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS), {"factor": round(factor, 3)}


def rotate(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, object]]:
    angle = float(rng.uniform(10, 30)) * float(rng.choice([-1, 1]))
    rotated = image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False)
    return rotated, {"degrees": round(angle, 2)}


def flip(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, object]]:
    return ImageOps.mirror(image), {}


def colour(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, object]]:
    hue = float(rng.uniform(0.05, 0.2))
    saturation = float(rng.uniform(0.5, 1.5))
    brightness = float(rng.uniform(0.7, 1.3))
    hsv = np.asarray(image.convert("HSV"), dtype=np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue * 255) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * brightness, 0, 255)
    shifted = Image.fromarray(hsv.astype(np.uint8), mode="HSV").convert("RGB")
    params = {"hue": round(hue, 3), "saturation": round(saturation, 3)}
    return shifted, {**params, "brightness": round(brightness, 3)}


WORDS = ("SALE", "lookalike", "copyright 2024", "@someone", "DO NOT COPY", "hello world")


def text(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, object]]:
    out = image.copy()
    draw = ImageDraw.Draw(out)
    words = str(rng.choice(WORDS))
    size = max(12, int(min(image.size) * float(rng.uniform(0.08, 0.15))))
    font = ImageFont.load_default(size=size)
    fill = tuple(int(c) for c in rng.integers(0, 256, 3))
    x = int(rng.integers(0, max(1, image.width // 3)))
    y = int(rng.integers(0, max(1, image.height - size)))
    draw.text((x, y), words, fill=fill, font=font, stroke_width=max(1, size // 15), stroke_fill=0)
    return out, {"text": words, "size": size, "at": [x, y]}


def logo(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, object]]:
    import skimage.data

    mark = Image.fromarray(skimage.data.logo()).convert("RGBA")
    share = float(rng.uniform(0.25, 0.4))
    side = max(8, int(min(image.size) * share))
    mark = mark.resize((side, side), Image.Resampling.LANCZOS)
    corner = int(rng.integers(0, 4))
    x = 0 if corner in (0, 2) else image.width - side
    y = 0 if corner in (0, 1) else image.height - side
    out = image.convert("RGBA")
    out.alpha_composite(mark, (x, y))
    return out.convert("RGB"), {"side_share": round(share, 3), "corner": corner}


def border(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, object]]:
    share = float(rng.uniform(0.08, 0.2))
    pad = max(2, int(min(image.size) * share))
    fill = tuple(int(c) for c in rng.integers(0, 256, 3))
    return ImageOps.expand(image, border=pad, fill=fill), {"pixels": pad, "fill": list(fill)}


def combo(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, object]]:
    """What a re-posted photo often goes through: cropped, colour-edited, recompressed."""
    cropped, p1 = crop(image, rng)
    shifted, p2 = colour(cropped, rng)
    return shifted, {"crop": p1, "colour": p2, "jpeg_quality": 50}


# name -> (alteration, JPEG quality to save with, or None for PNG)
ALTERATIONS: dict[str, tuple[Alteration, int | None]] = {
    "crop": (crop, None),
    "rescale": (rescale, None),
    "jpeg20": (lambda im, rng: (im, {}), 20),
    "jpeg50": (lambda im, rng: (im, {}), 50),
    "jpeg90": (lambda im, rng: (im, {}), 90),
    "rotate": (rotate, None),
    "flip": (flip, None),
    "colour": (colour, None),
    "text": (text, None),
    "logo": (logo, None),
    "border": (border, None),
    "combo": (combo, 50),
}


def _save(image: Image.Image, path: Path, quality: int | None) -> Path:
    if quality is None:
        path = path.with_suffix(".png")
        image.save(path, format="PNG")
    else:
        path = path.with_suffix(".jpg")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        path.write_bytes(buffer.getvalue())
    return path


def build(out_dir: Path, seed: int = 0) -> dict[str, object]:
    """Write the set under ``out_dir`` (its gallery/ and queries/ are replaced)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("gallery", "queries"):
        if (out_dir / sub).exists():
            if not (out_dir / "manifest.json").exists():
                raise SystemExit(f"{out_dir / sub} exists and was not written by this script")
            shutil.rmtree(out_dir / sub)
    manifest: dict[str, object] = {"seed": seed, "originals": {}, "distractors": []}
    originals_done: dict[str, object] = {}
    n_queries = 0
    for index, (name, photo) in enumerate(originals()):
        folder = out_dir / "gallery" / name
        folder.mkdir(parents=True)
        _save(photo, folder / name, None)
        query_folder = out_dir / "queries" / name
        query_folder.mkdir(parents=True)
        record = {}
        for alt_index, (alt_name, (alter, quality)) in enumerate(ALTERATIONS.items()):
            rng = np.random.default_rng([seed, index, alt_index])
            altered, params = alter(photo, rng)
            saved = _save(altered, query_folder / alt_name, quality)
            record[alt_name] = {"file": saved.name, **params}
            n_queries += 1
        originals_done[name] = {"size": list(photo.size), "queries": record}
    distractor_names = []
    for name, photo in distractors():
        folder = out_dir / "gallery" / f"distractor-{name}"
        folder.mkdir(parents=True)
        _save(photo, folder / name, None)
        distractor_names.append(name)
    manifest["originals"] = originals_done
    manifest["distractors"] = distractor_names
    manifest["alterations"] = list(ALTERATIONS)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return {
        "out": str(out_dir),
        "originals": len(originals_done),
        "distractors": len(distractor_names),
        "gallery": len(originals_done) + len(distractor_names),
        "queries": n_queries,
        "alterations": list(ALTERATIONS),
        "seed": seed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duplicates", action="store_true", help="measure duplicates per edit")
    parser.add_argument(
        "--model", default=None, help="with --duplicates: the model to index with (name@tags)"
    )
    args = parser.parse_args(argv)
    if args.duplicates:
        from duplicate_edits import measure  # type: ignore[import-not-found]

        print(json.dumps(measure(args.out_dir, args.model), indent=1))
        return 0
    print(json.dumps(build(args.out_dir, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
