"""The demo: sample photos (offline) + altered copies -> index -> search -> contact sheet.

Run through scripts/demo.sh. Everything goes under demo-output/ (override with --out).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps


def sample_photos() -> dict[str, Image.Image]:
    """Real photos that ship inside scikit-image and scikit-learn (no download)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field"):
        try:
            photos[name] = Image.fromarray(getattr(data, name)())
        except Exception as exc:  # a data file missing from this scikit-image build
            print(f"(skipping skimage.data.{name}: {exc})", file=sys.stderr)
    for name, array in zip(("china", "flower"), load_sample_images().images, strict=True):
        photos[name] = Image.fromarray(array)
    return photos


def altered(image: Image.Image) -> dict[str, Image.Image]:
    w, h = image.size
    return {
        "crop": image.crop((w // 10, h // 10, w - w // 10, h - h // 10)),
        "half": image.resize((w // 2, h // 2)),
        "flip": ImageOps.mirror(image),
        "bright": ImageEnhance.Brightness(image).enhance(1.3),
    }


def build_folder(out: Path) -> tuple[Path, Path]:
    """Originals go to photos/, altered copies to queries/ (not indexed)."""
    photos_dir, queries_dir = out / "photos", out / "queries"
    photos_dir.mkdir(parents=True, exist_ok=True)
    queries_dir.mkdir(parents=True, exist_ok=True)
    for name, image in sample_photos().items():
        image.convert("RGB").save(photos_dir / f"{name}.jpg", quality=92)
        for kind, copy in altered(image.convert("RGB")).items():
            copy.save(queries_dir / f"{name}-{kind}.jpg", quality=85)
    return photos_dir, queries_dir


def run(*args: str) -> None:
    command = [sys.executable, "-m", "lookalike", *args]
    print(f"\n$ lookalike {shlex.join(args)}", flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    # None: the model a new collection gets on this machine (int8 where the CPU has VNNI/AMX).
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    out: Path = args.out.absolute()
    photos_dir, queries_dir = build_folder(out)
    db = str(out / "db")
    model = ["--model", args.model] if args.model else []
    run("index", str(photos_dir), "--db", db, *model)
    run("index", str(photos_dir), "--db", db)  # again: nothing to embed (incremental)
    queries = sorted(str(p) for p in queries_dir.glob("*-flip.jpg"))[:4]
    sheet = out / "sheet.png"
    run("search", *queries, "--db", db, "-k", "3", "--sheet", str(sheet))
    run("search", str(queries_dir / "chelsea-crop.jpg"), "--db", db, "-k", "3", "--json")
    run("duplicates", "--db", db, "--threshold", "0.9")
    run("info", "--db", db)
    print(f"\ncontact sheet: {sheet}")


if __name__ == "__main__":
    main()
