"""End to end on real photos: the default model is at least the reports' plain pipeline.

Both are computed here, on the same files: benchmarks/reports_pipeline.py (PyTorch eager,
whole image at 224x224, sklearn cosine k-NN, written apart from lookalike's model code) and
``lookalike eval`` with the default model and options.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import load_benchmark
from lookalike import verify
from lookalike.collection import Collection
from lookalike.evaluation.runner import evaluate
from lookalike.models import DEFAULT_MODEL
from lookalike.reranking import Rerank
from lookalike.results import QueryResult


def _hard_copies(image: Image.Image) -> dict[str, Image.Image]:
    """Edits that move pixels near the border, where a centre crop loses them (shared with
    benchmarks/hard_copies.py, which makes a validation set of them on other photos)."""
    edits: dict[str, Image.Image] = load_benchmark("hard_copies").hard_copies(image)
    return edits


def _write_set(root: Path, photo_arrays: dict[str, np.ndarray]) -> tuple[Path, Path]:
    gallery, queries = root / "gallery", root / "queries"
    for name, array in photo_arrays.items():
        (gallery / name).mkdir(parents=True)
        (queries / name).mkdir(parents=True)
        image = Image.fromarray(array)
        image.save(gallery / name / f"{name}.jpg", quality=92)
        for edit, copy in _hard_copies(image).items():
            copy.save(queries / name / f"{edit}.jpg", quality=60)
    return gallery, queries


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,  # only the comparison may fail; any other error fails the test
    reason="GeM + recipe 4 (the default since the identity bump, chosen on validation sets) "
    "ranks 4 of these 60 hard copies lower than the reports' avg pooling: MRR@5 0.946 vs "
    "0.972 (fp32); on a 120-query validation set of the same edits on other photos it is "
    "above (0.931 vs 0.919). Issue 9's 'never below' does not hold here, so issue 9 stays "
    "open; strict: this fails the day the default reaches the reports (BENCHMARKS.md, "
    "'The identity bump'). With --rerank verify it is above them "
    "(test_verify_reranking_finds_the_hard_copies_originals), and on 474 hard copies of "
    "Debian's wallpapers the default alone is "
    "(test_default_is_above_the_reports_on_hard_copies_of_debians_wallpapers)",
)
def test_default_is_at_least_the_reports_pipeline(
    tmp_path: Path, photo_arrays: dict[str, np.ndarray]
) -> None:
    gallery, queries = _write_set(tmp_path, photo_arrays)
    k = 5
    reports = load_benchmark("reports_pipeline").evaluate(gallery, queries, k)
    ours = evaluate(gallery, DEFAULT_MODEL, k=k, queries_dir=queries, cache_root=tmp_path / "c")
    ours_json = ours.to_json()
    assert ours_json["queries"] == reports["queries"] == 6 * len(photo_arrays)
    # mAP@k here is the mean reciprocal rank of the original (one per query).
    assert ours_json["map_at_k"] >= reports["map_at_k"], (ours_json["map_at_k"], reports)
    assert ours_json["precision_at_k"] >= reports["precision_at_k"]


WALLPAPERS = Path("/usr/share")
STAMPS = Path("/usr/share/tuxpaint/stamps")


def _installed_or_skip(*folders: Path) -> None:
    """The Debian packages of scripts/install-test-photos.sh are needed; CI sets
    LOOKALIKE_REQUIRE_TEST_PHOTOS=1 once they are installed, so a missing set fails there."""
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        message = f"needs {', '.join(missing)}: bash scripts/install-test-photos.sh"
        if os.environ.get("LOOKALIKE_REQUIRE_TEST_PHOTOS"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="On issue 9's own kind of photo set (132 cut-out photos of Tux Paint's stamps in "
    "the issue's six classes), GeM pooling gives up a little to the reports' average "
    "pooling: P@5 0.826 vs 0.839 (each query paired: -0.014, bootstrap 95% interval "
    "-0.030..+0.003), as it does on ten other classes (0.583 vs 0.591); the default was "
    "chosen for Fashion-MNIST (+1.2 points) and copies. Strict: fails the day the default "
    "reaches the reports here (BENCHMARKS.md, 'Cut-out photos in classes')",
)
def test_default_is_at_least_the_reports_on_the_issues_photo_set(tmp_path: Path) -> None:
    _installed_or_skip(STAMPS)
    folder = tmp_path / "photos"
    load_benchmark("stamp_photos").write_stamp_photos("photos", folder, STAMPS)
    k = 5  # as the issue scored it
    reports = load_benchmark("reports_pipeline").evaluate(folder, None, k)
    ours = evaluate(folder, DEFAULT_MODEL, k=k, cache_root=tmp_path / "c").to_json()
    if not ours["queries"] == reports["queries"] == 132:  # not the comparison: a real failure
        pytest.fail(f"expected 132 photos, got {ours['queries']} / {reports['queries']}")
    assert ours["precision_at_k"] >= reports["precision_at_k"], (ours, reports)
    assert ours["map_at_k"] >= reports["map_at_k"]


@pytest.mark.slow
def test_default_is_above_the_reports_on_hard_copies_of_debians_wallpapers(
    tmp_path: Path,
) -> None:
    """The same six edits on ~80 desktop pictures (474 queries, 8x the set above; never
    used to choose anything), with the other sets' 30 photos as extra gallery images. The
    default must be at least the reports' pipeline in MRR@5 and rank-1 hits (measured:
    0.667 / 0.584 vs 0.612 / 0.519), and win more queries at rank 1 than it loses."""
    _installed_or_skip(WALLPAPERS / "wallpapers", WALLPAPERS / "backgrounds")
    hard_copies = load_benchmark("hard_copies")
    gallery, queries = hard_copies.build("wallpapers", tmp_path, WALLPAPERS)
    k = 5
    reports = load_benchmark("reports_pipeline").evaluate(gallery, queries, k)
    ours = evaluate(gallery, DEFAULT_MODEL, k=k, queries_dir=queries, cache_root=tmp_path / "c")
    assert ours.to_json()["queries"] == reports["queries"] >= 6 * 60
    ours_first = hard_copies.first_hit_is_the_original(ours)
    reports_first = dict(zip(reports["query_paths"], reports["top1_correct"], strict=True))
    assert ours.to_json()["map_at_k"] >= reports["map_at_k"], (ours.to_json(), reports)
    assert np.mean(list(ours_first.values())) >= np.mean(reports["top1_correct"])
    paired = hard_copies.paired(ours_first, reports_first)
    assert paired["wins"] > paired["losses"], paired


@pytest.mark.slow
@pytest.mark.skipif(not verify.available(), reason="needs OpenCV (the verify extra)")
def test_verify_reranking_finds_the_hard_copies_originals(
    tmp_path: Path, photo_arrays: dict[str, np.ndarray]
) -> None:
    """`search --rerank verify` (geometric verification of the shortlist) on the same 60
    hard copies: more originals at rank 1 than plain search, and at least the reports'
    pipeline in MRR@5 and rank-1 hits (BENCHMARKS.md: 0.983 / 0.983 vs 0.972 / 0.950)."""
    gallery, queries = _write_set(tmp_path, photo_arrays)
    k = 5
    reports = load_benchmark("reports_pipeline").evaluate(gallery, queries, k)
    files = sorted(queries.rglob("*.jpg"))
    with Collection.open(tmp_path / "db", model=DEFAULT_MODEL, create=True) as col:
        col.index([gallery])
        plain = col.search(files, k=k)
        checked = col.search(files, k=k, rerank=Rerank("verify"))

    def ranks(results: list[QueryResult]) -> np.ndarray:
        found = [
            next((h.rank for h in r.results if Path(h.path).parent.name == f.parent.name), 0)
            for r, f in zip(results, files, strict=True)
        ]
        return np.array(found)

    before, after = ranks(plain), ranks(checked)
    reciprocal = np.where(after > 0, 1.0 / np.maximum(after, 1), 0.0)
    reports_rank1 = float(np.mean(reports["top1_correct"]))
    assert int((after == 1).sum()) > int((before == 1).sum())
    assert float((after == 1).mean()) >= reports_rank1
    assert float(reciprocal.mean()) >= reports["map_at_k"], (reciprocal.mean(), reports)
    # Scores stay the cosine similarity: the same image scores the same either way.
    for p, c in zip(plain, checked, strict=True):
        cosine = {h.id: h.score for h in p.results}
        assert all(abs(h.score - cosine[h.id]) < 1e-6 for h in c.results if h.id in cosine)
