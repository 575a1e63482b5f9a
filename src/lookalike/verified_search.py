"""The image side of ``--rerank verify``: which shortlisted images a query's image maps onto.

reranking.py orders candidates by vectors only; verification needs pixels, so the
collection builds this callback from its queries (files, or images given in memory) and
its stored paths. One Verifier per search call: each image's local features are computed
once (bounded cache), whether it is a candidate of one query or of many; with ``files``
(a collection's FeatureCache) stored files' features outlive the call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from PIL import Image

from lookalike import verify
from lookalike.errors import RerankError
from lookalike.reranking import Rerank, Verified
from lookalike.vectors import IdArray

QuerySource = str | Image.Image  # a query's file, or the image itself


def check_settings(setup: Rerank) -> verify.VerifySettings:
    """The check a ``verify`` setup runs: `duplicates`' own, with the setup's inliers, share
    and SIFT contrast."""
    return replace(
        verify.VerifySettings(),
        min_inliers=setup.inliers,
        min_share=setup.share,
        contrast=setup.contrast,
    )


def make_verified(
    setup: Rerank,
    sources: Sequence[QuerySource],
    paths_of: Callable[[list[int]], dict[int, str]],
    files: verify.FeatureCache | None = None,
) -> Verified:
    """``sources[row]`` is query row's image; ``paths_of`` gives stored images' files."""
    if not verify.available():
        raise RerankError(f"--rerank verify needs OpenCV: {verify.INSTALL_HINT}")
    settings = check_settings(setup)
    known: dict[int, QuerySource] = {}
    verifier = verify.Verifier(lambda image_id: known[image_id], settings, files=files)

    def verified(row: int, candidates: IdArray) -> np.ndarray:
        query_id = -2 - row  # stored ids are >= 0, and -1 is MISSING_ID
        known[query_id] = sources[row]
        wanted = [int(i) for i in candidates if int(i) not in known]
        known.update(paths_of(wanted) if wanted else {})
        return np.array(
            [
                int(c) in known and verifier.check(query_id, int(c)).passes(settings)
                for c in candidates
            ],
            dtype=bool,
        )

    return verified
