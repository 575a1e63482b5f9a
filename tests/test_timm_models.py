"""The reports' CNNs and `timm:<name>`: configs, shapes, normalisation, ONNX vs PyTorch, and
where weights come from (pretrained weights cannot be downloaded here: random ones are built
explicitly, tiny `test_resnet` checkpoints are written to disk for the lookup order)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import ModelError, WeightsNotFoundError
from lookalike.models import ModelOptions, create_embedder, get_entry, list_models
from lookalike.models.timm_models import NAMED, TimmModel, create, resolve_timm
from lookalike.models.timm_weights import RANDOM, RANDOM_ENV, WEIGHTS_DIR_ENV
from lookalike.models.weights import weights_id
from lookalike.vectors import l2_normalize

timm = pytest.importorskip("timm")
torch = pytest.importorskip("torch")

TINY = "timm:test_resnet"  # a 0.5M-parameter ResNet that timm ships for tests


@pytest.fixture(autouse=True)
def _no_weights_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Empty Hugging Face / torch hub caches, no weights dir, no download, no random."""
    from huggingface_hub import constants

    hf = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for env in (WEIGHTS_DIR_ENV, RANDOM_ENV, "LOOKALIKE_DOWNLOAD"):
        monkeypatch.delenv(env, raising=False)
    yield hf


@pytest.fixture
def allow_random(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RANDOM_ENV, "1")
    warnings.filterwarnings("ignore", message=".*RANDOM weights.*", category=RuntimeWarning)


def grey_image(value: int, size: tuple[int, int] = (90, 70)) -> Image.Image:
    return Image.new("RGB", size, (value, value, value))


def noise_images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)) for _ in range(n)]


# ----- configs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_config_matches_timm(name: str) -> None:
    """The configs written in timm_models (so no import is needed) are timm's own."""
    spec = NAMED[name]
    cfg = timm.models.get_pretrained_cfg(spec.timm_name).to_dict()
    assert cfg["input_size"] == (3, spec.input_size, spec.input_size)
    assert cfg["crop_pct"] == pytest.approx(spec.crop_pct)
    assert cfg["crop_mode"] == "center"
    assert cfg["interpolation"] == spec.interpolation
    assert tuple(cfg["mean"]) == pytest.approx(spec.mean)
    assert tuple(cfg["std"]) == pytest.approx(spec.std)
    assert cfg["hf_hub_id"] == spec.hf_hub_id
    assert (cfg.get("url") or "") == spec.url
    with torch.device("meta"):
        network = timm.create_model(spec.timm_name, num_classes=0)
        out = network.forward_features(torch.empty(1, 3, spec.input_size, spec.input_size))
    assert out.shape[1] == spec.dim == get_entry(name).dim


def test_models_lists_the_reports_three_with_weights_missing_here() -> None:
    rows = {m.name: m for m in list_models()}
    for name, dim in (("vgg16", 512), ("resnet101v2", 2048), ("inception-resnet-v2", 1536)):
        assert rows[name].dim == dim
        assert rows[name].weights_available() is False
    assert rows["inception-resnet-v2"].input_size == 299


def test_timm_name_resolves_config_and_dimension() -> None:
    spec = resolve_timm("timm:test_resnet")
    assert (spec.name, spec.timm_name, spec.dim, spec.input_size) == (
        "timm:test_resnet",
        "test_resnet.r160_in1k",
        96,
        160,
    )
    assert spec.hf_hub_id == "timm/test_resnet.r160_in1k" and spec.features == "map"
    vit = resolve_timm("timm:test_vit")
    assert vit.features == "head" and vit.dim == 64  # tokens: timm's own pooling


def test_unknown_timm_name_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="unknown timm model 'no_such_net'"):
        create_embedder("timm:no_such_net")


# ----- building with random weights (explicitly) --------------------------------------------


def test_random_weights_are_never_silent() -> None:
    with pytest.raises(WeightsNotFoundError) as err:
        create_embedder("vgg16")
    message = str(err.value)
    for place in ("--weights", WEIGHTS_DIR_ENV, "Hugging Face cache", "timm/vgg16.tv_in1k"):
        assert place in message
    assert "LOOKALIKE_DOWNLOAD=1" in message and "\n" not in message


