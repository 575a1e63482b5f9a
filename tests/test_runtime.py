"""Runtimes and precisions: the agreement that lets two runtimes share a model identity,
measured on real photos; the GPU choice with a fake provider list; the default model's
choice and its fallback; a collection refusing vectors of another precision."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lookalike.collection import Collection
from lookalike.errors import ModelError, ModelMismatchError
from lookalike.images import load_image
from lookalike.models import ModelOptions, create_embedder, onnx_backend, runtime
from lookalike.models import defaults as dm
from lookalike.models.calibration import source_photos
from lookalike.models.onnx_backend import TorchFeatureModel
from test_efficientnet_lite import imagenet_photos

FLOAT, INT8 = dm.FLOAT_MODEL, dm.INT8_MODEL
VNNI = frozenset({"fpu", "avx2", "avx512f", "avx512_vnni"})
NO_VNNI = frozenset({"fpu", "avx2"})
NO_AVX2 = frozenset({"fpu", "sse4_1", "avx"})


def _real_pixels(embedder: TorchFeatureModel) -> np.ndarray:
    """The 13 calibration photos whole and the 20 foolbox photos, as the model's input."""
    images = list(source_photos())
    images += [load_image(path, embedder.draft_size) for path, _ in imagenet_photos()]
    return np.stack([embedder.prepare(im) for im in images])


@pytest.fixture(scope="module")
def fp32() -> TorchFeatureModel:
    embedder = create_embedder(FLOAT)
    assert isinstance(embedder, TorchFeatureModel)
    return embedder


# ----- agreement ------------------------------------------------------------------------


def test_agreement_thresholds() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 32))
    assert runtime.agreement(a, 3 * a) == pytest.approx((1.0, 1.0))
    assert runtime.agrees(a, a + 1e-4 * rng.normal(size=a.shape))
    worse = a.copy()
    worse[0] = rng.normal(size=32)  # one photo far off: the minimum catches it
    assert not runtime.agrees(a, worse)
    assert not runtime.agrees(a, a[:4])  # shapes differ
    assert (runtime.AGREEMENT_MEAN, runtime.AGREEMENT_MIN) == (0.999, 0.995)


@pytest.mark.slow
def test_torch_and_onnx_runtime_agree_on_real_photos(fp32: TorchFeatureModel) -> None:
    """PyTorch eager and ONNX Runtime are one model: cosine >= 0.999 mean, 0.995 each."""
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    x = _real_pixels(fp32)
    eager = create_embedder(FLOAT, ModelOptions(backend="torch"))
    assert isinstance(eager, TorchFeatureModel) and eager.runtime == "torch"
    mean, low = runtime.agreement(eager._run(x), fp32._run(x))
    assert mean >= 0.99999 and low >= 0.9999  # float rounding only
    assert runtime.agrees(eager._run(x), fp32._run(x))


@pytest.mark.slow
def test_int8_is_outside_the_agreement_so_it_has_its_own_identity(
    fp32: TorchFeatureModel,
) -> None:
    """int8 vectors are close (mean 0.985, min 0.94 measured) but not the same model's."""
    int8 = create_embedder(INT8)
    assert isinstance(int8, TorchFeatureModel)
    x = _real_pixels(fp32)
    mean, low = runtime.agreement(int8._run(x), fp32._run(x))
    assert mean >= 0.97 and low >= 0.9  # faithful (int8.MIN_MEAN_COSINE, MIN_COSINE) ...
    assert not runtime.agrees(int8._run(x), fp32._run(x))  # ... but another model
    assert int8.info.identity() != fp32.info.identity()
    assert runtime.precision_of(int8.info.identity()) == "int8"
    assert runtime.precision_of(fp32.info.identity()) == "fp32"


def test_a_collection_refuses_vectors_of_another_precision(
    db: Path, photos: dict[str, Path]
) -> None:
    with Collection.open(db, model=INT8, create=True) as col:
        col.index([photos["astronaut"]])
    with pytest.raises(ModelMismatchError, match=INT8):
        Collection.open(db, model=FLOAT)
    # An embedder of the float model handed to the collection is refused too.
    with Collection.open(db) as col:
        col._embedder = create_embedder(FLOAT)
        with pytest.raises(ModelMismatchError, match="differs in"):
            col.index([photos["chelsea"]])
    manifest = json.loads((db / "manifest.json").read_text())
    assert manifest["model"]["model"] == INT8
    assert manifest["model"]["preprocessing"]["quantization"]


# ----- GPU choice (fake provider lists: there is no GPU here) -----------------------------


