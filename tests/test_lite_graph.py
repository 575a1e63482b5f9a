"""EfficientNet-Lite without PyTorch: the checkpoint reader, and the graph built from it is
the same network as today's PyTorch export (real photos, real weights; torch is the
reference here only, from the dev set-up)."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import Result
from PIL import Image

from lookalike.errors import ModelError
from lookalike.images import load_image
from lookalike.models import ModelOptions, create_embedder, onnx_backend, torch_extra
from lookalike.models import efficientnet_lite as el
from lookalike.models.calibration import source_photos
from lookalike.models.checkpoint import load_state_dict
from lookalike.models.lite_graph import build_graph, same_padding
from lookalike.models.lite_model import LiteFeatureModel
from lookalike.models.onnx_backend import TorchFeatureModel, make_session

LITE = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")

torch = pytest.importorskip("torch")  # the reference (dev extra); the code under test needs none


# --- the checkpoint reader ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_reads_the_same_tensors_as_torch(fmt: str, tmp_path: Path) -> None:
    path = el.weights_path("efficientnet-lite0")  # shipped in the legacy format
    want = torch.load(str(path), map_location="cpu", weights_only=True)
    if fmt == "zip":
        path = tmp_path / "lite0.pth"
        torch.save(want, path)  # today's torch.save format
        assert zipfile.is_zipfile(path)
    got = load_state_dict(path)
    assert list(got) == list(want)
    for key, tensor in want.items():
        assert got[key].shape == tuple(tensor.shape), key
        assert got[key].dtype == tensor.numpy().dtype, key
        assert np.array_equal(got[key], tensor.numpy()), key


def test_a_strided_view_is_read_as_its_values(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    path = tmp_path / "views.pth"
    torch.save({"t": base.t(), "row": base[2], "scalar": torch.tensor(7)}, path)
    got = load_state_dict(path)
    assert np.array_equal(got["t"], base.t().numpy())
    assert np.array_equal(got["row"], base[2].numpy())
    assert got["scalar"].shape == () and int(got["scalar"]) == 7


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/lookalike-pwned",))


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_refuses_any_other_global(fmt: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payload = pickle.dumps({"w": _Evil()}).replace(b"/tmp/lookalike-pwned", str(marker).encode())
    path = tmp_path / "evil.pth"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("evil/data.pkl", payload)
    else:
        head = b"".join(
            pickle.dumps(x) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})
        )
        path.write_bytes(head + payload)
    with pytest.raises(ModelError, match=r"cannot read weights file .*evil\.pth.*refusing global"):
        load_state_dict(path)
    assert not marker.exists()


def test_junk_and_truncated_files_are_one_line_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights file"):
        load_state_dict(junk)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(el.weights_path("efficientnet-lite0").read_bytes()[:1_000_000])
    with pytest.raises(ModelError, match="cannot read weights file") as info:
        load_state_dict(cut)
    assert "\n" not in str(info.value)


# --- the graph -----------------------------------------------------------------------------


def test_tf_same_padding_is_asymmetric_on_stride_2() -> None:
    assert same_padding(224, 3, 2) == [0, 0, 1, 1]  # what ZeroPad2d((0, 1, 0, 1)) does
    assert same_padding(15, 5, 2) == [2, 2, 2, 2]
    assert same_padding(28, 5, 1) == [2, 2, 2, 2]
    assert same_padding(7, 1, 1) == [0, 0, 0, 0]


def test_grid_cells_tile_the_map_edge_to_edge() -> None:
    from lookalike.models.pooling import grid_cells

    # (kernel, stride): 3 windows per side, the first at row 0, the last ending at the edge.
    assert grid_cells(7) == (3, 2)  # lite0 at 224: rows 0-2, 2-4, 4-6
    assert grid_cells(8) == (4, 2)  # lite1 at 240: 0-3, 2-5, 4-7
    assert grid_cells(9) == (3, 3)  # lite2 at 260: 0-2, 3-5, 6-8
    for side in range(3, 20):
        kernel, stride = grid_cells(side)
        assert 2 * stride + kernel == side


def test_grid_features_are_the_gem_of_each_cell() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    fmap = rng.uniform(-1, 3, size=(2, 4, 7, 7)).astype(np.float32)
    got = onnx_backend.grid_features(torch.from_numpy(fmap)).numpy()
    want = np.zeros((2, 4, 3, 3))
    for i, top in enumerate((0, 2, 4)):
        for j, left in enumerate((0, 2, 4)):
            cell = np.clip(fmap[:, :, top : top + 3, left : left + 3], 1e-6, None)
            want[:, :, i, j] = (cell.astype(np.float64) ** 3).mean(axis=(2, 3)) ** (1 / 3)
    assert got.shape == (2, 36)
    np.testing.assert_allclose(got, want.reshape(2, 36), rtol=1e-5)


def _torch_export(name: str, pool: str) -> TorchFeatureModel:
    """Today's export (torch.onnx of the efficientnet_lite_pytorch network), not cached."""
    ours: Any = create_embedder(name, ModelOptions(pool=pool))  # a LiteFeatureModel
    info = dataclasses.replace(ours.info, weights_id="none")  # "none": nothing is cached
    weights = el.weights_path(name)

    def factory() -> Any:
        network = el.build_network(name, weights)
        if pool in ("gem-2stage", "gem-grid"):
            return el.two_stage_module(network, grid=pool == "gem-grid")
        return onnx_backend.pooled_features(network, pool, "extract_features")

    return TorchFeatureModel(
        info, factory, ours.preprocess, ModelOptions(pool=pool, backend="onnx")
    )


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return list(source_photos())  # 13 real photos bundled with scikit-image/scikit-learn


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "pool"),
    [(n, "avg") for n in LITE]
    + [("efficientnet-lite0", "gem"), ("efficientnet-lite0", "gem-2stage")]
    + [("efficientnet-lite2", "gem-2stage")]  # its last block is 352-ch wide
    + [("efficientnet-lite0", "gem-grid"), ("efficientnet-lite2", "gem-grid")],  # 7x7, 9x9 maps
)
def test_same_vectors_as_the_torch_export(name: str, pool: str, photos: list[Image.Image]) -> None:
    reference = _torch_export(name, pool)
    ours: Any = create_embedder(name, ModelOptions(pool=pool))
    built = LiteFeatureModel(
        dataclasses.replace(ours.info, weights_id="none"),  # export afresh, bypass the cache
        lambda: pytest.fail("the PyTorch-free model built a torch module"),
        ours.preprocess,
        ModelOptions(pool=pool, backend="onnx"),
        variant=name,
        weights=el.weights_path(name),
    )
    assert built.backend == "onnx" and reference.backend == "onnx"
    want = reference.embed_images(photos)
    got = built.embed_images(photos)
    cosine = (want * got).sum(axis=1)
    assert got.shape[1] == el.feature_dim(name, pool) == ours.info.dim
    assert cosine.min() >= 0.99999, cosine
    # The same identity as before: existing collections and cached graphs stay valid.
    assert built.info.identity() == dataclasses.replace(ours.info, weights_id="none").identity()