def test_random_weights_warn_and_are_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RANDOM_ENV, "1")
    with pytest.warns(RuntimeWarning, match="RANDOM weights"):
        embedder = create_embedder(TINY)
    assert embedder.info.weights_id == RANDOM
    assert embedder.info.identity()["weights"] == "random"
    # Their graph is never cached: another random build must not reuse it.
    assert embedder.onnx_path() is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "size"),
    [("vgg16", 64), ("resnet50", 64), ("resnet101v2", 64), ("inception-resnet-v2", 96)],
)
def test_named_models_build_with_random_weights(allow_random: None, name: str, size: int) -> None:
    """Shapes and unit norms, at a small input size (PyTorch: exporting big nets is slow)."""
    embedder = create(NAMED[name], ModelOptions(backend="torch"), input_size=size)
    vectors = embedder.embed_images(noise_images(2))
    assert vectors.shape == (2, NAMED[name].dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors.flags.c_contiguous
    assert embedder.info.preprocessing["timm"] == NAMED[name].timm_name


@pytest.mark.parametrize(("name", "pool"), [("vgg16", "avg"), ("resnet50", "gem")])
def test_onnx_agrees_with_pytorch(allow_random: None, name: str, pool: str) -> None:
    embedder = create(NAMED[name], ModelOptions(pool=pool, backend="onnx"), input_size=64)
    assert embedder.backend == "onnx"
    batch = [embedder.prepare(im) for im in noise_images(3)]
    got = embedder.embed_prepared(batch)
    with torch.inference_mode():
        want = embedder.network()(torch.from_numpy(np.stack(batch))).numpy()
    assert np.abs(got - l2_normalize(want)).max() < 1e-4


def test_token_model_runs_through_onnx(allow_random: None) -> None:
    embedder = create_embedder("timm:test_vit", ModelOptions(backend="onnx"))
    assert embedder.backend == "onnx"  # type: ignore[attr-defined]
    vectors = embedder.embed_images(noise_images(2))
    assert vectors.shape == (2, 64)
    with pytest.raises(ModelError, match="only --pool avg"):
        create_embedder("timm:test_vit", ModelOptions(pool="gem"))


def test_preprocessing_normalises_with_the_checkpoint_statistics(allow_random: None) -> None:
    """A flat grey image gives (v/255 - mean)/std per channel: mean/std/scale are right."""
    for name in ("vgg16", "inception-resnet-v2"):
        spec = NAMED[name]
        prep = spec.preprocess()
        x = prep(grey_image(200))
        assert x.shape == (3, spec.input_size, spec.input_size)
        want = (200 / 255 - np.array(spec.mean)) / np.array(spec.std)
        assert np.allclose(x.reshape(3, -1).mean(axis=1), want, atol=1e-4)
        assert prep.draft_size == pytest.approx(spec.input_size / spec.crop_pct, abs=1)


# ----- where the weights come from ----------------------------------------------------------


def save_checkpoint(path: Path, seed: int) -> Any:
    """A full test_resnet (classifier included, as published) with seeded weights."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    network = timm.create_model("test_resnet", pretrained=False).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    return network


def reference_features(network: Any, embedder: object, images: list[Any]) -> np.ndarray:
    preprocess = embedder.preprocess  # type: ignore[attr-defined]
    batch = np.stack([preprocess(im) for im in images])
    with torch.inference_mode():
        fmap = network.forward_features(torch.from_numpy(batch))
    return l2_normalize(fmap.mean((2, 3)).numpy())


def test_weights_file_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "mine.safetensors"
    network = save_checkpoint(path, seed=1)
    embedder = create_embedder(TINY, ModelOptions(weights=path))
    assert embedder.info.weights_id == weights_id(path)
    images = noise_images(2, seed=3)
    got = embedder.embed_images(images)
    assert np.abs(got - reference_features(network, embedder, images)).max() < 1e-4


def test_lookup_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _no_weights_anywhere: Path
) -> None:
    """--weights, then LOOKALIKE_WEIGHTS_DIR, then the Hugging Face cache."""
    from lookalike.models.timm_weights import find_weights

    spec = resolve_timm(TINY).weights_spec()
    hf_snapshot = _no_weights_anywhere / "models--timm--test_resnet.r160_in1k"
    (hf_snapshot / "refs").mkdir(parents=True)
    (hf_snapshot / "refs" / "main").write_text("abc123")
    save_checkpoint(hf_snapshot / "snapshots" / "abc123" / "model.safetensors", seed=2)
    found = find_weights(spec)
    assert found.source == "huggingface cache"
    assert get_entry("resnet50").weights_available() is False  # other models: still none

    weights_dir = tmp_path / "weights"
    save_checkpoint(weights_dir / "test_resnet.r160_in1k.safetensors", seed=4)
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(weights_dir))
    assert find_weights(spec).source == WEIGHTS_DIR_ENV

    explicit = tmp_path / "explicit.safetensors"
    save_checkpoint(explicit, seed=5)
    assert find_weights(spec, explicit).path == explicit
    with pytest.raises(WeightsNotFoundError, match="not found"):
        find_weights(spec, tmp_path / "missing.safetensors")


def test_weights_dir_makes_a_named_model_available(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "vgg16.safetensors").write_bytes(b"placeholder")
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    assert get_entry("vgg16").weights_available() is True
    assert get_entry("resnet101v2").weights_available() is False


def test_wrong_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"conv.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(ModelError, match=r"cannot load test_resnet\.r160_in1k weights"):
        create_embedder(TINY, ModelOptions(weights=path, backend="torch"))


def test_download_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub

    calls: list[tuple[str, str]] = []
    fetched = tmp_path / "fetched.safetensors"
    save_checkpoint(fetched, seed=6)

    def fake_download(repo_id: str, filename: str) -> str:
        calls.append((repo_id, filename))
        return str(fetched)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(WeightsNotFoundError):
        create_embedder(TINY)
    assert calls == []  # never on its own

    monkeypatch.setenv("LOOKALIKE_DOWNLOAD", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="HF_HUB_OFFLINE"):
        create_embedder(TINY)
    assert calls == []

    monkeypatch.delenv("HF_HUB_OFFLINE")
    embedder = create_embedder(TINY, ModelOptions(backend="torch"))
    assert calls == [("timm/test_resnet.r160_in1k", "model.safetensors")]
    assert embedder.info.weights_id == weights_id(fetched)
    assert "downloading timm:test_resnet weights" in capsys.readouterr().err


def test_spec_preprocess_override_keeps_the_recipe() -> None:
    spec = TimmModel("x", "x.y", 8, 224, 0.9, "bilinear", (0.1, 0.2, 0.3), (1.0, 1.0, 1.0))
    prep = spec.preprocess(32)
    assert (prep.size, prep.crop_fraction, prep.resample) == (32, 0.9, "bilinear")