def test_providers_prefer_cuda_when_present() -> None:
    cpu, cuda = runtime.CPU, runtime.CUDA
    assert runtime.choose_providers([cpu]) == [cpu]
    assert runtime.choose_providers(["AzureExecutionProvider", cpu]) == [cpu]
    assert runtime.choose_providers([cuda, cpu]) == [cuda, cpu]
    assert runtime.choose_providers([cuda, cpu], "cpu") == [cpu]
    with pytest.raises(ModelError, match="LOOKALIKE_DEVICE"):
        runtime.choose_providers([cpu], "tpu")


class _FakeSession:
    def __init__(self, out: np.ndarray, provider: str) -> None:
        self.out, self.provider = out, provider

    def get_inputs(self) -> list[Any]:
        class Input:
            name = "pixels"

        return [Input()]

    def get_providers(self) -> list[str]:
        return [self.provider]

    def run(self, _names: Any, _feed: Any) -> list[np.ndarray]:
        return [self.out]


def test_gpu_session_used_only_when_its_vectors_agree() -> None:
    rng = np.random.default_rng(1)
    want = rng.normal(size=(8, 16))
    cpu = _FakeSession(want, runtime.CPU)
    probe = np.zeros((8, 4, 4, 3), np.uint8)

    def gpu_giving(out: np.ndarray, provider: str = runtime.CUDA) -> Any:
        return lambda *_a, **_k: _FakeSession(out, provider)

    same = gpu_giving(want + 1e-5)
    session, used = onnx_backend.gpu_session_or_cpu(cpu, b"", runtime.CUDA, probe, "m", same)
    assert used == runtime.CUDA and session is not cpu

    with pytest.warns(RuntimeWarning, match="disagree with the CPU"):
        far = gpu_giving(rng.normal(size=want.shape))
        session, used = onnx_backend.gpu_session_or_cpu(cpu, b"", runtime.CUDA, probe, "m", far)
    assert used == runtime.CPU and session is cpu

    with pytest.warns(RuntimeWarning, match="did not initialise"):
        fell_back = gpu_giving(want, runtime.CPU)  # ORT quietly fell back to the CPU
        _, used = onnx_backend.gpu_session_or_cpu(cpu, b"", runtime.CUDA, probe, "m", fell_back)
    assert used == runtime.CPU

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("libcublas.so.12: cannot open shared object file")

    with pytest.warns(RuntimeWarning, match="libcublas"):
        _, used = onnx_backend.gpu_session_or_cpu(cpu, b"", runtime.CUDA, probe, "m", broken)
    assert used == runtime.CPU


def test_the_cpu_runs_the_model_here(fp32: TorchFeatureModel) -> None:
    if runtime.CUDA in runtime.available_providers():
        pytest.skip("a GPU is here")
    assert fp32.runtime == "onnxruntime-cpu"


# ----- the default model -----------------------------------------------------------------


def test_cpu_flags_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\n")
    assert runtime.cpu_flags(info) == {"fpu", "avx2", "avx512_vnni"}
    assert runtime.int8_is_fast(runtime.cpu_flags(info))
    assert runtime.int8_is_fast(NO_VNNI) and not runtime.int8_dot_products(NO_VNNI)
    assert not runtime.int8_is_fast(NO_AVX2) and not runtime.int8_is_fast({"asimd", "asimddp"})
    assert runtime.int8_is_fast({"amx_int8"}) and runtime.int8_is_fast({"avx_vnni"})
    assert runtime.cpu_flags(tmp_path / "missing") == frozenset()


def test_default_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever int8 builds this machine remembers (its own test below covers that).
    monkeypatch.setattr(dm, "_int8_failed_here", lambda options: None)
    cpu, cuda = [runtime.CPU], [runtime.CUDA, runtime.CPU]
    choice = dm.choose_default(cpu_flags=VNNI, providers=cpu)
    assert (choice.model, choice.fallback, choice.note) == (INT8, FLOAT, None)
    exact = dm.choose_default(cpu_flags=NO_VNNI, providers=cpu)
    assert (exact.model, exact.fallback, exact.note) == (INT8, FLOAT, None)
    assert "AVX2" in exact.reason and "dot products" in choice.reason
    slow = dm.choose_default(cpu_flags=NO_AVX2, providers=cpu)
    assert slow.model == FLOAT and slow.note and "avx512_vnni" in slow.note
    assert "avx2" in slow.note
    assert dm.choose_default(cpu_flags=VNNI, providers=cuda).model == FLOAT  # fp32 on GPU
    torch = ModelOptions(backend="torch")
    assert dm.choose_default(torch, cpu_flags=VNNI, providers=cpu).model == FLOAT
    monkeypatch.setenv(runtime.DEVICE_ENV, "cpu")
    assert dm.choose_default(cpu_flags=VNNI, providers=cuda).model == INT8
    monkeypatch.setenv(dm.DEFAULT_MODEL_ENV, "raw-pixels")
    assert dm.choose_default(cpu_flags=VNNI, providers=cpu).model == "raw-pixels"


