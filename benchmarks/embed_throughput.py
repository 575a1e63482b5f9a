"""Embedding throughput: lookalike's pipeline against the naive one, in the same run.

* ``lookalike``: ``pipeline.embed_files`` end to end: JPEG decode at reduced scale (Pillow
  draft), preprocessing in worker threads overlapping ONNX Runtime inference in batches.
* ``naive``: what the issue's reports did: decode every file at full size, preprocess,
  PyTorch eager, one image at a time; with torch's default threads, and with one thread.
* ``lookalike`` again with each ``--also`` model (default: the int8 version of
  ``--model``, e.g. efficientnet-lite0-int8), in the same rounds.

Both use the same model, weights and preprocessing recipe; timings exclude building the
model (reported separately as ``startup`` lines; the first start of an int8 model also
exports and quantises it once). Input: a folder of photo-sized JPEGs
built on first use from the photos available offline (skimage.data, scikit-learn's
sample images, foolbox's ImageNet photos): random crops, flips, colour shifts and
rescales to common camera/web sizes (``--sizes``, default 640x480 up to 2048x1536, every
third one portrait).

The pipelines alternate in ``--rounds`` rounds (lookalike over all photos, naive over a
slice), so both see the same machine load. Every line carries ``other_cores``: the CPU
time other processes used meanwhile, in cores (0 = the machine was ours alone).

Usage::

    python benchmarks/embed_throughput.py [--images 300] [--sizes 640x480,...] [--sweep]
        [--model efficientnet-lite0] [--also efficientnet-lite0-int8,...]
    python benchmarks/embed_throughput.py --cli-images 300,1000 --sizes 800x600
        [--cli-models ,efficientnet-lite0] [--naive-images 150]

``--cli-images``: end to end as a user runs it (end_to_end.py): ``lookalike index`` in a
new process on a new collection (process start, imports, model load, discovery, hashing,
decoding, the last partial batch all count), for the default path (an empty name in
``--cli-models``: no ``--model``) and each named model; per round also each model's
``inference-only`` ceiling (its runtime alone on prepared inputs, batches of
``--batch-size``) and the naive pipeline over a slice. Summary lines: images/s, speedup
over the faster naive variant, and ``of_ceiling`` (end-to-end images/s over the ceiling).
A ``stages`` line per model shows where one run's time goes.

Prints one JSON object per line: ``{"pipeline", "model", "images", "seconds",
"images_per_s", "cpu_ms_per_image", ...}`` per round and in total, then per lookalike
model ``{"speedup": lookalike / best naive, "model"}``, for ``--also`` models
``{"ratio": its images/s / --model's, "model"}``, and per model an ``inference-only``
line: the network alone on already decoded and resized inputs. ``--sweep`` also times
ONNX Runtime alone and the pipeline (``--model``) for 1-2 inference threads, with and
without ORT's spin-waiting, and 1-3 decode workers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

# (width, height) of the generated photos: camera and web sizes, cycled.
SIZES = ((640, 480), (1024, 768), (1280, 960), (1600, 1200), (2048, 1536))
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
)


def source_photos() -> Iterator[tuple[str, Image.Image]]:
    """Real RGB photos available without a network."""
    import skimage.data

    for name in SKIMAGE_PHOTOS:
        yield name, Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    from sklearn.datasets import load_sample_images

    for i, array in enumerate(load_sample_images().images):
        yield f"sklearn{i}", Image.fromarray(array).convert("RGB")
    spec = importlib.util.find_spec("foolbox")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "data"
        for path in sorted(folder.glob("imagenet_*.jpg")):
            with Image.open(path) as im:
                yield path.stem, im.convert("RGB")


def variant(photo: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A random crop of ``photo`` with the aspect ratio of ``size``, flipped/shifted, resized."""
    w, h = photo.size
    aspect = size[0] / size[1]
    frac = rng.uniform(0.6, 1.0)
    cw = min(w, int(frac * min(w, h * aspect)))
    ch = min(h, max(1, int(cw / aspect)))
    left = int(rng.integers(0, w - cw + 1))
    top = int(rng.integers(0, h - ch + 1))
    image = photo.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
    return image.resize(size, Image.Resampling.BICUBIC)


