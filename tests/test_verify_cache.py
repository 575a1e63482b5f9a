"""Stored files' SIFT features kept across verified searches (verify.FeatureCache)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lookalike.collection import Collection
from lookalike.reranking import Rerank
from lookalike.verify import FeatureCache, Features, Verifier, VerifySettings

pytest.importorskip("cv2")


def _count_extractions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SIFT pass from now on: a file's path, or "<image>" for an in-memory image."""
    seen: list[str] = []
    real = Verifier._extract

    def counted(self: Verifier, source: str | Image.Image) -> Features | None:
        seen.append(source if isinstance(source, str) else "<image>")
        return real(self, source)

    monkeypatch.setattr(Verifier, "_extract", counted)
    return seen


def test_kept_features_are_the_computed_ones_and_computed_once(
    photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {i: str(p) for i, p in enumerate(photos.values())}
    plain = Verifier(files.__getitem__)
    cache = FeatureCache()
    first, second = (Verifier(files.__getitem__, files=cache) for _ in range(2))
    want = {i: plain._features(i) for i in files}
    seen = _count_extractions(monkeypatch)
    got = {i: first._features(i) for i in files}
    assert sorted(seen) == sorted(files.values())  # computed once each, then kept
    again = {i: second._features(i) for i in files}
    assert len(seen) == len(files)  # the second Verifier computed nothing
    for i in files:
        w, g, a = want[i], got[i], again[i]
        assert w is not None and g is not None and a is not None
        assert len(w.points) > 100
        np.testing.assert_array_equal(a.points, w.points)
        np.testing.assert_array_equal(a.descriptors, w.descriptors)  # lossless as uint8
        assert a.descriptors.dtype == np.float32
    assert first.check(0, 1) == plain.check(0, 1) == second.check(0, 1)


def test_a_rewritten_file_is_computed_again_and_the_oldest_leave(
    photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [str(p) for p in photos.values()]
    cache = FeatureCache(capacity=3)
    seen = _count_extractions(monkeypatch)

    def features_of(path: str) -> Features | None:
        return Verifier(lambda _: path, files=cache)._features(0)

    for path in paths[:4]:
        features_of(path)
    assert len(cache) == 3
    features_of(paths[0])  # evicted: computed again
    assert seen.count(paths[0]) == 2
    features_of(paths[3])  # kept
    assert seen.count(paths[3]) == 1
    Image.open(paths[1]).convert("RGB").rotate(90).save(paths[3], quality=90)
    stat = os.stat(paths[3])
    os.utime(paths[3], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rewritten = features_of(paths[3])
    assert seen.count(paths[3]) == 2
    plain = Verifier(lambda _: paths[3])._features(0)
    assert rewritten is not None and plain is not None
    np.testing.assert_array_equal(rewritten.descriptors, plain.descriptors)
    assert FeatureCache.key(str(Path(paths[3]).with_name("gone.jpg")), VerifySettings()) is None


def test_a_collections_verified_searches_share_their_files_features(
    tmp_path: Path, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second search computes only its queries' features (in-memory images), and it
    answers as a collection without the kept features does."""
    queries: list[Any] = []
    for path in photos.values():
        image = Image.open(path).convert("RGB")
        w, h = image.size
        queries.append(image.crop((0, 0, w // 2, h // 2)))
    setup = Rerank("verify")
    with Collection.open(tmp_path / "db", model="raw-pixels", create=True) as col:
        col.index(list(photos.values()))
        seen = _count_extractions(monkeypatch)
        first = col.search(queries, k=5, rerank=setup)
        stored = [s for s in seen if s != "<image>"]
        assert stored and len(stored) == len(set(stored))
        seen.clear()
        second = col.search(queries, k=5, rerank=setup)
        assert seen == ["<image>"] * len(queries)
        col._verify_files = FeatureCache(capacity=0)  # nothing kept: as before the cache
        fresh = col.search(queries, k=5, rerank=setup)
    ids = [[h.id for h in r.results] for r in first]
    assert ids == [[h.id for h in r.results] for r in second]
    assert ids == [[h.id for h in r.results] for r in fresh]
    # Not a test that cannot fail: verify puts every crop's original first here.
    assert [r.results[0].path for r in first] == [str(p) for p in photos.values()]


def test_descriptors_uint8_cannot_hold_stay_float() -> None:
    cache = FeatureCache()
    key = ("x.jpg", 1, 2, 512, 1000, 0.04)
    odd = Features(np.zeros((2, 2), np.float32), np.array([[0.5] * 128, [300.0] * 128], np.float32))
    cache.put(key, odd)
    kept = cache.get(key)
    assert kept is not None
    np.testing.assert_array_equal(kept.descriptors, odd.descriptors)
