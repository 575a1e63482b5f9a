"""The second stage of `duplicates`: candidate pairs below the threshold verified with local
features (lookalike.verify). Planted copies of real photos per edit type, with the default
model; the groups are asserted exactly."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from lookalike import verify
from lookalike.collection import Collection
from lookalike.models import DEFAULT_MODEL
from lookalike.verify import MIRROR, Verifier, VerifySettings

SIDE = 512  # photos are shrunk to this long side (the verifier's own working size)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


# The edits of issue 15, item 1 (the same as benchmarks/duplicate_edits.py).
EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "q40": lambda im: _jpeg(im, 40),
    "aspect": lambda im: im.resize((round(im.width * 1.35), im.height), Image.Resampling.LANCZOS),
    "crop10": lambda im: im.crop(
        (im.width // 10, im.height // 10, im.width - im.width // 10, im.height - im.height // 10)
    ),
    "flip": ImageOps.mirror,
    "grey": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "rot10": lambda im: im.rotate(10, resample=Image.Resampling.BICUBIC, expand=True),
    "rot30": lambda im: im.rotate(30, resample=Image.Resampling.BICUBIC, expand=True),
}


def _photo(name: str) -> Image.Image:
    import skimage.data

    if name.startswith("stereo_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        array = left if name == "stereo_left" else right
    else:
        array = getattr(skimage.data, name)()
    image = Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB")
    image.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
    return image


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """chelsea and coffee with one copy per edit; astronaut, rocket and the two eyes of the
    stereo motorcycle photo (the same scene from two viewpoints: not a copy) alone. Indexed
    with the default model."""
    root = tmp_path_factory.mktemp("planted")
    photos = root / "photos"
    photos.mkdir()
    files: dict[str, str] = {}
    for name in ("chelsea", "coffee", "astronaut", "rocket", "stereo_left", "stereo_right"):
        image = _photo(name)
        path = photos / f"{name}.png"
        image.save(path)
        files[name] = str(path)
        if name in ("chelsea", "coffee"):
            for edit, apply in EDITS.items():
                copy = photos / f"{name}-{edit}.png"
                apply(image).save(copy)
                files[f"{name}-{edit}"] = str(copy)
    db = root / "db"
    with Collection.open(db, model=DEFAULT_MODEL, create=True) as col:
        report = col.index([photos])
    assert report.added == len(files)
    return {"db": db, "files": files}


def _group_of(groups: list[Any], path: str) -> set[str]:
    for group in groups:
        if path in group.paths:
            return set(group.paths)
    return {path}


def test_every_edit_joins_its_original_and_unrelated_photos_stay_alone(
    planted: dict[str, Any],
) -> None:
    files = planted["files"]
    with Collection.open(planted["db"]) as col:
        groups = col.duplicates(threshold=0.95)
        assert col.duplicates_note is None
    for name in ("chelsea", "coffee"):
        expected = {files[name], *(files[f"{name}-{edit}"] for edit in EDITS)}
        assert _group_of(groups, files[name]) == expected
    for name in ("astronaut", "rocket", "stereo_left", "stereo_right"):
        assert _group_of(groups, files[name]) == {files[name]}, name
    assert len(groups) == 2
    for group in groups:
        for member in group.members[1:]:
            # Verified exactly when the CNN score alone would not have joined it.
            assert member.verified == (member.score < 0.95 - 1e-5), member.path
        assert any(m.verified for m in group.members)  # the rotations at least


def test_each_candidate_pair_is_verified_once(
    planted: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pair that fails is not checked again from its other end (the unrelated photos'
    candidates, here), and the groups are the same as the first test's."""
    asked: list[tuple[int, int]] = []
    check = Verifier.check

    def counted(self: Verifier, a: int, b: int) -> Any:
        asked.append((a, b))
        return check(self, a, b)

    monkeypatch.setattr(Verifier, "check", counted)
    files = planted["files"]
    with Collection.open(planted["db"]) as col:
        groups = col.duplicates(threshold=0.95)
    assert asked  # the rotations at least were candidates
    assert all(a < b for a, b in asked)
    assert len(set(asked)) == len(asked)
    for name in ("chelsea", "coffee"):
        expected = {files[name], *(files[f"{name}-{edit}"] for edit in EDITS)}
        assert _group_of(groups, files[name]) == expected


def test_without_verification_rotations_and_grey_stay_out(planted: dict[str, Any]) -> None:
    files = planted["files"]
    with Collection.open(planted["db"]) as col:
        plain = col.duplicates(threshold=0.95, verify=False)
        verified = col.duplicates(threshold=0.95)
    for name in ("chelsea", "coffee"):
        alone = _group_of(plain, files[name])
        assert files[f"{name}-rot30"] not in alone
        assert alone < _group_of(verified, files[name])
    assert not any(m.verified for g in plain for m in g.members)


