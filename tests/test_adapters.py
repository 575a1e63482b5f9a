"""Adapters: the file format, learning (linear, mlp, pca), reproducibility, the folder fit that
reuses cached vectors, and collections that record their adapter and refuse another."""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from PIL import Image, ImageOps

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
from lookalike.fitting import (
    FitOptions,
    LabelledVectors,
    embed_folder,
    fit_folder,
    fit_vectors,
    member_seed,
    precision_at_k,
)
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
    options = FitOptions(
        kind=kind, loss=loss, dim=8, epochs=10, hidden=32, members=1, val_fraction=0.25
    )
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


def test_members_merge_into_one_adapter_computing_them_all() -> None:
    """An ensemble is one chain of plain layers: first layers side by side, later ones
    block-diagonal; its output is the members' outputs side by side (sharing ``dim``), each
    member being the adapter its own seed would give (the first: the plain seed)."""
    data = clustered(60)
    options = FitOptions(dim=7, epochs=2, hidden=16, members=3, val_fraction=0.0)
    merged, report = fit_vectors(data, options)
    assert [w.shape for w, _ in merged.layers] == [(64, 48), (48, 7)]
    assert merged.dim_out == 7 and report.dim_out == 7
    assert [h["member"] for h in report.history] == [1, 1, 2, 2, 3, 3]
    alone = [
        fit_vectors(data, dataclasses.replace(options, members=1, dim=d, seed=member_seed(0, i)))[0]
        for i, d in enumerate((3, 2, 2))
    ]
    assert member_seed(0, 0) == 0 and len({member_seed(0, i) for i in range(3)}) == 3
    w1 = merged.layers[1][0]
    assert not w1[:16, 3:].any() and not w1[16:32, :3].any() and not w1[16:32, 5:].any()
    x = l2_normalize(data.vectors)
    raw = [np.maximum(x @ a.layers[0][0] + a.layers[0][1], 0) @ a.layers[1][0] for a in alone]
    raw = [r + a.layers[1][1] for r, a in zip(raw, alone, strict=True)]
    np.testing.assert_allclose(merged.apply(x), l2_normalize(np.hstack(raw)), atol=1e-5)
    with pytest.raises(AdapterError, match="at least that size"):
        fit_vectors(data, FitOptions(dim=2, members=3))


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


def test_a_fit_larger_than_the_machine_is_refused_before_training(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed by the OOM killer is no answer: the fit says what it needs and what to do."""
    import lookalike.fitting as fitting

    data = clustered(20)
    data.views = [data.vectors.copy()]
    needed = fitting.fit_memory_bytes(60, 64, 2)
    assert needed == 4 * 60 * 64 * 2 * 4
    monkeypatch.setattr(fitting, "physical_memory_bytes", lambda: needed - 1)
    with pytest.raises(AdapterError, match=r"60 images of 64-d vectors \(2 view\(s\) each\)"):
        fit_vectors(data, FitOptions(epochs=1))
    monkeypatch.setattr(fitting, "physical_memory_bytes", lambda: needed)
    fit_vectors(data, FitOptions(epochs=1))  # exactly enough: fits
    monkeypatch.setattr(fitting, "physical_memory_bytes", lambda: 1)
    fit_vectors(data, FitOptions(kind="pca", dim=8))  # pca holds a covariance, not copies


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
    assert counting_model.count == 48  # each image, and mirrored (the default)
    assert (report.images, report.classes, report.dim_in, report.dim_out) == (24, 2, 768, 8)
    assert report.val_images == 6 and report.model == COUNTING_MODEL
    lines: list[str] = []
    again = fit_folder(data, tmp_path / "b.npz", COUNTING_MODEL, options=options, log=lines.append)
    assert counting_model.count == 48  # nothing embedded the second time
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert again.sha256 == report.sha256
    assert sum(line.startswith("member 2/3, epoch ") for line in lines) == 5


def test_mirror_views_are_embedded_once_and_are_the_flipped_images(
    tmp_path: Path, counting_model: EmbedLog
) -> None:
    data = write_classes(tmp_path / "data", per_class=4)
    plain = embed_folder(data, COUNTING_MODEL)
    assert counting_model.count == 8 and plain.views == []
    both = embed_folder(data, COUNTING_MODEL, mirror=True)
    assert counting_model.count == 16  # the plain vectors came from the cache
    np.testing.assert_array_equal(both.vectors, plain.vectors)
    assert both.model == plain.model  # the model's identity, not the mirrored view's
    path = sorted(data.glob("*/*.png"))[5]
    flipped = create_embedder(COUNTING_MODEL).embed_images(
        [ImageOps.mirror(Image.open(path).convert("RGB"))]
    )
    np.testing.assert_allclose(both.views[0][5], flipped[0], atol=1e-6)
    counting_model.clear()
    options = FitOptions(dim=4, epochs=2, members=1, mirror=True)
    report = fit_folder(data, tmp_path / "m.npz", COUNTING_MODEL, options=options)
    again = fit_folder(data, tmp_path / "m2.npz", COUNTING_MODEL, options=options)
    assert counting_model.count == 0  # both views came from the cache
    assert again.sha256 == report.sha256
    assert load_adapter(tmp_path / "m.npz")[0].meta["options"]["mirror"] is True
    fit_folder(data, tmp_path / "p.npz", COUNTING_MODEL, options=FitOptions(epochs=1, mirror=False))
    assert load_adapter(tmp_path / "p.npz")[0].meta["options"]["mirror"] is False


def test_eval_applies_adapters_to_the_cached_vectors(
    tmp_path: Path, counting_model: EmbedLog
) -> None:
    """Scoring several adapters on one folder embeds it once; scores are those of the
    adapted vectors, and an adapter fit on another model is refused."""
    from lookalike.evaluation.runner import evaluate, nearest

    data = write_classes(tmp_path / "data")
    options = FitOptions(dim=8, epochs=5, members=1)
    fit_folder(data, tmp_path / "a.npz", COUNTING_MODEL, options=options)
    assert counting_model.count == 48  # each image, and mirrored
    cache = tmp_path / "eval-cache"
    plain = evaluate(data, COUNTING_MODEL, k=5, cache_root=cache)
    adapted = evaluate(data, COUNTING_MODEL, k=5, adapter=tmp_path / "a.npz", cache_root=cache)
    assert counting_model.count == 72 and adapted.embedded == 0  # twice for fit, once for eval
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
        "--members",
        "2",
        "--no-mirror",
        "--seed",
        "3",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["out"] == str(out.absolute()) and report["dim_out"] == 4
    assert report["seed"] == 3 and len(report["history"]) == 4
    assert "member 2/2, epoch 2/2" in result.stderr
    adapter, digest = load_adapter(out)
    assert digest == report["sha256"]
    assert adapter.meta["options"]["members"] == 2 and adapter.meta["options"]["mirror"] is False
    bad = cli("fit", data, "--out", tmp_path / "x.npz", "--model", "no-such-model")
    assert bad.exit_code == 1 and "unknown model 'no-such-model'" in bad.output


def test_cli_fit_defaults_are_the_fit_options_defaults() -> None:
    """--help shows click's defaults; they must be the ones fit_folder uses."""
    from lookalike.cli.fit_cmd import fit_command

    defaults = {p.name: p.default for p in fit_command.params}
    for name in ("kind", "loss", "dim", "epochs", "members", "mirror", "seed", "val_fraction"):
        assert defaults[name] == getattr(FitOptions(), name), name