def test_default_without_the_calibration_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    from lookalike.models import calibration

    monkeypatch.setattr(calibration, "calibration_available", lambda: False)
    choice = dm.choose_default(cpu_flags=VNNI, providers=[runtime.CPU])
    assert choice.model == FLOAT
    assert choice.note and "lookalike[int8]" in choice.note and "~1.3-2x" in choice.note
    exact = dm.choose_default(cpu_flags=NO_VNNI, providers=[runtime.CPU])
    assert exact.model == FLOAT and exact.note and "~1.1-1.3x" in exact.note


@pytest.mark.slow
def test_default_falls_back_to_fp32_when_int8_fails_its_check(
    monkeypatch: pytest.MonkeyPatch, db: Path, photos: dict[str, Path]
) -> None:
    """The int8 graph straying from the float network (as it might on another CPU): one
    clear warning, fp32 used, and the collection records fp32."""
    monkeypatch.setattr(
        dm, "choose_default", lambda *_a, **_k: dm.DefaultChoice(INT8, "test", FLOAT)
    )
    from lookalike.models import int8

    monkeypatch.setattr(int8, "MIN_MEAN_COSINE", 1.01)  # no graph can pass
    monkeypatch.setattr(int8.Int8FeatureModel, "onnx_path", lambda self: None)  # not cached
    with pytest.warns(dm.DefaultModelWarning) as caught, Collection.open(db, create=True) as col:
        report = col.index([photos["astronaut"]])
    (warning,) = [w for w in caught if issubclass(w.category, dm.DefaultModelWarning)]
    text = str(warning.message)
    assert "strays from the float network" in text and f"using {FLOAT} (fp32)" in text
    assert "\n" not in text
    assert report.model == FLOAT and report.added == 1


@pytest.mark.slow
def test_a_failed_int8_check_is_remembered_per_machine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, photos: dict[str, Path]
) -> None:
    """The second new collection falls back at once (no build), with the same one-line
    warning; LOOKALIKE_RETRY_BUILD=1 builds and checks again; a change in what the
    check depends on (here its thresholds) is a new key, so it is tried again."""
    from lookalike.models import build_memory, int8

    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))  # a machine of its own
    monkeypatch.setattr(
        dm, "choose_default", lambda *_a, **_k: dm.DefaultChoice(INT8, "test", FLOAT)
    )
    monkeypatch.setattr(int8, "MIN_MEAN_COSINE", 1.01)  # no graph can pass
    monkeypatch.setattr(int8.Int8FeatureModel, "onnx_path", lambda self: None)

    def new_collection(name: str) -> tuple[str, int]:
        """(the fallback warning, int8 graphs built) for a new collection's first index."""
        before = onnx_backend.export_count
        with (
            pytest.warns(dm.DefaultModelWarning) as caught,
            Collection.open(tmp_path / name, create=True) as col,
        ):
            assert col.index([photos["astronaut"]]).model == FLOAT
        (warning,) = [w for w in caught if issubclass(w.category, dm.DefaultModelWarning)]
        text = str(warning.message)
        assert "strays from the float network" in text and f"using {FLOAT} (fp32)" in text
        assert "\n" not in text
        # Each int8 build exports the float graph once; fp32 itself reuses the cache.
        return text, onnx_backend.export_count - before

    _, built = new_collection("first")
    assert built >= 1
    (record,) = (tmp_path / "cache" / build_memory.FOLDER).glob("*.json")
    assert "strays" in json.loads(record.read_text())["reason"]

    text, built = new_collection("second")
    assert built == 0 and "failed before on this machine" in text
    assert build_memory.RETRY_ENV in text

    monkeypatch.setenv(build_memory.RETRY_ENV, "1")
    _, built = new_collection("retried")
    assert built >= 1
    monkeypatch.delenv(build_memory.RETRY_ENV)

    monkeypatch.setattr(int8, "MIN_MEAN_COSINE", 1.02)  # what the check depends on changed
    _, built = new_collection("changed")
    assert built >= 1
    assert len(list((tmp_path / "cache" / build_memory.FOLDER).glob("*.json"))) == 2


