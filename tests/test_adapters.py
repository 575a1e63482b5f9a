"""Adapters: the file format, learning (linear, mlp, pca), reproducibility, the folder fit that
reuses cached vectors, and collections that record their adapter and refuse another."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from PIL import Image

from conftest import COUNTING_MODEL, EmbedLog
from lookalike.adapters import (
    AdaptedEmbedder,
    Adapter,
    AdapterError,
    apply_adapter,
    load_adapter,
)
from lookalike.collection import Collection
from lookalike.errors import ModelMismatchError
from lookalike.fitting import FitOptions, LabelledVectors, fit_folder, fit_vectors, precision_at_k
from lookalike.models import create_embedder
from lookalike.models.pixels import RawPixelsEmbedder
from lookalike.vectors import l2_normalize

IDENTITY = RawPixelsEmbedder().info.identity()


def random_adapter(seed: int = 0, dims: tuple[int, ...] = (768, 32, 8)) -> Adapter:
    rng = np.random.default_rng(seed)
    layers = [
        (rng.standard_normal((a, b)).astype(np.float32), rng.standard_normal(b).astype(np.float32))
        for a, b in itertools.pairwise(dims)
    ]
    return Adapter("mlp", layers, model=IDENTITY, meta={"seed": seed})


def clustered(n_per_class: int, seed: int = 0) -> LabelledVectors:
    """3 classes told apart by 3 of 64 dimensions; the other 61 are louder noise, so raw
    cosine neighbours are poor and a learnt projection can do much better."""
    rng = np.random.default_rng(seed)  # the seed draws the noise; the classes are fixed
    centres = np.zeros((3, 64), dtype=np.float32)
    centres[:, :3] = np.eye(3) * 2.0
    labels = np.repeat(np.arange(3), n_per_class)
    noise = rng.standard_normal((len(labels), 64)).astype(np.float32)
    noise[:, :3] *= 0.3
    vectors = centres[labels] + noise
    return LabelledVectors(vectors, labels.astype(np.int64), ["a", "b", "c"], IDENTITY)


# ----- file format ------------------------------------------------------------------------


def test_file_roundtrip_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    adapter = random_adapter()
    digest = adapter.save(tmp_path / "a.npz")
    adapter.save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded, loaded_digest = load_adapter(tmp_path / "a.npz")
    assert loaded_digest == digest
    assert (loaded.kind, loaded.dim_in, loaded.dim_out, loaded.model) == ("mlp", 768, 8, IDENTITY)
    x = np.random.default_rng(1).standard_normal((5, 768)).astype(np.float32)
    out = loaded.apply(x)
    assert np.array_equal(out, adapter.apply(x))
    assert out.dtype == np.float32 and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    # the same arithmetic by hand: affine, ReLU, affine, normalise
    (w0, b0), (w1, b1) = adapter.layers
    hand = np.maximum(x @ w0 + b0, 0) @ w1 + b1
    assert np.allclose(out, hand / np.linalg.norm(hand, axis=1, keepdims=True), atol=1e-5)


def test_unreadable_files_are_adapter_errors(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="lookalike fit"):
        load_adapter(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(AdapterError, match="not a lookalike adapter"):
        load_adapter(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(AdapterError, match="not a lookalike adapter"):
        load_adapter(tmp_path / "other.npz")


def test_layers_must_chain() -> None:
    with pytest.raises(AdapterError, match="do not chain"):
        Adapter("linear", [(np.zeros((4, 3), np.float32), np.zeros(2, np.float32))], IDENTITY)


# ----- learning ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "loss"), [("linear", "supcon"), ("mlp", "supcon")])
def test_supervised_adapter_pulls_classes_together(kind: str, loss: str) -> None:
    data = clustered(400)
    options = FitOptions(kind=kind, loss=loss, dim=8, epochs=10, hidden=32, val_fraction=0.25)
    adapter, report = fit_vectors(data, options)
    assert report.val_images == 300 and report.train_images == 900
    assert report.val_precision_before is not None and report.val_precision_after is not None
    assert report.val_precision_before < 0.7
    assert report.val_precision_after > 0.9
    assert adapter.dim_out == 8 and len(adapter.layers) == (1 if kind == "linear" else 2)
    assert len(report.history) == 10 and report.history[-1]["loss"] < report.history[0]["loss"]
    # a new draw from the same classes, never seen in training, improves as much
    fresh = clustered(200, seed=1)
    before = precision_at_k(l2_normalize(fresh.vectors), fresh.labels)
    assert precision_at_k(adapter.apply(fresh.vectors), fresh.labels) > max(0.9, before + 0.25)


def test_softmax_loss_trains_too() -> None:
    options = FitOptions(loss="softmax", dim=8, epochs=10, val_fraction=0.25)
    _, report = fit_vectors(clustered(400), options)
    assert report.val_precision_after is not None and report.val_precision_before is not None
    assert report.val_precision_after > report.val_precision_before + 0.05


def test_same_seed_same_adapter_other_seed_other_adapter() -> None:
    data = clustered(60)
    options = FitOptions(dim=8, epochs=3)
    first, _ = fit_vectors(data, options)
    again, _ = fit_vectors(data, options)
    other, _ = fit_vectors(data, FitOptions(dim=8, epochs=3, seed=1))
    assert first.to_bytes() == again.to_bytes()
    assert first.to_bytes() != other.to_bytes()


def test_pca_whitening_decorrelates_and_needs_no_labels() -> None:
    data = clustered(200)
    data.labels[:] = -1  # an unlabelled folder
    adapter, report = fit_vectors(data, FitOptions(kind="pca", dim=16, val_fraction=0.0))
    assert report.classes == 3 and report.epochs == 0 and report.val_precision_after is None
    ((w, b),) = adapter.layers
    z = l2_normalize(data.vectors) @ w + b
    cov = np.cov(z, rowvar=False)
    assert np.abs(z.mean(axis=0)).max() < 1e-3
    # whitened up to the variance floor: unit variances, no correlations
    assert np.allclose(np.diag(cov)[:4], 1.0, atol=0.05)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-3


def test_supervised_kinds_need_two_classes() -> None:
    data = clustered(20)
    data.labels[:] = 0
    data.classes = ["a"]
    with pytest.raises(AdapterError, match="at least 2 class folders"):
        fit_vectors(data, FitOptions())


# ----- folders, collections and the CLI ---------------------------------------------------


def write_classes(root: Path, per_class: int = 12) -> Path:
    """Two classes: horizontal vs vertical stripes, random colours and phases."""
    rng = np.random.default_rng(0)
    for cls in ("horizontal", "vertical"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            period = int(rng.integers(6, 12))
            ramp = (np.arange(48) + rng.integers(0, period)) % period < period // 2
            stripes = np.tile(ramp[:, None] if cls == "horizontal" else ramp[None, :], (1, 1))
            mask = np.broadcast_to(stripes, (48, 48))
            colour = rng.integers(0, 256, 3)
            arr = np.where(mask[..., None], colour, 255 - colour) + rng.integers(
                -20, 20, (48, 48, 3)
            )
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_fit_folder_embeds_once_then_reuses_the_vectors(
    tmp_path: Path, counting_model: EmbedLog
) -> None:
    data = write_classes(tmp_path / "data")
    options = FitOptions(dim=8, epochs=5, val_fraction=0.25)
    report = fit_folder(data, tmp_path / "a.npz", COUNTING_MODEL, options=options)
    assert counting_model.count == 24
    assert (report.images, report.classes, report.dim_in, report.dim_out) == (24, 2, 768, 8)
    assert report.val_images == 6 and report.model == COUNTING_MODEL
    lines: list[str] = []
    again = fit_folder(data, tmp_path / "b.npz", COUNTING_MODEL, options=options, log=lines.append)
    assert counting_model.count == 24  # nothing embedded the second time
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert again.sha256 == report.sha256
    assert sum(line.startswith("epoch ") for line in lines) == 5


def test_eval_applies_adapters_to_the_cached_vectors(
    tmp_path: Path, counting_model: EmbedLog
) -> None:
    """Scoring several adapters on one folder embeds it once; scores are those of the
    adapted vectors, and an adapter fit on another model is refused."""
    from lookalike.evaluation.runner import evaluate, nearest

    data = write_classes(tmp_path / "data")
    options = FitOptions(dim=8, epochs=5)
    fit_folder(data, tmp_path / "a.npz", COUNTING_MODEL, options=options)
    assert counting_model.count == 24
    cache = tmp_path / "eval-cache"
    plain = evaluate(data, COUNTING_MODEL, k=5, cache_root=cache)
    adapted = evaluate(data, COUNTING_MODEL, k=5, adapter=tmp_path / "a.npz", cache_root=cache)
    assert counting_model.count == 48 and adapted.embedded == 0  # once for fit, once for eval
    # The neighbours are those of the adapted vectors, as a collection indexed with the
    # adapter stores them.
    with Collection.open(
        tmp_path / "db", model=COUNTING_MODEL, adapter=tmp_path / "a.npz", create=True
    ) as col:
        col.index([data])
        row = {r.path: r.row for r in col.store.iter_records()}
        stored = col.store.matrix()[[row[p] for p in adapted.gallery_paths]]
    expected, _ = nearest(np.asarray(stored), np.asarray(stored), 5, exclude_self=True)
    np.testing.assert_array_equal(adapted.neighbours, expected)
    assert not np.array_equal(plain.neighbours, expected)
    fit_folder(data, tmp_path / "p.npz", "raw-pixels", options=FitOptions(dim=4, epochs=1))
    with pytest.raises(ModelMismatchError, match="fit on 'raw-pixels'"):
        evaluate(data, COUNTING_MODEL, k=5, adapter=tmp_path / "p.npz", cache_root=cache)


def test_collection_records_its_adapter_and_refuses_another(
    tmp_path: Path, counting_model: EmbedLog
) -> None:
    data = write_classes(tmp_path / "data")
    first = fit_folder(
        data, tmp_path / "first.npz", COUNTING_MODEL, options=FitOptions(dim=8, epochs=2)
    )
    second = fit_folder(
        data, tmp_path / "second.npz", COUNTING_MODEL, options=FitOptions(dim=8, epochs=2, seed=7)
    )
    assert first.sha256 != second.sha256
    db = tmp_path / "db"
    with Collection.open(
        db, model=COUNTING_MODEL, adapter=tmp_path / "first.npz", create=True
    ) as col:
        col.index([data])
        assert col.store.dim == 8
        manifest = col.store.manifest
        assert manifest["adapter"]["sha256"] == first.sha256
        assert manifest["adapter"]["path"] == str((tmp_path / "first.npz").absolute())
        assert manifest["model"]["dim"] == 8 and manifest["model"]["model"] == COUNTING_MODEL
        # stored vectors are exactly the adapted vectors of the model
        record = col.store.records(0, 1)[0]
        adapter, _ = load_adapter(tmp_path / "first.npz")
        base = create_embedder(COUNTING_MODEL).embed_images([Image.open(record.path)])
        assert np.allclose(col.store.vectors_for([record.id]), adapter.apply(base), atol=1e-6)

    with Collection.open(db) as col:  # no --adapter: the recorded one is used
        assert isinstance(col.embedder, AdaptedEmbedder)
        assert len(col.search([data / "vertical" / "0.png"], k=3)[0].results) == 3
    # Refused when opened, before any search: stored vectors are searched without the model.
    with pytest.raises(ModelMismatchError, match="built with adapter"):
        Collection.open(db, adapter=tmp_path / "second.npz")
    # Same content elsewhere is the same adapter: moving the file does not orphan the db.
    moved = tmp_path / "moved.npz"
    shutil.copy(tmp_path / "first.npz", moved)
    with Collection.open(db, adapter=moved) as col:
        assert col.index([data]).unchanged == 24


def test_collection_without_adapter_refuses_one(tmp_path: Path) -> None:
    data = write_classes(tmp_path / "data", per_class=4)
    fit_folder(data, tmp_path / "a.npz", "raw-pixels", options=FitOptions(dim=4, epochs=1))
    with Collection.open(tmp_path / "db", model="raw-pixels", create=True) as col:
        col.index([data])
    with pytest.raises(ModelMismatchError, match="built with no adapter"):
        Collection.open(tmp_path / "db", adapter=tmp_path / "a.npz")


def test_adapter_fit_on_another_model_is_refused(tmp_path: Path, counting_model: EmbedLog) -> None:
    data = write_classes(tmp_path / "data", per_class=4)
    fit_folder(data, tmp_path / "a.npz", COUNTING_MODEL, options=FitOptions(dim=4, epochs=1))
    with pytest.raises(ModelMismatchError, match=f"fit on '{COUNTING_MODEL}'"):
        apply_adapter(create_embedder("raw-pixels"), tmp_path / "a.npz")


def test_cli_fit(tmp_path: Path, cli: Callable[..., Result]) -> None:
    data = write_classes(tmp_path / "data", per_class=6)
    out = tmp_path / "cli.npz"
    result = cli(
        "fit",
        data,
        "--out",
        out,
        "--model",
        "raw-pixels",
        "--epochs",
        "2",
        "--dim",
        "4",
        "--seed",
        "3",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["out"] == str(out.absolute()) and report["dim_out"] == 4
    assert report["seed"] == 3 and len(report["history"]) == 2
    assert "epoch 2/2" in result.stderr
    assert load_adapter(out)[1] == report["sha256"]
    bad = cli("fit", data, "--out", tmp_path / "x.npz", "--model", "no-such-model")
    assert bad.exit_code == 1 and "unknown model 'no-such-model'" in bad.output