def build_photos(
    folder: Path, count: int, sizes: Sequence[tuple[int, int]] = SIZES, seed: int = 0
) -> list[Path]:
    """Write ``count`` JPEGs into ``folder`` (kept between runs) and return their paths.

    Sizes are cycled; every third photo is portrait (the same size turned on its side).
    """
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("photo-*.jpg"))
    if len(existing) >= count:
        return existing[:count]
    rng = np.random.default_rng(seed)
    photos = list(source_photos())
    paths = []
    for i in range(count):
        name, photo = photos[i % len(photos)]
        w, h = sizes[i % len(sizes)]
        size = (h, w) if i % 3 == 2 else (w, h)
        path = folder / f"photo-{i:04d}-{name}.jpg"
        if not path.exists():
            quality = int(rng.integers(80, 96))
            variant(photo, size, rng).save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


def machine_busy_seconds() -> float:
    """CPU seconds all processes have run since boot (Linux /proc/stat; 0 elsewhere)."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def timed(fn: Callable[[], object]) -> tuple[float, float, float]:
    """(wall s, CPU s of this process, CPU s of everything else on the machine) in fn()."""
    busy, cpu, wall = machine_busy_seconds(), time.process_time(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, max(0.0, machine_busy_seconds() - busy - cpu)


def accumulate(total: list[float], fn: Callable[[], object]) -> None:
    """Add fn()'s (wall, CPU, others' CPU) seconds to total."""
    for i, value in enumerate(timed(fn)):
        total[i] += value


def run_lookalike(embedder: Any, paths: list[Path], batch_size: int, workers: int | None) -> None:
    from lookalike.pipeline import embed_files

    rows = sum(len(b.indices) for b in embed_files(embedder, paths, batch_size, workers))
    if rows != len(paths):
        raise SystemExit(f"pipeline embedded {rows} of {len(paths)} images")


def run_naive(embedder: Any, paths: list[Path], threads: int | None = None) -> None:
    """Full-size decode, PyTorch eager, batch of one (same preprocessing recipe).

    ``threads``: torch intra-op threads (None: torch's default, all cores).
    """
    import torch

    from lookalike.images import load_image
    from lookalike.vectors import l2_normalize

    module = embedder.torch_module()
    default = torch.get_num_threads()
    torch.set_num_threads(threads or default)
    try:
        with torch.inference_mode():
            for path in paths:
                x = torch.from_numpy(embedder.preprocess(load_image(path))[None])
                l2_normalize(module(x).numpy())
    finally:
        torch.set_num_threads(default)


def naive_round(
    embedder: Any, chunk: list[Path], slow: dict[int | None, list[float]], r: int
) -> None:
    """One round of the naive pipeline per torch thread setting, added into ``slow``.
    torch's default (all cores) is what the reports ran; one thread too, because on a busy
    machine torch's OpenMP threads can be many times slower than one."""
    for threads, total in slow.items():
        this = [0.0, 0.0, 0.0]
        accumulate(this, lambda t=threads: run_naive(embedder, chunk, t))
        line(measured("naive", len(chunk), *this, torch_threads=threads, round=r))
        slow[threads] = [a + b for a, b in zip(total, this, strict=True)]


def line(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


def measured(
    pipeline: str, n: int, wall: float, cpu: float, others: float, **extra: object
) -> dict[str, object]:
    """One result line. ``other_cores``: CPU time other processes used meanwhile, as a
    number of busy cores (0 = the machine was ours alone)."""
    return {
        "pipeline": pipeline,
        "images": n,
        "seconds": round(wall, 3),
        "images_per_s": round(n / wall, 1),
        "cpu_ms_per_image": round(1e3 * cpu / n, 2),
        **extra,
        "other_cores": round(others / wall, 2),
    }


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    sizes = tuple(tuple(int(v) for v in item.split("x")) for item in text.split(","))
    if not all(len(s) == 2 and min(s) >= 480 for s in sizes):
        raise SystemExit(f"--sizes wants WxH,WxH... with sides >= 480, got {text!r}")
    return sizes  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="photo folder (built if missing)")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES))
    parser.add_argument("--naive-images", type=int, default=None, help="default: all")
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument(
        "--also",
        default=None,
        help="more models for the lookalike pipeline, comma-separated "
        "(default: MODEL-int8 if registered; '' for none)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="decode threads")
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the pipelines")
    parser.add_argument("--sweep", action="store_true", help="also try other settings")
    parser.add_argument(
        "--cli-images",
        default=None,
        help="end to end through the CLI instead: `lookalike index` in a new process on "
        "folders of these many photos, e.g. 300,1000 (see end_to_end.py)",
    )
    parser.add_argument(
        "--cli-models",
        default=",efficientnet-lite0",
        help="models for --cli-images, comma-separated; an empty name is the default path "
        "(no --model)",
    )
    args = parser.parse_args(argv)
    if args.cli_images:
        return cli_main(args)

    from lookalike.models import create_embedder, onnx_backend
    from model_spec import model_spec

    also = default_also(args.model) if args.also is None else [m for m in args.also.split(",") if m]
    sizes = parse_sizes(args.sizes)
    tag = "-".join(f"{w}x{h}" for w, h in sizes)
    folder = args.dir or Path(tempfile.gettempdir()) / f"lookalike-bench-photos-{tag}"
    paths = build_photos(folder, args.images, sizes)
    pixels = [Image.open(p).size for p in paths]
    line(
        {
            "photos": len(paths),
            "folder": str(folder),
            "mean_megapixels": round(float(np.mean([w * h for w, h in pixels])) / 1e6, 2),
            "cpus": onnx_backend.available_cpus(),
        }
    )

    embedders = {}
    for model in [args.model, *also]:
        start = time.perf_counter()
        name, options = model_spec(model)  # "name@avg/r3": explicit pooling and recipe
        embedders[model] = create_embedder(name, replace(options, threads=args.threads))
        seconds = round(time.perf_counter() - start, 3)
        backend = getattr(embedders[model], "backend", "")
        line({"startup": "lookalike", "model": model, "backend": backend, "seconds": seconds})
    start = time.perf_counter()
    name, options = model_spec(args.model)
    torch_embedder = create_embedder(name, replace(options, backend="torch"))
    seconds = round(time.perf_counter() - start, 3)
    line({"startup": "naive", "backend": "torch", "seconds": seconds})

    # Warm-up, then rounds that alternate the pipelines, so that all see the same load:
    # each round runs lookalike (each model) over all photos and the naive one over a
    # 1/rounds slice.
    for embedder in embedders.values():
        run_lookalike(embedder, paths[: args.batch_size], args.batch_size, args.workers)
    run_naive(torch_embedder, paths[:2])
    naive_paths = paths[: args.naive_images] if args.naive_images else paths
    fast = {model: [0.0, 0.0, 0.0] for model in embedders}
    slow: dict[int | None, list[float]] = {None: [0.0, 0.0, 0.0], 1: [0.0, 0.0, 0.0]}
    for r in range(args.rounds):
        for model, embedder in embedders.items():
            this = [0.0, 0.0, 0.0]
            accumulate(
                this,
                lambda e=embedder: run_lookalike(e, paths, args.batch_size, args.workers),
            )
            line(measured("lookalike", len(paths), *this, model=model, round=r))
            fast[model] = [a + b for a, b in zip(fast[model], this, strict=True)]
        naive_round(torch_embedder, naive_paths[r :: args.rounds], slow, r)
    n_fast = args.rounds * len(paths)
    settings = {"batch_size": args.batch_size, "workers": args.workers, "threads": args.threads}
    for model, total in fast.items():
        line(measured("lookalike", n_fast, *total, model=model, **settings, round="all"))
    best_naive = 0.0
    for threads, total in slow.items():
        line(measured("naive", len(naive_paths), *total, torch_threads=threads, round="all"))
        best_naive = max(best_naive, len(naive_paths) / total[0])
    for model, total in fast.items():
        speedup = round((n_fast / total[0]) / best_naive, 2)
        line({"speedup": speedup, "model": model, "over": "best naive"})
    for model in also:
        ratio = round(fast[args.model][0] / fast[model][0], 2)  # same images: wall ratio
        line({"ratio": ratio, "model": model, "over": args.model})
    # How much of each pipeline's time the network alone takes.
    for model, embedder in embedders.items():
        only = inference_only(embedder, paths, args.batch_size)
        line(measured("inference-only", len(paths), *only, model=model))

    if args.sweep:
        sweep(args.model, paths, args.batch_size)
    return 0


def cli_main(args: argparse.Namespace) -> int:
    """End to end through the CLI, the ceiling of each model's runtime and the naive
    pipeline, alternating in ``--rounds`` rounds."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import end_to_end as e2e
    from lookalike.models import ModelOptions, create_embedder, onnx_backend
    from lookalike.models.defaults import choose_default

    counts = [int(v) for v in args.cli_images.split(",")]
    models = args.cli_models.split(",")
    sizes = parse_sizes(args.sizes)
    tag = "-".join(f"{w}x{h}" for w, h in sizes)
    base = args.dir or Path(tempfile.gettempdir()) / f"lookalike-bench-photos-{tag}"
    paths = build_photos(base, max(counts), sizes)
    folders = {
        n: e2e.linked_folder(paths[:n], base.parent / f"{base.name}-first{n}") for n in counts
    }
    env = dict(os.environ)
    line(
        {
            "photos": len(paths),
            "folder": str(base),
            "sizes": tag,
            "cpus": onnx_backend.available_cpus(),
        }
    )

    # Warm the model cache (the first start exports / quantises once), then the stages.
    small = e2e.linked_folder(paths[:8], base.parent / f"{base.name}-first8")
    names = {}
    for model in models:
        run = e2e.run_cli(small, model or None, env)
        names[model] = run["report"]["model"]
        line({"warm_up": model or "default", "model": names[model], "stderr": run["stderr"]})
    for model in models:
        record = e2e.stages(folders[min(counts)], model or None, env)
        line({"stages": model or "default", **record})
    line({"default_here": choose_default().model, "reason": choose_default().reason})

    # The ceiling: each runtime alone on prepared inputs (batches, all threads).
    embedders = {
        name: create_embedder(name, ModelOptions(threads=args.threads))
        for name in set(names.values())
    }
    torch_embedder = create_embedder("efficientnet-lite0", ModelOptions(backend="torch"))
    run_naive(torch_embedder, paths[:2])
    ceiling_paths = paths[: min(counts)]
    naive_paths = paths[: args.naive_images] if args.naive_images else paths[: min(counts)]
    cli_total: dict[tuple[int, str], list[float]] = {}
    ceiling_total = {name: [0.0, 0.0, 0.0] for name in embedders}
    slow: dict[int | None, list[float]] = {None: [0.0, 0.0, 0.0], 1: [0.0, 0.0, 0.0]}
    for r in range(args.rounds):
        for n in counts:
            for model in models:
                busy = machine_busy_seconds()
                run = e2e.run_cli(folders[n], model or None, env)
                others = max(0.0, machine_busy_seconds() - busy - run["cpu"])
                if run["report"]["added"] != n:
                    raise SystemExit(f"indexed {run['report']['added']} of {n} photos")
                this = [run["wall"], run["cpu"], others]
                extra = {"model": names[model], "default": not model, "round": r}
                line(measured("cli", n, *this, **extra))
                key = (n, model)
                cli_total[key] = [
                    a + b for a, b in zip(cli_total.get(key, [0.0] * 3), this, strict=True)
                ]
        for name, embedder in embedders.items():
            this = list(inference_only(embedder, ceiling_paths, args.batch_size))
            line(measured("inference-only", len(ceiling_paths), *this, model=name, round=r))
            ceiling_total[name] = [a + b for a, b in zip(ceiling_total[name], this, strict=True)]
        naive_round(torch_embedder, naive_paths[r :: args.rounds], slow, r)

    best_naive, naive_cpu = 0.0, float("inf")
    for threads, total in slow.items():
        line(measured("naive", len(naive_paths), *total, torch_threads=threads, round="all"))
        best_naive = max(best_naive, len(naive_paths) / total[0])
        naive_cpu = min(naive_cpu, total[1] / len(naive_paths))
    ceiling, ceiling_cpu = {}, {}
    for name, total in ceiling_total.items():
        n_all = args.rounds * len(ceiling_paths)
        line(measured("inference-only", n_all, *total, model=name, round="all"))
        ceiling[name] = n_all / total[0]
        ceiling_cpu[name] = total[1] / n_all
    for (n, model), total in cli_total.items():
        rate = args.rounds * n / total[0]
        line(
            measured(
                "cli", args.rounds * n, *total, model=names[model], default=not model, round="all"
            )
        )
        line(
            {
                "summary": "cli",
                "images": n,
                "model": names[model],
                "default": not model,
                "images_per_s": round(rate, 1),
                "speedup_over_best_naive": round(rate / best_naive, 2),
                "of_ceiling": round(rate / ceiling[names[model]], 2),
                # The same two ratios in CPU time per image, which other work on the machine
                # disturbs less than wall time (naive: its cheaper variant).
                "cpu_speedup_over_naive": round(naive_cpu / (total[1] / (args.rounds * n)), 2),
                "of_ceiling_cpu": round(
                    ceiling_cpu[names[model]] / (total[1] / (args.rounds * n)), 2
                ),
            }
        )
    return 0


def default_also(model: str) -> list[str]:
    """The int8 version of ``model`` when one is registered."""
    from lookalike.models import list_models

    return [m.name for m in list_models() if m.name == f"{model}-int8"]


def inference_only(embedder: Any, paths: list[Path], batch_size: int) -> tuple[float, float, float]:
    """(wall, CPU, others' CPU) seconds of the network alone on already prepared inputs."""
    from lookalike.images import load_image

    prepared = [embedder.prepare(load_image(p, embedder.draft_size)) for p in paths]
    batches = [prepared[i : i + batch_size] for i in range(0, len(prepared), batch_size)]
    return timed(lambda: [embedder.embed_prepared(b) for b in batches])


def sweep(model: str, paths: list[Path], batch_size: int) -> None:
    """The pipeline under other settings, and ONNX Runtime alone on prepared inputs."""
    from lookalike.models import ModelOptions, create_embedder, onnx_backend

    default_spinning = onnx_backend.ALLOW_SPINNING
    try:
        for spinning in (False, True):
            onnx_backend.ALLOW_SPINNING = spinning  # read when a session is made
            for threads in (1, 2):
                embedder = create_embedder(model, ModelOptions(threads=threads))
                only = inference_only(embedder, paths, batch_size)
                extra = {"threads": threads, "spinning": spinning, "batch_size": batch_size}
                line(measured("inference-only", len(paths), *only, **extra))
                for workers in (1, 2, 3):
                    run = timed(
                        lambda e=embedder, w=workers: run_lookalike(e, paths, batch_size, w)
                    )
                    line(measured("lookalike", len(paths), *run, workers=workers, **extra))
    finally:
        onnx_backend.ALLOW_SPINNING = default_spinning


if __name__ == "__main__":
    sys.exit(main())
