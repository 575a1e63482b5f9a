"""Near-duplicate groups: k-NN graph + connected components, checked on real photos with
exact and altered copies (the group found is exactly {original, copies})."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TEST_MODEL
from lookalike.collection import Collection
from lookalike.duplicates import Cluster, duplicate_groups, leader_clusters, once_per_pair
from lookalike.errors import CollectionError
from lookalike.index.base import MISSING_ID, SearchHits
from lookalike.store import NewImage
from lookalike.vectors import l2_normalize


def _hits(ids: list[list[int]], scores: list[list[float]]) -> SearchHits:
    return SearchHits(scores=np.array(scores, dtype=np.float32), ids=np.array(ids, dtype=np.int64))


def _groups(clusters: list[Cluster]) -> list[tuple[list[int], list[float]]]:
    return [(c.members, c.scores) for c in clusters]


def test_groups_do_not_chain_through_weak_links() -> None:
    # 1-2 (0.99), 2-3 (0.96); 1-3 only 0.90 (below): connected components would make
    # {1, 2, 3}. 2 has the most links, so it leads and takes both: each is within 0.95 of 2.
    # 4-5 (0.97); 6 alone (0.5 to 1); 7's slots are padding.
    query_ids = np.array([1, 2, 3, 4, 5, 6, 7])
    hits = _hits(
        [[1, 2, 3], [2, 1, 3], [3, 2, 1], [4, 5, 1], [5, 4, 2], [6, 1, 2], [7, -1, -1]],
        [
            [1.0, 0.99, 0.90],
            [1.0, 0.99, 0.96],
            [1.0, 0.96, 0.90],
            [1.0, 0.97, 0.2],
            [1.0, 0.97, 0.1],
            [1.0, 0.5, 0.4],
            [1.0, -np.inf, -np.inf],
        ],
    )
    groups = _groups(duplicate_groups([(query_ids, hits)], threshold=0.95))
    assert groups == [
        ([2, 1, 3], [1.0, pytest.approx(0.99), pytest.approx(0.96)]),
        ([4, 5], [1.0, pytest.approx(0.97)]),
    ]
    assert _groups(duplicate_groups([(query_ids, hits)], threshold=0.98)) == [
        ([1, 2], [1.0, pytest.approx(0.99)])
    ]
    assert duplicate_groups([(query_ids, hits)], threshold=0.999) == []


def test_a_long_chain_is_cut_into_groups_around_leaders() -> None:
    # A path 1-2-3-4-5-6 where only neighbours link: components would give one group of 6.
    links = {(i, i + 1): 0.96 for i in range(1, 6)}
    clusters = leader_clusters(links)
    for cluster in clusters:
        lead = cluster.representative
        assert all(abs(m - lead) <= 1 for m in cluster.members)  # linked to the leader
    members = [m for c in clusters for m in c.members]
    assert len(members) == len(set(members))  # each image in one group at most
    # 2 leads {1, 2, 3}; then 4 leads {4, 5}; 6's only link goes to 5, already taken.
    assert [sorted(c.members) for c in clusters] == [[1, 2, 3], [4, 5]]


def test_groups_join_across_batches() -> None:
    first = (np.array([1]), _hits([[1, 2]], [[1.0, 0.97]]))
    second = (np.array([3]), _hits([[3, 2]], [[1.0, 0.98]]))
    groups = duplicate_groups([first, second], threshold=0.95)
    assert _groups(groups) == [([2, 3, 1], [1.0, pytest.approx(0.98), pytest.approx(0.97)])]


def test_a_failed_candidate_is_checked_once() -> None:
    """No copies at all: leader clustering asks about each pair from both ends; the wrapper
    passes each unordered pair on once, smaller id first, and answers the repeat itself."""
    candidates = {(1, 2): 0.5, (2, 3): 0.6, (1, 3): 0.45, (3, 4): 0.7}
    asked: list[tuple[int, int]] = []

    def never(a: int, b: int) -> bool:
        asked.append((a, b))
        return False

    assert leader_clusters({}, candidates, never) == []
    assert len(asked) > len(candidates)  # why the wrapper exists
    asked.clear()
    assert leader_clusters({}, candidates, once_per_pair(never)) == []
    assert sorted(asked) == sorted(candidates)


def test_a_verified_candidate_joins_once_checked() -> None:
    verdicts = {(1, 2): True, (2, 3): False}
    asked: list[tuple[int, int]] = []

    def check(a: int, b: int) -> bool:
        asked.append((a, b))
        return verdicts[(a, b)]

    clusters = leader_clusters({}, {(1, 2): 0.5, (2, 3): 0.6}, once_per_pair(check))
    assert [c.members for c in clusters] == [[2, 1]]
    assert sorted(asked) == [(1, 2), (2, 3)]


def test_missing_slots_are_ignored() -> None:
    hits = _hits([[MISSING_ID, MISSING_ID]], [[2.0, 2.0]])  # nonsense scores on padding
    assert duplicate_groups([(np.array([1]), hits)], threshold=0.5) == []


@pytest.fixture
def with_copies(db: Path, photos: dict[str, Path], tmp_path: Path) -> dict[str, set[str]]:
    """Originals plus copies: the expected groups, as sets of paths."""
    root = photos["astronaut"].parent
    copies = root / "copies"
    copies.mkdir()
    chelsea = [
        copies / "chelsea-exact.jpg",
        copies / "chelsea-half.png",
        copies / "chelsea-q30.jpg",
    ]
    shutil.copy(photos["chelsea"], chelsea[0])
    with Image.open(photos["chelsea"]) as im:
        im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS).save(chelsea[1])
        im.save(chelsea[2], quality=30)
    rocket = [copies / "nested" / "rocket-q40.jpg"]
    rocket[0].parent.mkdir()
    with Image.open(photos["rocket"]) as im:
        im.save(rocket[0], quality=40)
    with Collection.open(db, model=TEST_MODEL, create=True) as col:
        report = col.index([root])
    assert report.added == len(photos) + 4
    return {
        "chelsea": {str(photos["chelsea"]), *map(str, chelsea)},
        "rocket": {str(photos["rocket"]), *map(str, rocket)},
    }


def _pairwise_min(col: Collection, paths: set[str]) -> float:
    ids = [col.store.by_path(p).id for p in paths]
    vectors = col.store.vectors_for(ids).astype(np.float64)
    return min(float(a @ b) for a, b in itertools.combinations(vectors, 2))


def test_real_photos_with_copies(
    db: Path, with_copies: dict[str, set[str]], photos: dict[str, Path]
) -> None:
    with Collection.open(db) as col:
        groups = col.duplicates(threshold=0.95)
        found = [set(g.paths) for g in groups]
        assert found == [with_copies["chelsea"], with_copies["rocket"]]  # largest first
        for group in groups:
            rep = col.store.vectors_for([group.members[0].id])[0].astype(np.float64)
            for member in group.members:
                vector = col.store.vectors_for([member.id])[0].astype(np.float64)
                assert member.score == pytest.approx(min(float(rep @ vector), 1.0), abs=1e-5)
                assert member.score >= 0.95 - 1e-5
            assert group.min_score == min(m.score for m in group.members[1:])
            assert group.min_score >= _pairwise_min(col, set(group.paths)) - 1e-5
            assert [col.get(i).path for i in group.ids] == group.paths
            assert sorted(m.path for m in group.members) == sorted(group.paths)
        # The originals are kept: the most pixels, then (exact copy) the older file,
        # then (re-saves) the larger file.
        assert [g.keep for g in groups] == [str(photos["chelsea"]), str(photos["rocket"])]


def test_pairs_are_every_link_once(db: Path, with_copies: dict[str, set[str]]) -> None:
    with Collection.open(db) as col:
        pairs = col.duplicate_pairs(threshold=0.95)
        groups = col.duplicates(threshold=0.95)
    keys = [frozenset((p.a, p.b)) for p in pairs]
    assert len(keys) == len(set(keys))
    assert [p.score for p in pairs] == sorted((p.score for p in pairs), reverse=True)
    assert all(p.score >= 0.95 for p in pairs)
    # Every member of a group is paired with its representative.
    for group in groups:
        rep = group.representative
        for member in group.members[1:]:
            assert frozenset((rep, member.path)) in keys
    # and pairs never cross the planted sets (they are all copies of one photo)
    planted = list(with_copies.values())
    assert all(any({p.a, p.b} <= s for s in planted) for p in pairs)


def test_exact_copies_at_threshold_one(db: Path, with_copies: dict[str, set[str]]) -> None:
    """Byte-identical files share a vector; float rounding must not hide them at 1.0."""
    with Collection.open(db) as col:
        groups = col.duplicates(threshold=1.0)
    assert [set(g.paths) for g in groups] == [
        {p for p in with_copies["chelsea"] if "half" not in p and "q30" not in p}
    ]


def test_identical_vectors_always_pass_threshold_one(db: Path) -> None:
    """In float32 a unit vector's dot product with itself is 1 +- 6e-7, below 1 for ~40%."""
    n = 200
    with Collection.open(db, model=TEST_MODEL, create=True) as col:
        vectors = l2_normalize(np.random.default_rng(1).standard_normal((n, col.store.dim)))
        images = [
            NewImage(path=f"/v/{i}-{copy}.jpg", size=1, mtime_ns=1, hash=f"{i}")
            for copy in "ab"
            for i in range(n)
        ]
        col.store.add_images(images, np.vstack([vectors, vectors]))
        groups = col.duplicates(threshold=1.0)
    expected = [[f"/v/{i}-a.jpg", f"/v/{i}-b.jpg"] for i in range(n)]
    assert sorted(g.paths for g in groups) == sorted(expected)


def test_high_threshold_keeps_only_the_closest(db: Path, with_copies: dict[str, set[str]]) -> None:
    with Collection.open(db) as col:
        all_groups = col.duplicates(threshold=0.95)
        strict = max(g.min_score for g in all_groups) + 1e-4
        for group in col.duplicates(threshold=strict):
            assert group.min_score >= strict
            assert any(set(group.paths) < set(g.paths) for g in all_groups)


def test_bad_threshold(db: Path, with_copies: dict[str, set[str]]) -> None:
    with Collection.open(db) as col, pytest.raises(CollectionError, match="threshold"):
        col.duplicates(threshold=1.5)
