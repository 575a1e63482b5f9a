"""End-to-end indexing as a user runs it: `lookalike index FOLDER` in a new process.

Used by embed_throughput.py (``--cli-images``). Each run starts a fresh Python process on
a new collection folder, so process start, imports, model load (from the warm cache),
discovery, hashing, decoding, inference, the last partial batch and the commits all
count. CPU time is the child's (``RUSAGE_CHILDREN``). ``stages`` times the same steps
inside one process to show where the time goes: imports, opening a new collection (the
model load), discovery (new files are hashed by the pipeline as it decodes them, so not
here), one batch of 32 blank images (the first inference call, with ORT's one-off
set-up), then ``index`` itself (reading, hashing and decoding each file once, inference,
commits, the search index).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run in a child process: each step's wall time from the same clock, as JSON on stdout.
_STAGES = r"""
import json, sys, time
t0 = time.perf_counter()
from lookalike.collection import Collection
from lookalike.images import scan
t_import = time.perf_counter()
folder, db, model = sys.argv[1], sys.argv[2], sys.argv[3] or None
col = Collection.open(db, model=model, create=True)
embedder = col.embedder
t_model = time.perf_counter()
files = scan([folder]).files
t_scan = time.perf_counter()
from PIL import Image
embedder.embed_prepared([embedder.prepare(Image.new("RGB", (640, 480)))] * 32)
t_first = time.perf_counter()
report = col.index([folder])
t_index = time.perf_counter()
col.close()
print(json.dumps({
    "model": report.model, "runtime": getattr(embedder, "runtime", ""),
    "images": report.added, "imports_s": round(t_import - t0, 3),
    "model_load_s": round(t_model - t_import, 3), "discovery_s": round(t_scan - t_model, 3),
    "first_batch_s": round(t_first - t_scan, 3), "index_s": round(t_index - t_first, 3),
}))
"""


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def linked_folder(paths: list[Path], folder: Path) -> Path:
    """A folder holding exactly ``paths`` (hard links, regular files as the CLI wants)."""
    if folder.is_dir() and len(list(folder.iterdir())) == len(paths):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path in paths:
        try:
            os.link(path, folder / path.name)
        except OSError:  # another file system
            shutil.copyfile(path, folder / path.name)
    return folder


def run_cli(folder: Path, model: str | None, env: dict[str, str]) -> dict[str, Any]:
    """`lookalike index FOLDER --db NEW --json` in a new process: its report, wall, CPU."""
    with tempfile.TemporaryDirectory(prefix="lookalike-e2e-") as tmp:
        command = [sys.executable, "-m", "lookalike", "index", str(folder), "--db", tmp + "/db"]
        command += ["--json"] + (["--model", model] if model else [])
        cpu, wall = child_cpu(), time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        wall, cpu = time.perf_counter() - wall, child_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"lookalike index failed: {done.stderr.strip()}")
    report = json.loads(done.stdout)
    return {"report": report, "wall": wall, "cpu": cpu, "stderr": done.stderr.strip()}


def stages(folder: Path, model: str | None, env: dict[str, str]) -> dict[str, Any]:
    """Where one run's time goes (a child process, new collection)."""
    with tempfile.TemporaryDirectory(prefix="lookalike-stages-") as tmp:
        command = [sys.executable, "-c", _STAGES, str(folder), tmp + "/db", model or ""]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        total = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"stages failed: {done.stderr.strip()}")
    record: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    record["process_total_s"] = round(total, 3)
    return record
