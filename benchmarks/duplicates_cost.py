"""What the verification stage of `duplicates` costs on a photo library.

Builds (once, kept in OUT_DIR) 2,000 photo-sized JPEGs (embed_throughput.build_photos:
crops, flips, colour shifts of the offline photos at 640x480 to 2048x1536) plus 100
planted copies of the first 100 of them, cycling through the edits of duplicate_edits.py
(JPEG q75/q40, aspect, crop 10%, flip, grey, rotation 10/30 degrees), indexes them with the
default model, then times `Collection.duplicates(0.95)` without and with verification,
alternating (off, on, off, on) so both see the same machine load.

With ``--specs`` (model_spec.py's ``name@tags``, an empty name the default model; e.g.
``"@gem/r4,@avg/r3"``) the same files are indexed once per spec (OUT_DIR/db-...) and the timed
runs go through the specs in turn; ``--verify-only`` skips the runs without verification.
Each line then also has the spec and the candidate pairs verified (``checks``).

Usage: python benchmarks/duplicates_cost.py OUT_DIR [--photos 2000] [--planted 100]
Prints one JSON object per line: the index line, one per timed run (seconds, groups,
verified members, planted copies found in their photo's group, ``other_cores``: CPU other
processes used meanwhile, in cores), and a summary with the ratio on/off.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from duplicate_edits import EDITS  # type: ignore[import-not-found]
from duplicates_pooling import counting_checks  # type: ignore[import-not-found]
from embed_throughput import build_photos, timed  # type: ignore[import-not-found]
from model_spec import model_spec  # type: ignore[import-not-found]


def plant(photos: list[Path], folder: Path, count: int) -> dict[str, str]:
    """copy path -> its source photo's path."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    edits = list(EDITS.items())
    out = {}
    for i, source in enumerate(photos[:count]):
        name, apply = edits[i % len(edits)]
        path = folder / f"{source.stem}--{name}.jpg"
        if not path.exists():
            with Image.open(source) as im:
                apply(im.convert("RGB")).save(path, "JPEG", quality=90)
        out[str(path)] = str(source)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--planted", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--specs", default="", help='e.g. "@gem/r4,@avg/r3"')
    parser.add_argument("--verify-only", action="store_true")
    args = parser.parse_args(argv)

    from lookalike.collection import Collection

    photos = build_photos(args.out_dir / "photos", args.photos)
    planted = plant(photos, args.out_dir / "planted", args.planted)
    specs = [s.strip() for s in args.specs.split(",")] if args.specs else [None]
    cols = {}
    for spec in specs:
        db = args.out_dir / (
            "db" if spec is None else "db" + spec.replace("@", "-").replace("/", "-")
        )
        name, options = model_spec(spec) if spec is not None else ("", None)
        col = Collection.open(db, model=name or None, model_options=options, create=True)
        wall, _cpu, others = timed(
            lambda c=col: c.index([args.out_dir / "photos", args.out_dir / "planted"])
        )
        print(
            json.dumps(
                {
                    "spec": spec,
                    "indexed": col.count(),
                    "seconds": round(wall, 1),
                    "other_cores": round(others / wall, 2),
                }
            ),
            flush=True,
        )
        cols[spec] = col
    modes = (True,) if args.verify_only else (False, True)
    seconds: dict[tuple[str | None, bool], list[float]] = {}
    for _ in range(args.rounds):
        for spec, col in cols.items():
            for verify in modes:
                found: list[Any] = []
                checked: list[tuple[int, int]] = []
                undo = counting_checks(checked, True)
                try:
                    wall, _cpu, others = timed(
                        lambda c=col, v=verify, out=found: out.append(
                            c.duplicates(threshold=0.95, verify=v)
                        )
                    )
                finally:
                    undo()
                groups = found[0]
                group_of = {p: n for n, g in enumerate(groups) for p in g.paths}
                joined = sum(
                    c in group_of and group_of[c] == group_of.get(s) for c, s in planted.items()
                )
                seconds.setdefault((spec, verify), []).append(wall)
                print(
                    json.dumps(
                        {
                            "spec": spec,
                            "verify": verify,
                            "seconds": round(wall, 2),
                            "checks": len(checked),
                            "groups": len(groups),
                            "images_in_groups": sum(len(g.paths) for g in groups),
                            "verified_members": sum(m.verified for g in groups for m in g.members),
                            "planted_joined": joined,
                            "planted": len(planted),
                            "other_cores": round(others / wall, 2),
                        }
                    ),
                    flush=True,
                )
    for col in cols.values():
        col.close()
    for spec in specs:
        on = min(seconds[(spec, True)])
        summary: dict[str, Any] = {"spec": spec, "best_seconds_with": round(on, 2)}
        if not args.verify_only:
            off = min(seconds[(spec, False)])
            summary.update(best_seconds_without=round(off, 2), ratio=round(on / max(off, 1e-9), 1))
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
