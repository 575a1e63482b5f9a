"""Latency of ``POST /api/search`` with a small JPEG, on a 10,000-image collection.

``lookalike serve`` runs in its own process; this process is the client (httpx, one
keep-alive connection, one request at a time, as a person dropping images would). Each
request's wall time is measured from just before sending the multipart upload to the
parsed JSON answer.

Baseline in the same run: the same search in this process (``decode_upload`` of the same
bytes + ``Collection.search`` + JSON, no HTTP), alternating with the HTTP requests so
both see the same machine load; ``http_overhead_p50_ms`` is what the web layer adds
(multipart parsing, thread pool hop, response validation, loopback TCP).

The collection: ``--n`` small JPEGs (longest side 96-192 px, quality 70-92) generated
from the offline photos (skimage.data, scikit-learn samples, foolbox's 20 ImageNet
photos) by random crops, flips, brightness/colour/contrast changes; seeded, so every run
makes the same images. Images and collections are kept under ``--work`` and reused.
The query is a photo that is not in the collection (the cat from skimage, 320x213,
JPEG quality 85).

Usage::

    python benchmarks/web_latency.py [--n 10000] [--requests 300]
        [--models raw-pixels,efficientnet-lite0] [--work bench-data/web-latency]

Prints one JSON object per model.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

K = 10


def source_photos() -> list[Image.Image]:
    """Every offline photo we have, as RGB images."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = []
    for name in (
        "astronaut",
        "chelsea",
        "coffee",
        "rocket",
        "immunohistochemistry",
        "hubble_deep_field",
        "camera",
        "coins",
        "moon",
        "page",
    ):
        photos.append(Image.fromarray(getattr(data, name)()).convert("RGB"))
    photos += [Image.fromarray(a).convert("RGB") for a in load_sample_images().images]
    spec = importlib.util.find_spec("foolbox")
    if spec and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "data"
        for path in sorted(folder.glob("imagenet_*.jpg")):
            with Image.open(path) as im:
                photos.append(im.convert("RGB"))
    return photos


def make_images(folder: Path, n: int, seed: int = 0) -> float:
    """n altered crops of the photos as small JPEGs; returns seconds spent (0 if reused)."""
    done = folder / f".complete-{n}-{seed}"
    if done.exists():
        return 0.0
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    photos = source_photos()
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.35, 1.0)), int(h * rng.uniform(0.35, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = photo.crop((x, y, x + cw, y + ch))
        side = int(rng.integers(96, 193))
        image.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
        path = folder / f"{i // 1000:03d}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=int(rng.integers(70, 93)))
    done.touch()
    return time.perf_counter() - start


def build_collection(db: Path, images: Path, model: str) -> dict[str, Any]:
    from lookalike.collection import Collection

    start = time.perf_counter()
    with Collection.open(db, model=model, create=True) as col:
        report = col.index([images])
        index = col.info()["index"]
    took = time.perf_counter() - start
    return {
        "added": report.added,
        "total": report.total,
        "seconds": round(took, 1),
        "index": index.get("kind"),
    }


def query_jpeg() -> bytes:
    from skimage import data

    cat = Image.fromarray(data.chelsea())
    cat = cat.crop((20, 15, cat.width - 20, cat.height - 15)).resize((320, 213))
    buf = io.BytesIO()
    cat.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(db: Path, port: int, cache: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LOOKALIKE_CACHE": str(cache)}
    command = [
        sys.executable,
        "-m",
        "lookalike",
        "serve",
        "--db",
        str(db),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with open(log, "w") as fh:
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"lookalike serve exited ({proc.returncode}):\n{log.read_text()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/info")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit(f"lookalike serve did not start:\n{log.read_text()}")


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p90_ms": round(float(np.percentile(a, 90)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "mean_ms": round(float(a.mean()), 2),
        "max_ms": round(float(a.max()), 2),
    }


def time_both(db: Path, port: int, content: bytes, requests: int, warmup: int) -> Any:
    """(HTTP ms, in-process ms) per request, interleaved so both see the same machine load."""
    import httpx

    from lookalike.collection import Collection
    from lookalike.web.uploads import UploadLimits, decode_upload

    files = {"file": ("query.jpg", content, "image/jpeg")}
    http_ms, local_ms = [], []
    with (
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
        Collection.open(db) as col,
    ):
        draft = col.embedder.draft_size
        for i in range(warmup + requests):
            start = time.perf_counter()
            response = client.post("/api/search", files=files, data={"k": str(K)})
            body = response.json()
            over_http = (time.perf_counter() - start) * 1000
            if response.status_code != 200 or len(body[0]["results"]) != K:
                raise SystemExit(f"bad answer: {response.status_code} {response.text[:300]}")

            start = time.perf_counter()
            image = decode_upload(content, UploadLimits(), min_side=draft)
            result = col.search([image], k=K)[0]
            json.dumps(result.to_json(with_id=True))
            in_process = (time.perf_counter() - start) * 1000
            if [h.id for h in result.results] != [h["id"] for h in body[0]["results"]]:
                raise SystemExit("the server and the library disagree")
            if i >= warmup:
                http_ms.append(over_http)
                local_ms.append(in_process)
    return http_ms, local_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="images in the collection")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per model")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--models", default="raw-pixels,efficientnet-lite0")
    parser.add_argument("--work", type=Path, default=Path("bench-data/web-latency"))
    args = parser.parse_args()

    from lookalike.models import get_entry

    images = args.work / f"images-{args.n}"
    generated_s = make_images(images, args.n)
    content = query_jpeg()
    for model in args.models.split(","):
        line: dict[str, Any] = {"benchmark": "web_latency", "model": model, "images": args.n}
        if not get_entry(model).weights_available():
            print(json.dumps({**line, "skipped": "weights not available here"}), flush=True)
            continue
        db = args.work / f"db-{model}-{args.n}"
        built = build_collection(db, images, model)
        if built["total"] != args.n:
            raise SystemExit(f"{db}: {built['total']} images indexed, expected {args.n}")
        port = free_port()
        log = args.work / f"serve-{model}.log"
        proc = start_server(db, port, args.work / "cache", log)
        try:
            http_ms, local_ms = time_both(db, port, content, args.requests, args.warmup)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        http_stats, local_stats = percentiles(http_ms), percentiles(local_ms)
        line.update(
            {
                "k": K,
                "requests": args.requests,
                "query_bytes": len(content),
                "query_size": [320, 213],
                **http_stats,
                "in_process_p50_ms": local_stats["p50_ms"],
                "in_process_p99_ms": local_stats["p99_ms"],
                "http_overhead_p50_ms": round(http_stats["p50_ms"] - local_stats["p50_ms"], 2),
                "index": built["index"],
                "index_build_s": built["seconds"] if built["added"] else None,
                "images_generated_s": round(generated_s, 1) if generated_s else None,
                "cpus": os.cpu_count(),
                "load_avg_1min": round(os.getloadavg()[0], 2),
            }
        )
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
