"""Combined representations `a+b` / `a*0.7+b*0.3`: names, vector maths, and use as one model
id in a collection. Parts are the fast `raw-pixels` and a histogram fake registered through
the real registry."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lookalike.collection import Collection
from lookalike.errors import ModelError, ModelMismatchError
from lookalike.models import ModelOptions, create_embedder, registry
from lookalike.models.base import Embedder, ModelInfo
from lookalike.models.combined import CombinedEmbedder, canonical_name, parse
from lookalike.vectors import FloatArray, l2_normalize

HIST = "test-histogram"


class HistogramEmbedder(Embedder):
    """32-bin histogram per RGB channel: a second, different, cheap representation."""

    def __init__(self) -> None:
        self.info = ModelInfo(name=HIST, dim=96, input_size=32, preprocessing={"bins": 32})

    def prepare(self, image: Image.Image) -> Any:
        arr = np.asarray(image.convert("RGB").resize((32, 32)))
        return np.concatenate(
            [np.bincount(arr[..., c].ravel() // 8, minlength=32) for c in range(3)]
        )

    def embed_prepared(self, batch: Any) -> FloatArray:
        return l2_normalize(np.sqrt(np.stack(batch).astype(np.float32)))


@pytest.fixture(autouse=True)
def histogram_model() -> Iterator[None]:
    registry.list_models()
    registry.register(
        registry.ModelEntry(
            HIST, 96, 32, "test: colour histogram", lambda _o: HistogramEmbedder(), lambda: True
        )
    )
    yield
    registry._REGISTRY.pop(HIST, None)


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.integers(0, 256, 3)
        noise = rng.integers(-60, 60, (40, 50, 3))
        out.append(Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)))
    return out


def test_names_parse_and_canonicalise() -> None:
    assert parse("a+b") == [("a", 0.5), ("b", 0.5)]
    assert parse(" a * 0.7 + b*0.3 ") == [("a", pytest.approx(0.7)), ("b", pytest.approx(0.3))]
    assert canonical_name("a*2+b*2") == "a+b"
    assert canonical_name("a*7+b*3") == "a*0.7+b*0.3"
    assert canonical_name("timm:resnet18+vgg16") == "timm:resnet18+vgg16"


@pytest.mark.parametrize("bad", ["a+", "a", "a*0+b", "a+a", "a*x+b", "a*-1+b", "*2+b"])
def test_bad_names_are_model_errors(bad: str) -> None:
    with pytest.raises(ModelError):
        parse(bad)


def test_vector_is_the_normalised_concatenation() -> None:
    combined = create_embedder(f"raw-pixels+{HIST}")
    assert isinstance(combined, CombinedEmbedder)
    assert combined.info.name == f"raw-pixels+{HIST}"
    assert combined.info.dim == 768 + 96
    pics = images(4)
    got = combined.embed_images(pics)
    a = create_embedder("raw-pixels").embed_images(pics)
    b = HistogramEmbedder().embed_images(pics)
    assert np.allclose(got, l2_normalize(np.concatenate([a, b], axis=1)), atol=1e-6)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_weights_make_similarity_a_weighted_mean() -> None:
    """a*0.7+b*0.3 scores exactly 0.7 cos_a + 0.3 cos_b."""
    combined = create_embedder(f"raw-pixels*7+{HIST}*3")
    assert combined.info.name == f"raw-pixels*0.7+{HIST}*0.3"
    pics = images(5, seed=1)
    v = combined.embed_images(pics)
    a = create_embedder("raw-pixels").embed_images(pics)
    b = HistogramEmbedder().embed_images(pics)
    assert np.allclose(v @ v.T, 0.7 * (a @ a.T) + 0.3 * (b @ b.T), atol=1e-5)


def test_identity_records_every_part() -> None:
    identity = create_embedder(f"{HIST}+raw-pixels").info.identity()
    parts = identity["preprocessing"]["parts"]
    assert [p["model"] for p in parts] == [HIST, "raw-pixels"]  # order kept: vector layout
    assert [p["weight"] for p in parts] == [0.5, 0.5]
    assert identity["input_size"] == 32


def test_one_model_id_in_a_collection(tmp_path: Path) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    for i, im in enumerate(images(6, seed=2)):
        im.save(folder / f"{i}.png")
    name = f"raw-pixels*0.6+{HIST}*0.4"
    with Collection.open(tmp_path / "db", model=name, create=True) as col:
        report = col.index([folder])
        assert report.added == 6 and col.store.dim == 768 + 96
        hits = col.search([folder / "0.png"], k=3)[0].results
        assert len(hits) == 3 and all(h.path != str(folder / "0.png") for h in hits)
    with Collection.open(tmp_path / "db") as col:
        assert col.model_name == name
        assert col.info()["model_identity"]["preprocessing"]["parts"][1]["model"] == HIST
        assert col.embedder.info.identity() == col.store.manifest["model"]
    # Another spelling of the same combination is the same model.
    with Collection.open(tmp_path / "db", model=f"raw-pixels * 6 + {HIST} * 4") as col:
        assert col.model_name == name
    with pytest.raises(ModelMismatchError):
        Collection.open(tmp_path / "db", model=f"raw-pixels+{HIST}")


def test_weights_file_is_refused_for_a_combination(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(b"x")
    with pytest.raises(ModelError, match="LOOKALIKE_WEIGHTS_DIR"):
        create_embedder(f"raw-pixels+{HIST}", ModelOptions(weights=path))


def test_unknown_part_names_the_part() -> None:
    with pytest.raises(ModelError, match="no-such-model"):
        create_embedder("raw-pixels+no-such-model")


def test_combines_with_a_timm_model(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("timm")
    monkeypatch.setenv("LOOKALIKE_ALLOW_RANDOM_WEIGHTS", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        combined = create_embedder("timm:test_resnet+raw-pixels")
    vectors = combined.embed_images(images(2))
    assert vectors.shape == (2, 96 + 768)
    assert combined.info.weights_id == "random+none"
    assert combined.draft_size >= 160  # the larger part's needs


def test_best_preset_is_the_three_lites_combined(tmp_path: Path) -> None:
    from lookalike.models.combined import combine
    from lookalike.models.presets import PRESETS

    if not registry.get_entry("best").weights_available():
        pytest.skip("efficientnet-lite0/1/2 weights are not installed")
    folder = tmp_path / "pics"
    folder.mkdir()
    pics = images(3, seed=4)
    for i, im in enumerate(pics):
        im.save(folder / f"{i}.png")
    with Collection.open(tmp_path / "db", model="best", create=True) as col:
        col.index([folder])
        assert col.model_name == PRESETS["best"]
        assert col.store.dim == 3 * 1280
        stored = col.store.vectors_for([col.store.by_path(str(folder / "0.png")).id])
    parts = [
        create_embedder(p).embed_images([pics[0].convert("RGB")])
        for p in PRESETS["best"].split("+")
    ]
    np.testing.assert_allclose(stored, combine(parts, [1 / 3] * 3), atol=1e-5)
    # The preset name reopens the collection it made.
    with Collection.open(tmp_path / "db", model="best") as col:
        assert col.count() == 3
    # So does no name at all, and a new image (embedded now) can be searched: the parts'
    # recorded pooling and recipe are asked for again, not the single-model "avg" fallback.
    new = images(1, seed=9)[0].convert("RGB")
    with Collection.open(tmp_path / "db") as col:
        hits = col.search([new], k=3)[0].results
        ids = [h.id for h in hits]
        gallery = col.store.vectors_for(ids)
    query = combine(
        [create_embedder(p).embed_images([new]) for p in PRESETS["best"].split("+")], [1 / 3] * 3
    )
    assert len(hits) == 3
    np.testing.assert_allclose([h.score for h in hits], gallery @ query[0], atol=1e-4)
