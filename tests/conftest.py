"""Shared fixtures: real photos on disk, an isolated collection folder, a counting fake model
registered through the real registry, and CLI runners.

Every test gets LOOKALIKE_DB pointing into its own tmp_path. LOOKALIKE_CACHE points to one
directory per test session, so the ONNX export of the real model happens once per session.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

TEST_MODEL = "raw-pixels"  # fast and deterministic: everything not about the real model
COUNTING_MODEL = "counting-fake"
MAX_SIDE = 400  # photos are shrunk to this long side: enough detail, fast to decode


def _skimage_photos() -> dict[str, np.ndarray]:
    from skimage import data

    grey = {"camera": data.camera(), "coins": data.coins()}
    colour = {
        "astronaut": data.astronaut(),
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "hubble": data.hubble_deep_field(),
        "ihc": data.immunohistochemistry(),
    }
    out = {name: np.stack([a] * 3, axis=-1) for name, a in grey.items()}
    out.update(colour)
    return out


def _sklearn_photos() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_sample_images

    samples = load_sample_images()
    return {
        Path(name).stem: np.asarray(image)
        for name, image in zip(samples.filenames, samples.images, strict=True)
    }


@pytest.fixture(scope="session")
def photo_arrays() -> dict[str, np.ndarray]:
    """Ten distinct real photos (skimage.data + sklearn samples) as RGB uint8 arrays."""
    photos = {**_skimage_photos(), **_sklearn_photos()}
    out = {}
    for name, arr in photos.items():
        image = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).convert("RGB")
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        out[name] = np.asarray(image)
    return out


@pytest.fixture
def photos(tmp_path: Path, photo_arrays: dict[str, np.ndarray]) -> dict[str, Path]:
    """The real photos written as JPEGs into tmp_path/photos: name -> path."""
    folder = tmp_path / "photos"
    folder.mkdir()
    out = {}
    for name, arr in photo_arrays.items():
        path = folder / f"{name}.jpg"
        Image.fromarray(arr).save(path, quality=92)
        out[name] = path
    return out


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A collection folder (not created yet) under tmp_path."""
    return tmp_path / "db"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lookalike-cache")


@pytest.fixture(scope="session", autouse=True)
def _session_env(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[None]:
    """No fixture of any scope touches the user's data or cache dirs."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOKALIKE_CACHE", str(model_cache))
        mp.setenv("LOOKALIKE_DB", str(home / "default-db"))
        mp.setenv("XDG_DATA_HOME", str(home / "xdg-data"))
        mp.setenv("XDG_CACHE_HOME", str(home / "xdg-cache"))
        mp.delenv("LOOKALIKE_COMMIT_EVERY", raising=False)
        mp.delenv("LOOKALIKE_DEFAULT_MODEL", raising=False)  # the machine's own choice
        mp.delenv("LOOKALIKE_DEVICE", raising=False)
        yield


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test has its own default collection folder."""
    monkeypatch.setenv("LOOKALIKE_DB", str(tmp_path / "default-db"))


# ----- a counting fake model, registered through the real registry ---------------------


@dataclass
class EmbedLog:
    """What the counting model was asked to embed, as content signatures of its inputs."""

    signatures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.signatures.clear()

    @property
    def count(self) -> int:
        return len(self.signatures)


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def committed_images(db: Path) -> int:
    """Images committed to a folder collection, read without taking its lock (0 while it
    doesn't exist yet or is busy): what a test that kills an indexer mid-run counts."""
    from lookalike.store import META

    try:
        con = sqlite3.connect(f"file:{db / META}?mode=ro", uri=True, timeout=0.1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM images").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0  # not created yet, or busy


def load_benchmark(name: str) -> ModuleType:
    """A benchmarks/ script as a module (by path: `datasets` is also a PyPI package name)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def image_signature(image: Image.Image) -> str:
    """The same signature the counting model records for an image it prepares."""
    small = image.convert("RGB").resize((16, 16), Image.Resampling.BOX)
    return hashlib.sha1(small.tobytes()).hexdigest()


@pytest.fixture
def counting_model() -> Iterator[EmbedLog]:
    """Registers `counting-fake` (raw pixels + a log of every image it prepares)."""
    from lookalike.models import ModelOptions, registry
    from lookalike.models.base import ModelInfo
    from lookalike.models.pixels import SIDE, RawPixelsEmbedder

    log = EmbedLog()

    class CountingEmbedder(RawPixelsEmbedder):
        def __init__(self, options: ModelOptions) -> None:
            super().__init__()
            # Like the real CNNs, the pooling option is part of the model's identity.
            self.info = ModelInfo(
                name=COUNTING_MODEL,
                dim=self.info.dim,
                input_size=self.info.input_size,
                preprocessing={**self.info.preprocessing, "pool": options.pool or "avg"},
            )

        def prepare(self, image: Image.Image) -> Any:
            with log.lock:
                log.signatures.append(image_signature(image))
            return super().prepare(image)

    registry.list_models()  # load the built-ins first, so ours is not overwritten later
    registry.register(
        registry.ModelEntry(
            name=COUNTING_MODEL,
            dim=SIDE * SIDE * 3,
            input_size=SIDE,
            description="test: raw pixels, counting what it embeds",
            factory=CountingEmbedder,
            weights_available=lambda: True,
        )
    )
    yield log
    registry._REGISTRY.pop(COUNTING_MODEL, None)


# ----- running the CLI ------------------------------------------------------------------


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Invoke the real click group in-process: cli("index", path, "--json")."""
    from lookalike.cli import cli as group

    runner = CliRunner()

    def invoke(*args: str | os.PathLike[str]) -> Result:
        return runner.invoke(group, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def cli_json(cli: Callable[..., Result]) -> Callable[..., Any]:
    """Invoke with --json, check exit 0 and clean JSON on stdout, return the data."""

    def invoke(*args: str | os.PathLike[str]) -> Any:
        result = cli(*args, "--json")
        assert result.exit_code == 0, result.output + result.stderr
        return json.loads(result.stdout)

    return invoke


def lookalike_command() -> list[str]:
    """The installed console script next to this interpreter (a real process)."""
    script = Path(sys.executable).parent / "lookalike"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from lookalike.cli import main; main()"]


@pytest.fixture
def run_lookalike() -> Callable[..., Any]:
    """Run `lookalike ARGS` in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    def run(
        *args: str | os.PathLike[str], env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*lookalike_command(), *(str(a) for a in args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )

    return run


def write_variants(
    source: Path, folder: Path, kinds: Sequence[str] = ("crop", "half", "jpeg30", "flip", "bright")
) -> dict[str, Path]:
    """Altered copies of a photo: crop 85%, rescale 50%, JPEG q30, mirror, brightness +30%."""
    from PIL import ImageEnhance, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as im:
        image = im.convert("RGB")
    w, h = image.size
    makers: dict[str, Callable[[], Image.Image]] = {
        "crop": lambda: image.crop(
            (int(w * 0.075), int(h * 0.075), int(w * 0.925), int(h * 0.925))
        ),
        "half": lambda: image.resize((w // 2, h // 2), Image.Resampling.LANCZOS),
        "jpeg30": lambda: image,
        "flip": lambda: ImageOps.mirror(image),
        "bright": lambda: ImageEnhance.Brightness(image).enhance(1.3),
    }
    out = {}
    for kind in kinds:
        path = folder / f"{source.stem}-{kind}.jpg"
        makers[kind]().save(path, quality=30 if kind == "jpeg30" else 90)
        out[kind] = path
    return out


@pytest.fixture
def variants() -> Callable[..., dict[str, Path]]:
    return write_variants
