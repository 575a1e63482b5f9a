"""The generic torch-feature-model embedder: ONNX export, its cache, the torch fallback,
and the weights hash cache."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.errors import ModelError
from lookalike.images import load_image
from lookalike.models import ModelInfo, ModelOptions, create_embedder
from lookalike.models import onnx_backend as ob
from lookalike.models import weights as weights_mod
from lookalike.models.onnx_backend import TorchFeatureModel, global_pool, pooled_features
from lookalike.models.preprocess import Preprocess


def imagenet_paths() -> list[Path]:
    spec = importlib.util.find_spec("foolbox")
    assert spec is not None and spec.submodule_search_locations
    return sorted((Path(next(iter(spec.submodule_search_locations))) / "data").glob("imagenet_*"))


class Backbone(torch.nn.Module):
    """A tiny CNN with a timm-like ``forward_features`` (random, seeded weights)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
            torch.nn.ReLU6(),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CountingFactory:
    def __init__(self, pool: str = "avg") -> None:
        self.calls = 0
        self.pool = pool

    def __call__(self) -> torch.nn.Module:
        self.calls += 1
        return pooled_features(Backbone(), self.pool)


def tiny(
    factory: Callable[[], torch.nn.Module],
    options: ModelOptions | None = None,
    weights_id: str = "tiny0001",
) -> TorchFeatureModel:
    pre = Preprocess(size=32, crop_fraction=0.9)
    info = ModelInfo(
        name="tiny-test", dim=16, input_size=32, preprocessing=pre.to_dict(), weights_id=weights_id
    )
    return TorchFeatureModel(info, factory, pre, options or ModelOptions())


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("LOOKALIKE_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [load_image(p, 256) for p in imagenet_paths()]


# --- the real model: both backends agree, the export is reused ------------------------------


@pytest.mark.parametrize("pool", ["avg", "gem"])
def test_onnx_and_torch_agree_on_real_photos(pool: str, photos: list[Image.Image]) -> None:
    fast = create_embedder("efficientnet-lite0", ModelOptions(pool=pool))
    slow = create_embedder("efficientnet-lite0", ModelOptions(pool=pool, backend="torch"))
    assert isinstance(fast, TorchFeatureModel) and fast.backend == "onnx"
    assert isinstance(slow, TorchFeatureModel) and slow.backend == "torch"
    a, b = fast.embed_images(photos), slow.embed_images(photos)
    assert a.shape == (20, 1280) and a.dtype == np.float32 and a.flags.c_contiguous
    assert float(np.abs(a - b).max()) < 1e-4
    assert fast.info.preprocessing["pool"] == pool


def test_gem_differs_from_avg(photos: list[Image.Image]) -> None:
    avg = create_embedder("efficientnet-lite0", ModelOptions(pool="avg")).embed_images(photos[:4])
    gem = create_embedder("efficientnet-lite0", ModelOptions(pool="gem")).embed_images(photos[:4])
    cosine = (avg * gem).sum(axis=1)
    assert np.all(cosine < 0.999) and np.all(cosine > 0.5)  # related, not the same vectors


def test_next_process_reuses_the_export_without_torch() -> None:
    create_embedder("efficientnet-lite0")  # exported into the session cache, if not yet
    code = (
        "import sys; from lookalike.models import create_embedder;"
        "from lookalike.models import onnx_backend as ob;"
        "e = create_embedder('efficientnet-lite0');"
        "print(e.backend, ob.export_count, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["onnx", "0", "False"]


# --- the cache, with a tiny model ------------------------------------------------------------


def test_export_is_cached_and_reused(cache: Path) -> None:
    first_factory = CountingFactory()
    before = ob.export_count
    first = tiny(first_factory)
    path = first.onnx_path()
    assert path is not None and path.is_file() and path.parent.parent == cache
    assert ob.export_count == before + 1
    stamp = path.stat().st_mtime_ns
    assert list(path.parent.glob("*.tmp")) == []  # written atomically: nothing left behind

    again_factory = CountingFactory()
    again = tiny(again_factory)
    assert ob.export_count == before + 1 and again_factory.calls == 0  # torch never touched
    assert path.stat().st_mtime_ns == stamp and again.backend == "onnx"
    images = [Image.new("RGB", (40, 30), (10 * i, 200, 90)) for i in range(3)]
    np.testing.assert_allclose(first.embed_images(images), again.embed_images(images), atol=1e-6)


def test_a_first_export_says_so_once(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The CLI shows lookalike's INFO lines: a first start is not seconds of silence."""
    with caplog.at_level("INFO", logger="lookalike"):
        tiny(CountingFactory())
        tiny(CountingFactory())  # cached: nothing to say
    notes = [r.getMessage() for r in caplog.records if r.name == "lookalike"]
    assert len(notes) == 1 and "preparing" in notes[0] and "once" in notes[0], notes


def test_cache_key_separates_pool_and_weights(cache: Path) -> None:
    keys = {
        tiny(CountingFactory()).onnx_path(),
        tiny(CountingFactory("gem"), ModelOptions(pool="gem")).onnx_path(),
        tiny(CountingFactory(), weights_id="tiny0002").onnx_path(),
    }
    assert len(keys) == 3 and all(p is not None and p.is_file() for p in keys)


def test_damaged_cache_file_is_exported_again(cache: Path) -> None:
    path = tiny(CountingFactory()).onnx_path()
    assert path is not None
    path.write_bytes(b"\x08\x01 truncated")
    factory = CountingFactory()
    with pytest.warns(RuntimeWarning, match="re-exporting"):
        embedder = tiny(factory)
    assert factory.calls == 1 and embedder.backend == "onnx"
    assert path.stat().st_size > 1000
    assert embedder.embed_images([Image.new("RGB", (32, 32))]).shape == (1, 16)


def test_unusable_cache_dir_still_runs_onnx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("a file where the cache folder should be")
    monkeypatch.setenv("LOOKALIKE_CACHE", str(not_a_dir))
    with pytest.warns(RuntimeWarning, match="not caching"):
        embedder = tiny(CountingFactory())
    assert embedder.backend == "onnx"
    assert embedder.embed_images([Image.new("RGB", (32, 32))]).shape == (1, 16)


def test_unknown_weights_are_never_cached(cache: Path) -> None:
    embedder = tiny(CountingFactory(), weights_id="none")
    assert embedder.backend == "onnx" and embedder.onnx_path() is None
    assert not (cache / "onnx").exists()


def test_auto_falls_back_to_torch(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(model: object, threads: int) -> None:
        raise RuntimeError("no ONNX Runtime here")

    monkeypatch.setattr(ob, "make_session", broken)
    with pytest.warns(RuntimeWarning, match="using PyTorch"):
        embedder = tiny(CountingFactory())
    assert embedder.backend == "torch"
    assert embedder.embed_images([Image.new("RGB", (32, 32), "red")]).shape == (1, 16)
    with pytest.raises(ModelError, match=r"ONNX backend failed.*no ONNX Runtime"):
        tiny(CountingFactory(), ModelOptions(backend="onnx"))
    assert not (cache / "onnx").exists() or not any((cache / "onnx").iterdir())


def test_wrong_feature_size_is_an_error(cache: Path) -> None:
    factory = CountingFactory()
    pre = Preprocess(size=32)
    info = ModelInfo(name="liar", dim=99, input_size=32, weights_id="none")
    embedder = TorchFeatureModel(info, factory, pre, ModelOptions())
    with pytest.raises(ModelError, match="expected \\(1, 99\\)"):
        embedder.embed_images([Image.new("RGB", (32, 32))])
    assert embedder.embed_prepared([]).shape == (0, 99)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ModelOptions(pool="max"), "unknown pool"),
        (ModelOptions(backend="tpu"), "unknown backend"),
        (ModelOptions(threads=0), "threads must be"),
    ],
)
def test_bad_options(options: ModelOptions, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        tiny(CountingFactory(), options)


def test_session_threads(cache: Path) -> None:
    path = tiny(CountingFactory()).onnx_path()
    assert path is not None
    assert ob.make_session(path, 1).get_session_options().intra_op_num_threads == 1
    assert ob.inference_threads(ModelOptions()) == len(os.sched_getaffinity(0))
    assert ob.inference_threads(ModelOptions(threads=3)) == 3


def test_cpu_lanes_give_the_vectors_of_one_run(cache: Path) -> None:
    """On the CPU each session run has one thread, and embed_prepared runs one slice of a
    batch per lane at once: the vectors are those of the whole batch in one run."""
    embedder = tiny(CountingFactory(), ModelOptions(threads=3))
    assert embedder.inference_lanes == 3
    rng = np.random.default_rng(1)
    batch = list(rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8))
    whole = embedder.embed_serial(batch)
    np.testing.assert_allclose(embedder.embed_prepared(batch), whole, atol=1e-6)
    np.testing.assert_allclose(embedder.embed_prepared(batch[:2]), whole[:2], atol=1e-6)
    assert embedder.embed_prepared([]).shape == (0, 16)
    path = embedder.onnx_path()
    assert path is not None
    assert ob.make_session(path, 1).get_session_options().intra_op_num_threads == 1
    # PyTorch spreads a batch over its own threads: one lane.
    assert tiny(CountingFactory(), ModelOptions(backend="torch")).inference_lanes == 1


def test_global_pool_formulas() -> None:
    x = torch.rand(2, 5, 3, 4) + 0.1
    np.testing.assert_allclose(global_pool(x, "avg").numpy(), x.numpy().mean((2, 3)), rtol=1e-6)
    gem = np.cbrt((x.numpy() ** 3).mean((2, 3)))
    np.testing.assert_allclose(global_pool(x, "gem").numpy(), gem, rtol=1e-5)
    with pytest.raises(ModelError):
        global_pool(x, "max")


# --- weights hash and atomic writes ----------------------------------------------------------


def test_weights_id_is_cached_by_path_size_mtime(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"abc" * 1000)
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    calls: list[Path] = []
    real = weights_mod.sha256_file

    def counting(path: Path, chunk: int = 1 << 20) -> str:
        calls.append(path)
        return real(path, chunk)

    monkeypatch.setattr(weights_mod, "sha256_file", counting)
    assert weights_mod.weights_id(weights) == expected
    assert weights_mod.weights_id(weights) == expected
    assert len(calls) == 1  # second start: read from the cache
    weights.write_bytes(b"xyz" * 1000)
    os.utime(weights, ns=(1, 1))
    assert weights_mod.weights_id(weights) == hashlib.sha256(b"xyz" * 1000).hexdigest()[:16]
    assert len(calls) == 2


def test_atomic_path_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), weights_mod.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with weights_mod.atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