@pytest.mark.slow
@pytest.mark.parametrize("name", LITE)
def test_imagenet_top1_through_the_built_graph(name: str) -> None:
    from test_efficientnet_lite import imagenet_photos

    pre = el.preprocess_for(name)
    graph = build_graph(name, load_state_dict(el.weights_path(name)), "avg", pre.affine, True)
    session = make_session(graph, 2)
    labelled = imagenet_photos()
    pixels = np.stack([pre.pixels(load_image(path)) for path, _ in labelled])
    predicted = session.run(None, {"pixels": pixels})[0].argmax(1)
    correct = sum(int(p == label) for p, (_, label) in zip(predicted, labelled, strict=True))
    assert correct >= 17, f"{name}: {correct}/20 correct"


def test_weights_of_another_variant_are_refused() -> None:
    state = load_state_dict(el.weights_path("efficientnet-lite1"))
    with pytest.raises(ModelError, match="does not hold efficientnet-lite0 weights"):
        build_graph(
            "efficientnet-lite0", state, "avg", el.preprocess_for("efficientnet-lite0").affine
        )
    del state["_blocks.3._bn1.running_var"]
    with pytest.raises(ModelError, match=r"missing _blocks\.3\._bn1\.running_var"):
        build_graph(
            "efficientnet-lite1", state, "avg", el.preprocess_for("efficientnet-lite1").affine
        )


