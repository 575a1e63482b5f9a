"""Second stage of `duplicates`: local features + geometric verification of candidate pairs.

A global CNN vector moves a lot under rotation, grey scale and cropping (a 30-degree
rotation scores ~0.6 to its original), so pairs the kNN graph finds at a loose score are
checked here: SIFT keypoints of both images (matched as they are and mirrored, for flips),
Lowe's ratio test, then a RANSAC affine fit. A copy made by re-saving, resizing, cropping,
rotating, flipping or greying maps onto its original by one affine transform, so nearly all
its matches are inliers; the same scene from another viewpoint (a stereo pair, a burst shot)
has parallax, and under a tight reprojection error fewer than half fit.

Needs OpenCV (the ``verify`` extra, ``opencv-python-headless``); without it ``available()``
is False and `duplicates` says verification was skipped. Only candidate pairs are checked,
and each image's features are computed once while they stay in a bounded cache; a
FeatureCache keeps stored files' features across Verifiers (a server's searches).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from lookalike.errors import ImageReadError
from lookalike.images import load_image

PairKey = tuple[int, int]
INSTALL_HINT = "pip install 'lookalike[verify]' (opencv-python-headless)"

# A SIFT descriptor is a 4 x 4 grid of 8-bin orientation histograms in the keypoint's frame.
# Mirroring the image reflects that frame across the keypoint's orientation: grid rows swap
# (r -> 3 - r) and angles negate (bin o -> -o mod 8). So the mirrored image's descriptors are
# a permutation of these ones (checked: 521 of 528 matches inliers on a photo against its
# mirror), and a flip costs no second SIFT pass; the affine fit handles the reflection.
MIRROR = np.arange(128).reshape(4, 4, 8)[::-1][:, :, (8 - np.arange(8)) % 8].reshape(-1)


@dataclass(frozen=True)
class VerifySettings:
    """Calibrated on the validation half of benchmarks/duplicate_edits.py's planted set (see
    BENCHMARKS.md, "Near duplicates per edit type"): copies kept >= 0.62 of their matches
    as inliers, the other eye of a stereo photo <= 0.50."""

    side: int = 512  # longer side the images are shrunk to (never enlarged)
    features: int = 1000  # SIFT keypoints kept per image, strongest first
    contrast: float = 0.04  # SIFT's contrast threshold (OpenCV's default): weaker extrema dropped
    ratio: float = 0.8  # Lowe's ratio test
    reprojection: float = 1.5  # RANSAC inlier distance in pixels at `side`
    min_inliers: int = 30  # fewer: too little evidence (flat or tiny images)
    min_share: float = 0.6  # inliers / ratio-test matches


@dataclass(frozen=True)
class Verdict:
    matches: int  # ratio-test matches
    inliers: int  # of those, consistent with one affine map
    mirrored: bool  # found against the mirrored second image

    @property
    def share(self) -> float:
        return self.inliers / self.matches if self.matches else 0.0

    def passes(self, settings: VerifySettings) -> bool:
        return self.inliers >= settings.min_inliers and self.share >= settings.min_share


NO_MATCH = Verdict(0, 0, False)


def available() -> bool:
    """Whether OpenCV can be imported (checked without importing it)."""
    return importlib.util.find_spec("cv2") is not None


@dataclass(frozen=True)
class Features:
    points: np.ndarray  # (n, 2) float32 keypoint positions
    descriptors: np.ndarray  # (n, 128) float32


FileKey = tuple[str, int, int, int, int, float]  # path, size, mtime_ns, then the settings'
# side, features and contrast


class FeatureCache:
    """Files' local features, kept across Verifiers: a collection's searches with
    ``--rerank verify`` share their shortlists' files, and SIFT on a file costs more than
    matching it. Keyed by path, size and modification time (a rewritten file is computed
    anew) and by the settings that shape the features. Descriptors are kept as uint8, which
    loses nothing (OpenCV's SIFT descriptors are whole numbers in 0..255; checked on each
    put) and takes a quarter of the memory: at most ``capacity`` x 1000 keypoints x 128
    bytes. Thread-safe."""

    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[FileKey, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(path: str, settings: VerifySettings) -> FileKey | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        shape = (settings.side, settings.features, settings.contrast)
        return (path, stat.st_size, stat.st_mtime_ns, *shape)

    def get(self, key: FileKey) -> Features | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
        points, descriptors = entry
        return Features(points, descriptors.astype(np.float32))

    def put(self, key: FileKey, features: Features) -> None:
        small = features.descriptors.astype(np.uint8)
        # Kept as float if an OpenCV ever gives descriptors that uint8 cannot hold exactly.
        exact = np.array_equal(small, features.descriptors)
        compact = (features.points, small if exact else features.descriptors)
        with self._lock:
            self._entries[key] = compact
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class Verifier:
    """Checks pairs of images by id; ``path_of`` maps an id to its file (or to the image
    itself, for a query that is not a file). ``files``: features of files kept beyond
    this Verifier (see FeatureCache)."""

    def __init__(
        self,
        path_of: Callable[[int], str | Image.Image],
        settings: VerifySettings | None = None,
        cache_size: int = 512,
        files: FeatureCache | None = None,
    ) -> None:
        import cv2  # heavy, optional: imported only when verification runs

        self._cv2: Any = cv2
        self.settings = settings or VerifySettings()
        self._path_of = path_of
        self._sift = self._cv2.SIFT_create(
            nfeatures=self.settings.features, contrastThreshold=self.settings.contrast
        )
        self._matcher = self._cv2.BFMatcher(cv2.NORM_L2)
        self._cache: OrderedDict[int, Features | None] = OrderedDict()
        self._cache_size = cache_size
        self._files = files
        self.unreadable: list[str] = []  # files that could not be read (moved, damaged)

    def check(self, a: int, b: int) -> Verdict:
        """The better of a against b and a against mirrored b (tried only if needed)."""
        straight = self._match(a, b, mirrored=False)
        if straight.passes(self.settings):
            return straight
        flipped = self._match(a, b, mirrored=True)
        if flipped.passes(self.settings):
            return flipped
        return max(straight, flipped, key=lambda v: (v.share, v.inliers))

    def check_all(self, pairs: Iterable[PairKey]) -> dict[PairKey, Verdict]:
        # Sorted so each image's features are reused while it is on one side of many pairs.
        return {pair: self.check(*pair) for pair in sorted(pairs)}

    def _match(self, a: int, b: int, mirrored: bool) -> Verdict:
        fa, fb = self._features(a), self._features(b)
        if fa is None or fb is None or len(fa.points) < 2 or len(fb.points) < 2:
            return NO_MATCH
        theirs = np.ascontiguousarray(fb.descriptors[:, MIRROR]) if mirrored else fb.descriptors
        ratio = self.settings.ratio
        knn = self._matcher.knnMatch(fa.descriptors, theirs, k=2)
        pairs = [
            (m[0].queryIdx, m[0].trainIdx)
            for m in knn
            if len(m) == 2 and m[0].distance < ratio * m[1].distance
        ]
        good = len(pairs)
        if good < 3:  # an affine map needs 3 points
            return Verdict(good, 0, mirrored)
        ours, their = np.array(pairs).T
        src, dst = fa.points[ours], fb.points[their]
        cv2 = self._cv2
        _, inliers = cv2.estimateAffine2D(
            src,
            dst,
            method=cv2.RANSAC,
            ransacReprojThreshold=self.settings.reprojection,
            maxIters=2000,
            confidence=0.99,
        )
        count = int(inliers.sum()) if inliers is not None else 0
        return Verdict(good, count, mirrored)

    def _features(self, image_id: int) -> Features | None:
        if image_id in self._cache:
            self._cache.move_to_end(image_id)
            return self._cache[image_id]
        found = self._compute(image_id)
        self._cache[image_id] = found
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return found

    def _compute(self, image_id: int) -> Features | None:
        source = self._path_of(image_id)
        if self._files is None or isinstance(source, Image.Image):
            return self._extract(source)
        key = FeatureCache.key(source, self.settings)
        kept = self._files.get(key) if key is not None else None
        if kept is not None:
            return kept
        found = self._extract(source)
        if found is not None and key is not None:
            self._files.put(key, found)
        return found

    def _extract(self, source: str | Image.Image) -> Features | None:
        side = self.settings.side
        if isinstance(source, Image.Image):
            image = source.copy()  # thumbnail() below works in place
        else:
            try:
                image = load_image(source, min_side=side)
            except (ImageReadError, OSError):
                self.unreadable.append(source)
                return None
        image.thumbnail((side, side))
        grey = np.asarray(image.convert("L"))
        keypoints, descriptors = self._sift.detectAndCompute(grey, None)
        if descriptors is None or not keypoints:
            return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
        points = np.array([k.pt for k in keypoints], dtype=np.float32)
        return Features(points, descriptors)