def test_a_remembered_int8_failure_is_the_default_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """After a failed int8 build is remembered here, `lookalike models` marks fp32 as the
    default, as new collections then get, and the note says how to retry."""
    from click.testing import CliRunner

    from lookalike.cli import cli
    from lookalike.models import build_memory

    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))  # a machine of its own
    monkeypatch.setattr(runtime, "available_providers", lambda: [runtime.CPU])
    monkeypatch.setattr(runtime, "int8_is_fast", lambda *_a: True)

    def marked_default() -> str:
        result = CliRunner().invoke(cli, ["models", "--json"])
        assert result.exit_code == 0, result.output
        (row,) = [r for r in json.loads(result.output) if r["default"]]
        return str(row["name"])

    assert dm.choose_default().model == INT8 and marked_default() == INT8
    from lookalike.models import efficientnet_lite

    # Built without its network: building it would cache a working graph, no failure.
    probe = efficientnet_lite.create(FLOAT, ModelOptions(), int8=True, build=False)
    key = probe._memory_key()  # type: ignore[attr-defined]
    assert not (tmp_path / "cache" / "onnx").exists()  # `models` built nothing either
    build_memory.remember(key, f"{INT8}: int8 vectors stray from the float network")

    choice = dm.choose_default()
    assert (choice.model, choice.fallback) == (FLOAT, None)
    assert choice.note and "failed before on this machine" in choice.note
    assert build_memory.RETRY_ENV in choice.note and f"using {FLOAT} (fp32)" in choice.note
    assert marked_default() == FLOAT
    # Another pooling is another build, not the one that failed.
    assert dm.choose_default(ModelOptions(pool="avg")).model == INT8
    monkeypatch.setenv(build_memory.RETRY_ENV, "1")
    assert dm.choose_default().model == INT8


def test_build_memory_ignores_damaged_or_foreign_records(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lookalike.models import build_memory

    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path))
    parts = {"model": "m", "onnxruntime": "1.0"}
    assert build_memory.recall(parts) is None
    build_memory.remember(parts, "it broke")
    assert build_memory.recall(parts) == "it broke"
    assert build_memory.recall({**parts, "onnxruntime": "1.1"}) is None
    build_memory.record_path(parts).write_text("{not json")
    assert build_memory.recall(parts) is None
    build_memory.remember(parts, "it broke")
    monkeypatch.setenv(build_memory.RETRY_ENV, "1")
    assert build_memory.recall(parts) is None
    assert not build_memory.record_path(parts).exists()


def test_default_as_chosen_is_what_a_new_collection_gets(
    monkeypatch: pytest.MonkeyPatch, db: Path, photos: dict[str, Path]
) -> None:
    monkeypatch.setenv(dm.DEFAULT_MODEL_ENV, "raw-pixels")
    with warnings.catch_warnings(), Collection.open(db, create=True) as col:
        warnings.simplefilter("error")
        assert col.index([photos["astronaut"]]).model == "raw-pixels"


# ----- what info and models say ------------------------------------------------------------


def test_models_and_info_say_precision_and_runtime(
    cli_json: Any, db: Path, photos: dict[str, Path]
) -> None:
    models = {m["name"]: m for m in cli_json("models")}
    assert models[INT8]["precision"] == "int8" and models[FLOAT]["precision"] == "fp32"
    assert models["raw-pixels"]["runtime"] == "numpy"
    assert models[FLOAT]["runtime"].startswith("onnxruntime-")
    assert [name for name, m in models.items() if m["default"]] == [dm.choose_default().model]
    cli_json("index", photos["astronaut"], "--db", db, "--model", "raw-pixels")
    info = cli_json("info", "--db", db)
    assert (info["precision"], info["runtime"]) == ("fp32", "numpy")


def test_info_of_an_int8_collection(cli: Any, db: Path, photos: dict[str, Path]) -> None:
    with Collection.open(db, model=INT8, create=True) as col:
        col.index([photos["astronaut"]])
    result = cli("info", "--db", db)
    assert result.exit_code == 0
    assert "precision   int8, run by onnxruntime-cpu here" in result.stdout


def test_web_info_says_precision_and_runtime_as_the_cli_does(
    cli_json: Any, db: Path, photos: dict[str, Path]
) -> None:
    from fastapi.testclient import TestClient

    from lookalike.web.app import create_app

    with Collection.open(db, model=INT8, create=True) as col:
        col.index([photos["astronaut"]])
    cli_info = cli_json("info", "--db", db)
    with TestClient(create_app(db, warm_up=False)) as client:
        web_info = client.get("/api/info").json()
    assert (web_info["precision"], web_info["runtime"]) == ("int8", "onnxruntime-cpu")
    assert {k: web_info[k] for k in ("precision", "runtime", "model", "count")} == {
        k: cli_info[k] for k in ("precision", "runtime", "model", "count")
    }


def test_an_int8_collection_where_int8_cannot_be_built_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, db: Path, photos: dict[str, Path]
) -> None:
    """Copied to a machine without the calibration photos' packages (and no cached graph):
    searching with a new image says what to pip install."""
    with Collection.open(db, model=INT8, create=True) as col:
        col.index([photos["astronaut"]])
    from lookalike.models import calibration, int8

    monkeypatch.setattr(int8.Int8FeatureModel, "onnx_path", lambda self: None)
    monkeypatch.setattr(calibration, "PACKAGES", {"lookalike_no_such_module": "scikit-image"})
    with Collection.open(db) as col, pytest.raises(ModelError, match="pip install scikit-image"):
        col.search([photos["chelsea"]], k=1)