def test_pairs_list_verified_pairs_after_the_scored_ones(planted: dict[str, Any]) -> None:
    files = planted["files"]
    with Collection.open(planted["db"]) as col:
        pairs = col.duplicate_pairs(threshold=0.95)
        plain = col.duplicate_pairs(threshold=0.95, verify=False)
    assert not any(p.verified for p in plain)
    assert [p for p in pairs if not p.verified] == plain
    flags = [p.verified for p in pairs]
    assert flags == sorted(flags)  # scored pairs first, then verified ones
    verified = {frozenset((p.a, p.b)) for p in pairs if p.verified}
    assert frozenset((files["chelsea"], files["chelsea-rot30"])) in verified
    assert all(p.score < 0.95 for p in pairs if p.verified)
    stereo = frozenset((files["stereo_left"], files["stereo_right"]))
    assert stereo not in {frozenset((p.a, p.b)) for p in pairs}


def test_cli_json_marks_verified_members_and_no_verify_turns_it_off(
    planted: dict[str, Any], cli: Callable[..., Any]
) -> None:
    files = planted["files"]
    result = cli("duplicates", "--db", planted["db"], "--json")
    assert result.exit_code == 0, result.output
    groups = json.loads(result.stdout)
    members = {m["path"]: m for g in groups for m in g["members"]}
    assert members[files["chelsea-rot30"]]["verified"] is True
    assert members[files["chelsea"]]["verified"] is False
    result = cli("duplicates", "--db", planted["db"], "--json", "--no-verify")
    assert result.exit_code == 0, result.output
    assert files["chelsea-rot30"] not in {p for g in json.loads(result.stdout) for p in g["paths"]}
    result = cli("duplicates", "--db", planted["db"], "--pairs")
    assert result.exit_code == 0
    assert any(line.endswith("verified") for line in result.stdout.splitlines())


def test_without_opencv_verification_is_skipped_with_a_note(
    planted: dict[str, Any], cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "available", lambda: False)
    with Collection.open(planted["db"]) as col:
        groups = col.duplicates(threshold=0.95)
        assert col.duplicates_note is not None and "OpenCV is not installed" in col.duplicates_note
        plain = col.duplicates(threshold=0.95, verify=False)
        assert col.duplicates_note is None
    assert [g.paths for g in groups] == [g.paths for g in plain]
    result = cli("duplicates", "--db", planted["db"])
    assert result.exit_code == 0
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "verification of pairs below 0.95 skipped" in notes[0]


def test_a_copy_moved_away_is_not_verified_and_said(
    planted: dict[str, Any], tmp_path: Path
) -> None:
    files = planted["files"]
    paths = {1: files["chelsea"], 2: str(tmp_path / "gone.png")}
    verifier = Verifier(lambda i: paths[i])
    assert not verifier.check(1, 2).passes(verifier.settings)
    assert verifier.unreadable == [paths[2]]


@pytest.mark.parametrize("edit", list(EDITS))
def test_each_edit_passes_and_another_photo_does_not(planted: dict[str, Any], edit: str) -> None:
    files = planted["files"]
    order = ["coffee", f"coffee-{edit}", "chelsea", "rocket"]
    verifier = Verifier(lambda i: files[order[i]])
    copy = verifier.check(0, 1)
    assert copy.passes(verifier.settings), (edit, copy)
    if edit != "flip":  # (coffee's cup is near symmetric: its flip also matches unmirrored)
        assert not copy.mirrored
    for other in (2, 3):
        assert not verifier.check(0, other).passes(verifier.settings)


def test_mirrored_descriptors_are_a_permutation() -> None:
    import cv2

    opencv: Any = cv2  # its stubs do not declare SIFT_create
    grey = np.asarray(_photo("astronaut").convert("L"))
    sift = opencv.SIFT_create(nfeatures=VerifySettings().features)
    _, ours = sift.detectAndCompute(grey, None)
    _, mirrored = sift.detectAndCompute(np.ascontiguousarray(grey[:, ::-1]), None)
    matcher = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True)
    # Permuted, our descriptors find their mirrored twins (nearly distance 0) ...
    permuted = np.ascontiguousarray(ours[:, MIRROR])
    assert np.mean([m.distance < 50 for m in matcher.match(permuted, mirrored)]) > 0.8
    # ... and unpermuted they mostly do not.
    assert np.mean([m.distance < 50 for m in matcher.match(ours, mirrored)]) < 0.3
