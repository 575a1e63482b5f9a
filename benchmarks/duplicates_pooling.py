"""What the pooling of a collection costs `duplicates` with verification, on a library where
most photos have no copy.

The library (built once, kept in OUT_DIR/library): every offline photo of the near-duplicate
benchmark (skimage, scikit-learn, foolbox; synthetic images left out) cut into tiles from
non-overlapping regions (a 2x2 to 4x4 grid by size; small photos kept whole), each tile
resized to 640 px on its longer side and saved as JPEG, so no two files show the same
pixels. Then ``--planted`` copies of every n-th file, cycling through duplicate_edits.py's
edits (JPEG q75/q40, aspect, crop 10%, flip, grey, rotation 10/30 degrees).

The same files are indexed once per model spec (``--specs``, model_spec.py's ``name@tags``;
an empty name is the default model), then `Collection.duplicates(0.95)` (verification on,
default floor) is timed for each spec in turn, ``--rounds`` times, alternating, so all see
the same machine load. Verifier.check is counted to give the candidate pairs verified
(calls, and distinct pairs); ``--both-ways`` also times each spec as `duplicates` ran
before duplicates.once_per_pair (a failed pair checked again from its other end).

Usage: python benchmarks/duplicates_pooling.py OUT_DIR [--specs "@gem/r4,@avg/r4,@avg/r3"]
Prints one JSON object per line: the library, one per index, one per timed run (seconds,
checks, distinct pairs checked, groups, planted copies in their original's group, false
groups: groups holding two files that are not one original and its copy), and a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from duplicate_edits import EDITS  # type: ignore[import-not-found]
from embed_throughput import timed  # type: ignore[import-not-found]
from model_spec import model_spec  # type: ignore[import-not-found]

# Drawn, not photographed: their tiles repeat exactly (checkerboard) or are flat.
SYNTHETIC = {"checkerboard", "binary_blobs", "shepp_logan_phantom", "colorwheel"}
TILE_MIN = 150  # smallest tile side in source pixels
LONG_SIDE = 640


def tiles(photo: Image.Image) -> list[Image.Image]:
    """Non-overlapping tiles (grid 1x1 .. 4x4), each resized to LONG_SIDE on its longer side."""
    w, h = photo.size
    n = max(1, min(4, min(w, h) // TILE_MIN))
    out = []
    for row in range(n):
        for col in range(n):
            box = (col * w // n, row * h // n, (col + 1) * w // n, (row + 1) * h // n)
            tile = photo.crop(box)
            scale = LONG_SIDE / max(tile.size)
            size = (round(tile.size[0] * scale), round(tile.size[1] * scale))
            out.append(tile.resize(size, Image.Resampling.BICUBIC))
    return out


def build(folder: Path, planted_every: int) -> dict[str, str]:
    """Write the library; path -> its item (a copy shares its original's item)."""
    from near_duplicates import distractors, originals  # type: ignore[import-not-found]

    folder.mkdir(parents=True, exist_ok=True)
    items: dict[str, str] = {}
    files: list[Path] = []
    for name, photo in [*originals(), *distractors()]:
        if name in SYNTHETIC:
            continue
        for i, tile in enumerate(tiles(photo.convert("RGB"))):
            path = folder / f"{name}-t{i:02d}.jpg"
            if not path.exists():
                tile.save(path, "JPEG", quality=90)
            items[str(path)] = path.stem
            files.append(path)
    edits = list(EDITS.items())
    for n, source in enumerate(files[::planted_every]):
        edit, apply = edits[n % len(edits)]
        path = folder / f"{source.stem}--{edit}.jpg"
        if not path.exists():
            with Image.open(source) as im:
                apply(im.convert("RGB")).save(path, "JPEG", quality=90)
        items[str(path)] = source.stem
    return items


def label(spec: str, once: bool) -> str:
    return spec if once else f"{spec} (each way)"


def counting_checks(record: list[tuple[int, int]], once: bool) -> Callable[[], None]:
    """Patch Verifier.check to record every pair it is asked about, and with ``once`` False
    undo collection's once_per_pair (the behaviour before it); returns the undo."""
    from lookalike import collection, verify

    original = verify.Verifier.check
    memo = collection.once_per_pair
    if not once:
        collection.once_per_pair = lambda check: check  # type: ignore[assignment]

    def check(self: Any, a: int, b: int) -> Any:
        record.append((min(a, b), max(a, b)))
        return original(self, a, b)

    verify.Verifier.check = check  # type: ignore[method-assign]

    def undo() -> None:
        verify.Verifier.check = original  # type: ignore[method-assign]
        collection.once_per_pair = memo  # type: ignore[assignment]

    return undo


def score(groups: list[Any], items: dict[str, str]) -> dict[str, int]:
    copies = {p: item for p, item in items.items() if "--" in Path(p).stem}
    group_of = {p: n for n, g in enumerate(groups) for p in g.paths}
    found = sum(
        c in group_of and group_of[c] == group_of.get(str(Path(c).parent / f"{item}.jpg"))
        for c, item in copies.items()
    )
    false = [
        sorted(Path(p).stem for p in g.paths)
        for g in groups
        if len({items[p] for p in g.paths}) > 1
    ]
    # A tile grouped with another tile of its own photo is a weaker mistake than two photos.
    across = sum(len({s.split("-t")[0] for s in g}) > 1 for g in false)
    missed = sorted(
        Path(c).stem
        for c in copies
        if c not in group_of
        or group_of[c] != group_of.get(str(Path(c).parent / f"{copies[c]}.jpg"))
    )
    return {
        "planted_found": found,
        "planted": len(copies),
        "false_groups": len(false),
        "false_groups_across_photos": across,
        "false_group_files": false,
        "planted_missed": missed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--specs", default="@gem/r4,@avg/r4,@avg/r3")
    parser.add_argument("--planted-every", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--both-ways",
        action="store_true",
        help="also time each spec with a failed pair checked again from its other end "
        "(the behaviour before once_per_pair)",
    )
    args = parser.parse_args(argv)

    from lookalike.collection import Collection

    items = build(args.out_dir / "library", args.planted_every)
    print(json.dumps({"files": len(items), "planted": sum("--" in p for p in items)}), flush=True)
    specs = [s.strip() for s in args.specs.split(",") if s.strip()]
    cols = {}
    for spec in specs:
        name, options = model_spec(spec)
        db = args.out_dir / ("db" + spec.replace("@", "-").replace("/", "-"))
        col = Collection.open(db, model=name or None, model_options=options, create=True)
        wall, _cpu, others = timed(lambda c=col: c.index([args.out_dir / "library"]))
        print(
            json.dumps(
                {
                    "spec": spec,
                    "model": col.model_name,
                    "pool": col.model_options.pool,
                    "recipe": col.model_options.recipe,
                    "indexed": col.count(),
                    "index_seconds": round(wall, 1),
                    "other_cores": round(others / wall, 2),
                }
            ),
            flush=True,
        )
        cols[spec] = col
    runs = [(s, once) for s in specs for once in ((False, True) if args.both_ways else (True,))]
    seconds: dict[str, list[float]] = {label(*r): [] for r in runs}
    for _ in range(args.rounds):
        for spec, once in runs:
            found: list[Any] = []
            checked: list[tuple[int, int]] = []
            undo = counting_checks(checked, once)
            try:
                wall, _cpu, others = timed(
                    lambda c=cols[spec], out=found: out.append(c.duplicates(threshold=0.95))
                )
            finally:
                undo()
            groups = found[0]
            seconds[label(spec, once)].append(wall)
            print(
                json.dumps(
                    {
                        "spec": spec,
                        "once_per_pair": once,
                        "seconds": round(wall, 2),
                        "checks": len(checked),
                        "pairs_checked": len(set(checked)),
                        "groups": len(groups),
                        "images_in_groups": sum(len(g.paths) for g in groups),
                        "verified_members": sum(m.verified for g in groups for m in g.members),
                        **score(groups, items),
                        "other_cores": round(others / wall, 2),
                    }
                ),
                flush=True,
            )
    base = min(seconds[label(*runs[-1])])
    print(
        json.dumps(
            {
                "best_seconds": {s: round(min(v), 2) for s, v in seconds.items()},
                "ratio_to_last": {s: round(min(v) / base, 2) for s, v in seconds.items()},
            }
        )
    )
    for col in cols.values():
        col.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