# --- no torch on the default path ------------------------------------------------------------


def test_first_export_and_embedding_never_import_torch(tmp_path: Path) -> None:
    """A fresh cache: the default model's graph is built and used without importing torch."""
    code = HIDE_TORCH + (
        "import sys; from PIL import Image;"
        "import lookalike.models as m, lookalike.models.onnx_backend as b;"
        "e = m.create_embedder('efficientnet-lite0');"
        "v = e.embed_images([Image.new('RGB', (300, 200), (200, 40, 10))]);"
        "assert b.export_count == 1 and e.backend == 'onnx' and v.shape == (1, 1280);"
        "print(sorted(k for k in ('torch', 'efficientnet_lite_pytorch') if k in sys.modules))"
    )
    env = {**os.environ, "LOOKALIKE_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]"
    assert list((tmp_path / "cache" / "onnx").glob("efficientnet-lite0-gem-*.onnx"))  # the default


def test_torch_backend_without_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_extra, "torch_available", lambda: False)
    with pytest.raises(ModelError, match=r"needs PyTorch: pip install 'lookalike\[torch\]'"):
        create_embedder("efficientnet-lite0", ModelOptions(backend="torch"))
    # The default backend does not need it.
    default: Any = create_embedder("efficientnet-lite0")
    assert default.backend == "onnx"


def test_fit_without_torch_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    monkeypatch.setattr(torch_extra, "torch_available", lambda: False)
    (tmp_path / "data" / "a").mkdir(parents=True)
    result = cli("fit", tmp_path / "data", "--out", tmp_path / "a.npz")
    assert result.exit_code == 1
    assert "lookalike fit --kind mlp needs PyTorch: pip install 'lookalike[torch]'" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not (tmp_path / "a.npz").exists()


# Python code making torch unfindable, as in an install without it: the path finder is
# wrapped so that find_spec("torch") is None (ONNX Runtime's tools ask, and import it if found).
HIDE_TORCH = """
import sys, importlib.machinery as mach
class Hide:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            return None
        return mach.PathFinder.find_spec(name, path, target)
    @classmethod
    def invalidate_caches(cls):
        mach.PathFinder.invalidate_caches()
    @classmethod
    def find_distributions(cls, *args, **kwargs):  # importlib.metadata asks this
        return mach.PathFinder.find_distributions(*args, **kwargs)
sys.meta_path[:] = [Hide if f is mach.PathFinder else f for f in sys.meta_path]
import importlib.util; assert importlib.util.find_spec("torch") is None
"""


@pytest.mark.slow
def test_int8_model_builds_where_torch_cannot_be_imported(tmp_path: Path) -> None:
    """Fresh cache, torch made unimportable: float graph, calibration, quantisation and the
    int8-vs-float check all run without it."""
    code = HIDE_TORCH + (
        "import lookalike.models as m;"
        "e = m.create_embedder('efficientnet-lite0-int8');"
        "print(e.backend, e.onnx_path().name, 'torch' in sys.modules)"
    )
    env = {**os.environ, "LOOKALIKE_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    backend, name, imported = out.stdout.split()
    assert backend == "onnx" and imported == "False"
    assert (tmp_path / "cache" / "onnx" / name).is_file()
