"""A change against its baseline, end to end through the CLI, alternating in one run.

Each run is ``lookalike index FOLDER`` in a new process on a new collection (end_to_end.py:
process start, imports, model load, discovery, hashing, decoding, inference all count),
with ``PYTHONPATH`` pointing at either this checkout's ``src`` (``candidate``) or the
``src`` of ``--baseline`` (a git revision, extracted with ``git archive`` to a temp dir).
The two alternate run by run (the order flips every round), so both see the same machine
load; every line carries ``other_cores`` (others' CPU time meanwhile, in cores).

Usage::

    python benchmarks/source_ab.py --baseline main --folders DIR[,DIR...] [--rounds 5]
        [--model NAME]   # default: the default path (no --model)

Prints one JSON object per run, then per folder the totals of each side and
``{"summary", "wall_ratio": baseline wall / candidate wall, "cpu_ratio": same in CPU}``
(above 1: the candidate is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def extract(revision: str, target: Path) -> Path:
    """``src`` of ``revision`` under ``target``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "src"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare against")
    parser.add_argument("--folders", required=True, help="photo folders, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default=None, help="default: the default path")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import end_to_end as e2e
    from embed_throughput import machine_busy_seconds

    folders = [Path(f) for f in args.folders.split(",") if f]
    with tempfile.TemporaryDirectory(prefix="lookalike-ab-") as tmp:
        sources = {"baseline": extract(args.baseline, Path(tmp)), "candidate": ROOT / "src"}
        envs = {side: {**os.environ, "PYTHONPATH": str(src)} for side, src in sources.items()}
        for side, env in envs.items():  # warm the model cache and the page cache
            run = e2e.run_cli(folders[0], args.model, env)
            print(json.dumps({"warm_up": side, "model": run["report"]["model"]}), flush=True)
        totals = {(f, s): [0.0, 0.0, 0.0] for f in folders for s in sources}
        for r in range(args.rounds):
            order = list(sources) if r % 2 == 0 else list(sources)[::-1]
            for folder in folders:
                for side in order:
                    busy = machine_busy_seconds()
                    run = e2e.run_cli(folder, args.model, envs[side])
                    others = max(0.0, machine_busy_seconds() - busy - run["cpu"])
                    this = [run["wall"], run["cpu"], others]
                    total = totals[(folder, side)]
                    totals[(folder, side)] = [a + b for a, b in zip(total, this, strict=True)]
                    record = {
                        "side": side,
                        "folder": folder.name,
                        "images": run["report"]["added"],
                        "model": run["report"]["model"],
                        "round": r,
                        "wall_s": round(run["wall"], 3),
                        "cpu_s": round(run["cpu"], 3),
                        "other_cores": round(others / run["wall"], 2),
                    }
                    print(json.dumps(record), flush=True)
        for folder in folders:
            base, cand = totals[(folder, "baseline")], totals[(folder, "candidate")]
            for side, (wall, cpu, others) in (("baseline", base), ("candidate", cand)):
                print(
                    json.dumps(
                        {
                            "side": side,
                            "folder": folder.name,
                            "round": "all",
                            "wall_s": round(wall, 3),
                            "cpu_s": round(cpu, 3),
                            "other_cores": round(others / wall, 2),
                        }
                    ),
                    flush=True,
                )
            summary = {
                "summary": folder.name,
                "wall_ratio": round(base[0] / cand[0], 3),
                "cpu_ratio": round(base[1] / cand[1], 3),
            }
            print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
