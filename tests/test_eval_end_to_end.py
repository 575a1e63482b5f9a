"""`lookalike eval` end to end on small folders of real photos (skimage), with the fast
raw-pixels model, checked against a brute-force recomputation."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
from click.testing import Result
from PIL import Image, ImageOps

from lookalike.errors import DatasetError
from lookalike.evaluation.runner import evaluate, nearest
from lookalike.images import load_image
from lookalike.models import Embedder, ModelInfo, create_embedder, registry
from lookalike.vectors import FloatArray, l2_normalize

PHOTOS = {
    "astronaut": skimage.data.astronaut,
    "coffee": skimage.data.coffee,
    "chelsea": skimage.data.chelsea,
}


def _variants(photo: Image.Image, n: int, offset: int = 0) -> list[Image.Image]:
    """Overlapping crops of one photo (every fourth mirrored), 96 px on the long side."""
    w, h = photo.size
    out = []
    for i in range(offset, offset + n):
        left, top = (i * w) // 40, (i * h) // 50
        crop = photo.crop((left, top, left + int(w * 0.75), top + int(h * 0.75)))
        crop.thumbnail((96, 96))
        out.append(ImageOps.mirror(crop) if i % 4 == 3 else crop)  # some harder ones
    return out


def _write_folder(root: Path, per_class: int, offset: int = 0) -> Path:
    for name, load in PHOTOS.items():
        (root / name).mkdir(parents=True)
        for i, image in enumerate(_variants(Image.fromarray(load()), per_class, offset)):
            image.save(root / name / f"{name}_{i + offset}.png")
    return root


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """3 classes x 4 crops, plus 'moon': a class of one image."""
    root = _write_folder(tmp_path / "photos", per_class=4)
    (root / "moon").mkdir()
    Image.fromarray(skimage.data.moon()).resize((96, 96)).save(root / "moon" / "moon.png")
    return root


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))


# ----- an independent recomputation ------------------------------------------------------
def _embed(paths: Sequence[Path], model: str = "raw-pixels") -> FloatArray:
    embedder = create_embedder(model)
    return embedder.embed_images([load_image(p) for p in paths])


def _oracle(
    query_paths: list[Path],
    gallery_paths: list[Path],
    k: int,
    leave_one_out: bool,
) -> dict[str, Any]:
    """Metrics by the textbook definitions, one query at a time."""
    q_vec, g_vec = _embed(query_paths), _embed(gallery_paths)
    g_labels = [p.parent.name for p in gallery_paths]
    sizes = Counter(g_labels)
    precision, recall, ap, correct = [], [], [], []
    for i, path in enumerate(query_paths):
        sims = g_vec @ q_vec[i]
        order = [j for j in np.argsort(-sims, kind="stable") if not (leave_one_out and j == i)]
        top = order[:k]
        labels = [g_labels[j] for j in top]
        own = path.parent.name
        relevant = sizes[own] - (1 if leave_one_out else 0)
        hits, ap_sum = 0, 0.0
        for rank, label in enumerate(labels, 1):
            if label == own:
                hits += 1
                ap_sum += hits / rank
        precision.append(hits / k)
        if relevant:
            recall.append(hits / relevant)
            ap.append(ap_sum / min(k, relevant))
        votes = Counter(labels)
        best = max(votes.values())
        tied = [lab for lab in votes if votes[lab] == best]
        sums = {lab: sum(float(sims[j]) for j in top if g_labels[j] == lab) for lab in tied}
        winner = max(tied, key=lambda lab: (sums[lab], -labels.index(lab)))
        correct.append(winner == own)
    return {
        "precision_at_k": np.mean(precision),
        "recall_at_k": np.mean(recall),
        "map_at_k": np.mean(ap),
        "knn_accuracy": np.mean(correct),
    }


def _all_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png"))


# ----- the runner ------------------------------------------------------------------------
def test_leave_one_out_matches_brute_force(labelled: Path) -> None:
    result = evaluate(labelled, "raw-pixels", k=3).to_json()

    want = _oracle(_all_images(labelled), _all_images(labelled), 3, leave_one_out=True)
    for key, value in want.items():
        assert result[key] == pytest.approx(value, abs=1e-6), key
    assert result["queries"] == 13 and result["mode"] == "leave-one-out"
    # Crops of one photo find each other far above chance (chance P@3 ~ 3/12).
    assert result["precision_at_k"] > 0.5
    # The class of one image: nothing to find, so no recall/mAP, and a miss in accuracy.
    moon = result["per_class"]["moon"]
    assert moon["recall_at_k"] is None and moon["map_at_k"] is None
    assert moon["precision_at_k"] == 0.0 and moon["knn_accuracy"] == 0.0
    assert len(result["precision_curve"]) == 3


def test_separate_queries_match_brute_force(labelled: Path, tmp_path: Path) -> None:
    queries = _write_folder(tmp_path / "queries", per_class=2, offset=4)
    (queries / "unknown").mkdir()
    Image.fromarray(skimage.data.rocket()).resize((96, 64)).save(queries / "unknown" / "r.png")

    result = evaluate(labelled, "raw-pixels", k=4, queries_dir=queries).to_json()

    want = _oracle(_all_images(queries), _all_images(labelled), 4, leave_one_out=False)
    for key, value in want.items():
        assert result[key] == pytest.approx(value, abs=1e-6), key
    assert result["queries"] == 7 and result["gallery"] == 13
    # A query class absent from the gallery has nothing to find.
    assert result["per_class"]["unknown"]["recall_at_k"] is None


def test_second_eval_embeds_only_what_changed(labelled: Path) -> None:
    first = evaluate(labelled, "raw-pixels", k=3)
    again = evaluate(labelled, "raw-pixels", k=3)
    assert first.embedded == 13 and again.embedded == 0
    assert again.to_json()["map_at_k"] == first.to_json()["map_at_k"]

    Image.fromarray(skimage.data.coffee()).resize((90, 60)).save(labelled / "coffee" / "new.png")
    third = evaluate(labelled, "raw-pixels", k=3)
    assert third.embedded == 1 and len(third.query_paths) == 14


def test_a_cache_from_another_model_setup_is_rebuilt(labelled: Path, tmp_path: Path) -> None:
    evaluate(labelled, "raw-pixels", k=3)
    # As if the weights behind this cache had changed: the stored identity no longer matches.
    (manifest,) = (tmp_path / "cache" / "eval").glob("*/manifest.json")
    data = json.loads(manifest.read_text())
    data["model"]["weights"] = "stale"
    manifest.write_text(json.dumps(data))

    again = evaluate(labelled, "raw-pixels", k=3)

    assert again.embedded == 13
    assert json.loads(manifest.read_text())["model"]["weights"] != "stale"


def test_unreadable_and_unlabelled_files_are_skipped_and_listed(labelled: Path) -> None:
    broken = labelled / "coffee" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG header, then nothing
    loose = labelled / "loose.png"
    Image.new("RGB", (16, 16)).save(loose)

    result = evaluate(labelled, "raw-pixels", k=3)

    reasons = dict(result.skipped)
    assert set(reasons) == {str(broken), str(loose)}
    assert reasons[str(loose)] == "not in a class folder"
    assert len(result.query_paths) == 13 and result.embedded == 13


def test_k_must_leave_room_for_neighbours(labelled: Path) -> None:
    with pytest.raises(DatasetError, match="k=13"):
        evaluate(labelled, "raw-pixels", k=13)  # 13 images: 12 others at most


def test_nearest_drops_self_even_among_exact_duplicates() -> None:
    rng = np.random.default_rng(0)
    vectors = l2_normalize(rng.normal(size=(50, 8)))
    vectors[[3, 4, 5]] = vectors[3]  # three identical vectors
    ids, scores = nearest(vectors, vectors, k=4, exclude_self=True)
    for i in range(len(vectors)):
        assert i not in ids[i]
        sims = vectors @ vectors[i]
        sims[i] = -np.inf
        np.testing.assert_allclose(scores[i], np.sort(sims)[::-1][:4], rtol=1e-5)
    assert set(ids[3][:2]) == {4, 5}


# ----- the command -----------------------------------------------------------------------
class _HistogramEmbedder(Embedder):
    """A second deterministic model: a coarse colour histogram."""

    def __init__(self) -> None:
        self.info = ModelInfo(name="test-histogram", dim=48, input_size=32)

    def prepare(self, image: Image.Image) -> Any:
        arr = np.asarray(image.convert("RGB").resize((32, 32)))
        return np.concatenate([np.histogram(arr[..., c], 16, (0, 256))[0] for c in range(3)])

    def embed_prepared(self, batch: Sequence[Any]) -> FloatArray:
        return l2_normalize(np.stack(batch).astype(np.float32))


@pytest.fixture
def histogram_model() -> Iterator[str]:
    """Registers `test-histogram` through the real registry for one test."""
    registry.list_models()  # built-ins first, so ours is not overwritten later
    registry.register(
        registry.ModelEntry(
            name="test-histogram",
            dim=48,
            input_size=32,
            description="colour histogram (tests only)",
            factory=lambda _options: _HistogramEmbedder(),
            weights_available=lambda: True,
        )
    )
    yield "test-histogram"
    registry._REGISTRY.pop("test-histogram", None)


def test_cli_json_for_one_and_for_several_models(
    labelled: Path, cli_json: Callable[..., Any], histogram_model: str
) -> None:
    single = cli_json("eval", labelled, "--model", "raw-pixels", "-k", "3")
    spec = ("model", "k", "queries", "precision_at_k", "map_at_k", "recall_at_k")
    assert all(key in single for key in (*spec, "knn_accuracy", "per_class"))
    assert set(single["per_class"]) == {"astronaut", "chelsea", "coffee", "moon"}

    listed = cli_json("eval", labelled, "--model", f"raw-pixels,{histogram_model}", "-k", "3")
    assert [r["model"] for r in listed] == ["raw-pixels", histogram_model]
    assert listed[0]["precision_at_k"] == single["precision_at_k"]

    # The second model against the first, query by query, counted here from each query's P@3.
    assert "against" not in listed[0]
    versus = listed[1]["against"]
    assert versus["model"] == "raw-pixels"
    first, second = (evaluate(labelled, m, k=3) for m in ("raw-pixels", histogram_model))
    mine = dict(zip(second.query_paths, second.scores.precision, strict=True))
    paired = zip(first.query_paths, first.scores.precision, strict=True)
    diff = np.array([mine[q] - p for q, p in paired])
    precision = versus["precision_at_k"]
    assert (precision["better"], precision["worse"]) == ((diff > 0).sum(), (diff < 0).sum())
    assert precision["mean"] == pytest.approx(diff.mean(), abs=1e-4)
    assert precision["verdict"] in ("clearly better", "clearly worse", "no clear difference")
    assert set(versus["map_at_k"]) >= {"better", "worse", "sign_test_p", "ci95", "verdict"}


def test_cli_table_and_report(
    labelled: Path, tmp_path: Path, cli: Callable[..., Result], histogram_model: str
) -> None:
    out = tmp_path / "report"
    models = f"raw-pixels,{histogram_model}"
    run = cli(
        "eval", labelled, "--model", models, "-k", "3", "--metric", "euclidean", "--report", out
    )
    assert run.exit_code == 0, run.output
    assert "raw-pixels" in run.stdout and histogram_model in run.stdout
    assert "P@3" in run.stdout and "astronaut" in run.stdout
    assert "query by query against raw-pixels" in run.stdout

    text = (out / "report.md").read_text()
    linked = {line.split("](")[1].rstrip(")") for line in text.splitlines() if "![" in line}
    per_model = {
        f"{kind}_{m}.png" for kind in ("confusion", "best", "worst") for m in models.split(",")
    }
    assert linked == {"precision_at_k.png", *per_model}
    for name in linked:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 100
    assert "metric = euclidean" in text
    assert f"| {histogram_model} | " in text.split("## Query by query against raw-pixels")[1]


def test_cli_errors_are_one_line(
    labelled: Path, tmp_path: Path, cli: Callable[..., Result], histogram_model: str
) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    run = cli("eval", flat, "--model", "raw-pixels")
    assert run.exit_code == 1 and "class folders" in run.output
    assert "Traceback" not in run.output

    weights = tmp_path / "w.bin"
    weights.write_bytes(b"0")
    run = cli("eval", labelled, "--model", f"raw-pixels,{histogram_model}", "--weights", weights)
    assert run.exit_code == 2 and "single --model" in run.output


# ----- re-ranked neighbours ----------------------------------------------------------------
def test_rerank_scores_the_reordered_neighbours(labelled: Path) -> None:
    """qe (n=2, alpha=1, shortlist 6) recomputed by hand: expand each query with its 2 best
    others, re-order its 6 nearest by the expanded query, keep 3; scores stay cosine."""
    from lookalike.reranking import Rerank

    setup = Rerank("qe", shortlist=6, n=2, alpha=1)
    result = evaluate(labelled, "raw-pixels", k=3, rerank=setup)
    paths = _all_images(labelled)
    x = _embed(paths)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)  # leave-one-out
    for i, path in enumerate(paths):
        shortlist = np.argsort(-sims[i], kind="stable")[:6]
        top = shortlist[:2]
        expanded = x[i] + sims[i, top] @ x[top]
        order = shortlist[np.argsort(-(x[shortlist] @ expanded), kind="stable")][:3]
        row = result.query_paths.index(str(path))
        got = [result.gallery_paths[j] for j in result.neighbours[row]]
        assert got == [str(paths[j]) for j in order]
        np.testing.assert_allclose(result.neighbour_scores[row], sims[i, order], atol=1e-5)
    plain = evaluate(labelled, "raw-pixels", k=3)
    assert result.to_json()["rerank"] == "qe:shortlist=6,n=2,alpha=1"
    assert plain.to_json()["rerank"] == "none"


def test_cli_rerank_verify_and_a_bad_setting(
    labelled: Path, tmp_path: Path, cli: Callable[..., Result], cli_json: Callable[..., Any]
) -> None:
    pytest.importorskip("cv2")
    queries = tmp_path / "queries"
    for name, load in PHOTOS.items():  # a heavy corner crop of each photo
        (queries / name).mkdir(parents=True)
        photo = Image.fromarray(load())
        photo.crop((0, 0, photo.width * 2 // 5, photo.height * 2 // 5)).save(
            queries / name / "c.png"
        )
    gallery = tmp_path / "gallery"
    for name, load in PHOTOS.items():
        (gallery / name).mkdir(parents=True)
        Image.fromarray(load()).save(gallery / name / f"{name}.png")
    for name in ("camera", "horse", "rocket", "coins", "page"):  # distractors
        (gallery / name).mkdir()
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(gallery / name / "d.png")
    args = ("eval", gallery, "--queries", queries, "--model", "raw-pixels", "-k", "3")
    plain, checked = cli_json(*args), cli_json(*args, "--rerank", "verify")
    assert checked["rerank"] == "verify" and checked["map_at_k"] == 1.0  # every original first
    assert plain["map_at_k"] < 1.0  # raw pixels alone do not find every crop's original
    run = cli("eval", labelled, "--model", "raw-pixels", "--rerank", "qe:depth=2")
    assert run.exit_code == 1 and "not understood" in run.output and "Traceback" not in run.output
