"""Near-duplicate recall and precision per edit type, with a perceptual-hash baseline.

Run through ``python benchmarks/near_duplicates.py OUT_DIR --duplicates [--model M]``.
Each offline original photo (the same set as the copy-detection benchmark) gets planted
copies, one per edit the issue names: JPEG re-saves at quality 75 and 40, a squash to
another aspect ratio, a crop of 10% per side, a mirror flip, a grey-scale copy, rotations by
10 and 30 degrees. Originals, copies and unrelated distractors are indexed into a fresh
collection; then for each edit type:

- pair recall at threshold t: copies whose cosine to their original is >= t;
- group recall: copies that `duplicates` puts in their original's group (at each t);
- precision: joined pairs (copy-original or any other) that really are copy and original.

Unrelated pairs are all pairs of images from different sources (copies included); their
highest score bounds where a threshold may go. The baseline is imagededup's default pHash
rule (64-bit ``imagehash.phash``, Hamming distance <= 10) on the same files.

The second stage (lookalike.verify: SIFT + RANSAC affine on pairs the kNN graph finds
between CANDIDATE_FLOOR and the threshold) is measured too: ``duplicates`` with and without
it at 0.95 (groups, wall time), and a calibration of its decision rule: the sources are
split in two halves by name (validation: every other one, held-out: the rest); every copy
pair and every unrelated pair scoring >= CANDIDATE_FLOOR is verified once (and, per edit,
the share of copies each candidate floor in FLOORS would hand to verification), the rule
(least inliers, least inlier share) is chosen on the validation half only (no unrelated
pair accepted, then most copies found, then the middle of the rules that tie, to keep a
margin on both sides), and recall and false accepts are reported on the held-out half, for
the chosen rule and for the shipped default.
The output is one JSON object.
"""

from __future__ import annotations

import io
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97)
DEFAULT_THRESHOLD = 0.95
# Candidate floors tried for verification: the share of each hard edit's copies that score
# >= the floor and rank within CANDIDATE_K of their original (what verification gets to see).
FLOORS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
SHARES = (0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
INLIERS = (10, 15, 20, 25, 30, 40, 50, 60)
PHASH_MAX_DISTANCE = 10  # imagededup's default for PHash.find_duplicates


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _crop10(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((w // 10, h // 10, w - w // 10, h - h // 10))


def _squash(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.resize((round(w * 1.35), h), Image.Resampling.LANCZOS)  # 4:3 -> ~16:9


EDITS: dict[str, Any] = {
    "jpeg-q75": lambda im: _jpeg(im, 75),
    "jpeg-q40": lambda im: _jpeg(im, 40),
    "aspect": _squash,
    "crop10": _crop10,
    "flip": ImageOps.mirror,
    "grey": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "rot10": lambda im: im.rotate(10, resample=Image.Resampling.BICUBIC, expand=True),
    "rot30": lambda im: im.rotate(30, resample=Image.Resampling.BICUBIC, expand=True),
}


def plant(out_dir: Path) -> dict[str, tuple[str, str]]:
    """Write originals, copies and distractors; path -> (source name, edit or "")."""
    from near_duplicates import distractors, originals  # type: ignore[import-not-found]

    photos = out_dir / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    labels: dict[str, tuple[str, str]] = {}
    for name, photo in originals():
        path = photos / f"{name}.png"
        photo.save(path)
        labels[str(path)] = (name, "")
        for edit, apply in EDITS.items():
            copy = photos / f"{name}--{edit}.png"  # lossless: the edit is the only change
            apply(photo).save(copy)
            labels[str(copy)] = (name, edit)
    for name, photo in distractors():
        path = photos / f"distractor-{name}.png"
        photo.save(path)
        labels[str(path)] = (f"distractor-{name}", "")
    return labels


def measure(out_dir: Path, model: str | None) -> dict[str, Any]:
    import imagehash

    from lookalike.collection import Collection
    from model_spec import model_spec  # type: ignore[import-not-found]

    labels = plant(out_dir)
    paths = sorted(labels)
    # A spec (model_spec.py): "efficientnet-lite0-int8@gem-2stage", or "@avg" for the default.
    name, options = model_spec(model or "")
    with Collection.open(
        out_dir / "db", model=name or None, model_options=options, create=True
    ) as col:
        col.index([out_dir / "photos"])
        ids = [col.store.by_path(p).id for p in paths]  # type: ignore[union-attr]
        vectors = col.store.vectors_for(ids).astype(np.float64)
        model_name = col.store.manifest["model"]["model"]
        groups = {t: col.duplicates(threshold=t, verify=False) for t in THRESHOLDS}
        started = time.perf_counter()
        col.duplicates(threshold=DEFAULT_THRESHOLD, verify=False)
        seconds_plain = time.perf_counter() - started
        started = time.perf_counter()
        verified_groups = col.duplicates(threshold=DEFAULT_THRESHOLD, verify=True)
        seconds_verified = time.perf_counter() - started
        path_of = {i: p for i, p in zip(ids, paths, strict=True)}
    scores = vectors @ vectors.T
    with_index = {p: i for i, p in enumerate(paths)}
    hashes = [imagehash.phash(Image.open(p)) for p in paths]

    copy_pairs = {  # edit -> [(copy index, original index)]
        edit: [
            (with_index[p], with_index[str(Path(p).with_name(f"{src}.png"))])
            for p, (src, e) in labels.items()
            if e == edit
        ]
        for edit in EDITS
    }
    unrelated = [
        (i, j)
        for i, j in itertools.combinations(range(len(paths)), 2)
        if labels[paths[i]][0] != labels[paths[j]][0]
    ]
    worst = max(unrelated, key=lambda ij: scores[ij])
    phash_fp = sum(hashes[i] - hashes[j] <= PHASH_MAX_DISTANCE for i, j in unrelated)

    per_edit: dict[str, Any] = {}
    for edit, pairs in copy_pairs.items():
        s = [float(scores[c, o]) for c, o in pairs]
        per_edit[edit] = {
            "copies": len(pairs),
            "score_min": round(min(s), 4),
            "score_median": round(float(np.median(s)), 4),
            "pair_recall": {str(t): round(np.mean([x >= t for x in s]), 3) for t in THRESHOLDS},
            "group_recall": {
                str(t): round(_group_recall(groups[t], pairs, paths), 3) for t in THRESHOLDS
            },
            "phash_recall": round(
                float(np.mean([hashes[c] - hashes[o] <= PHASH_MAX_DISTANCE for c, o in pairs])), 3
            ),
        }
    precision = {str(t): _group_precision(groups[t], labels) for t in THRESHOLDS}
    verification = _verification(
        scores, copy_pairs, unrelated, labels, paths, [path_of[i] for i in ids]
    )
    for edit, pairs in copy_pairs.items():
        per_edit[edit]["candidate_floor_coverage"] = _floor_coverage(scores, pairs)
        per_edit[edit]["group_recall_verified_0.95"] = round(
            _group_recall(verified_groups, pairs, paths), 3
        )
        per_edit[edit]["held_out"] = verification["held_out_per_edit"][edit]
    return {
        "duplicates_seconds": {
            "without_verification": round(seconds_plain, 2),
            "with_verification": round(seconds_verified, 2),
        },
        "group_precision_verified_0.95": _group_precision(verified_groups, labels),
        "verification": {k: v for k, v in verification.items() if k != "held_out_per_edit"},
        "model": model_name,
        "images": len(paths),
        "originals": sum(1 for src, e in labels.values() if not e and "distractor" not in src),
        "unrelated_pairs": len(unrelated),
        "unrelated_max_score": round(float(scores[worst]), 4),
        "unrelated_max_pair": [Path(paths[worst[0]]).name, Path(paths[worst[1]]).name],
        "unrelated_pairs_at_or_above": {
            str(t): int(sum(scores[ij] >= t for ij in unrelated)) for t in THRESHOLDS
        },
        "group_precision": precision,
        "phash_unrelated_pairs_within_10": int(phash_fp),
        "per_edit": per_edit,
    }


def _floor_coverage(scores: np.ndarray, pairs: list[tuple[int, int]]) -> dict[str, float]:
    from lookalike.duplicates import CANDIDATE_K

    others = scores - 2 * np.eye(len(scores))  # an image is not its own neighbour
    seen = [(others[o, c], int((others[o] > others[o, c]).sum()) < CANDIDATE_K) for c, o in pairs]
    return {str(f): round(float(np.mean([s >= f and near for s, near in seen])), 3) for f in FLOORS}


def _group_recall(groups: list[Any], pairs: list[tuple[int, int]], paths: list[str]) -> float:
    group_of = {p: n for n, g in enumerate(groups) for p in g.paths}
    joined = [
        paths[c] in group_of and group_of.get(paths[c]) == group_of.get(paths[o]) for c, o in pairs
    ]
    return float(np.mean(joined))


def _group_precision(groups: list[Any], labels: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Pairs inside groups that share a source, over all pairs inside groups."""
    good = total = 0
    mixed = 0
    for g in groups:
        sources = [labels[p][0] for p in g.paths]
        mixed += len(set(sources)) > 1
        for a, b in itertools.combinations(sources, 2):
            total += 1
            good += a == b
    return {
        "groups": len(groups),
        "groups_mixing_sources": mixed,
        "pair_precision": round(good / total, 4) if total else None,
    }


def _verification(
    scores: np.ndarray,
    copy_pairs: dict[str, list[tuple[int, int]]],
    unrelated: list[tuple[int, int]],
    labels: dict[str, tuple[str, str]],
    paths: list[str],
    files: list[str],
) -> dict[str, Any]:
    """Verdicts for every copy pair and every unrelated candidate; the rule calibrated on
    the validation half; recall per edit and false accepts on the held-out half."""
    from lookalike.duplicates import CANDIDATE_FLOOR
    from lookalike.verify import Verifier, VerifySettings

    default = VerifySettings()
    verifier = Verifier(lambda i: files[i], default)
    sources = sorted({src for src, e in labels.values() if e})
    validation = set(sources[0::2])
    held_out = set(sources[1::2])
    source = [labels[p][0] for p in paths]

    def half_of(i: int, j: int) -> str | None:
        names = {source[i], source[j]}
        if not names & held_out:
            return "validation"
        if not names & validation:
            return "held_out"
        return None  # one image from each half: in neither

    candidates = [ij for ij in unrelated if scores[ij] >= CANDIDATE_FLOOR]
    started = time.perf_counter()
    verdict = {(c, o): verifier.check(c, o) for pairs in copy_pairs.values() for c, o in pairs}
    verdict.update({(i, j): verifier.check(i, j) for i, j in candidates})
    seconds = time.perf_counter() - started

    def found(pair: tuple[int, int], share: float, inliers: int) -> bool:
        score = scores[pair]
        if score >= DEFAULT_THRESHOLD:
            return True
        v = verdict[pair]
        return bool(score >= CANDIDATE_FLOOR and v.inliers >= inliers and v.share >= share)

    def evaluate(half: str, share: float, inliers: int) -> tuple[float, int]:
        copies = [p for ps in copy_pairs.values() for p in ps if half_of(*p) == half]
        recall = float(np.mean([found(p, share, inliers) for p in copies]))
        wrong = sum(
            found(p, share, inliers) and scores[p] < DEFAULT_THRESHOLD
            for p in candidates
            if half_of(*p) == half
        )
        return recall, int(wrong)

    grid = [(s, n) for s in SHARES for n in INLIERS]
    results = {rule: evaluate("validation", *rule) for rule in grid}
    clean = [rule for rule in grid if results[rule][1] == 0]
    chosen = _centre(clean, results) if clean else None
    shipped = (default.min_share, default.min_inliers)
    many = [p for p in candidates if verdict[p].inliers >= shipped[1]]
    unrelated_top = sorted(many, key=lambda p: -verdict[p].share)[:3]
    most_inliers = max(
        (verdict[p].inliers for p in candidates if verdict[p].share >= shipped[0]), default=0
    )
    out: dict[str, Any] = {
        "candidate_floor": CANDIDATE_FLOOR,
        "validation_sources": len(validation),
        "held_out_sources": len(held_out),
        "unrelated_candidates": len(candidates),
        "seconds_verifying_all": round(seconds, 1),
        "chosen_on_validation": {"min_share": chosen[0], "min_inliers": chosen[1]}
        if chosen
        else None,
        "shipped": {"min_share": shipped[0], "min_inliers": shipped[1]},
        "validation_recall_chosen": round(results[chosen][0], 3) if chosen else None,
        "held_out_chosen": _recall_wrong(evaluate("held_out", *chosen)) if chosen else None,
        "held_out_shipped": _recall_wrong(evaluate("held_out", *shipped)),
        "unrelated_most_inliers_at_shipped_share": most_inliers,
        "unrelated_highest_share_at_shipped_inliers": [
            {
                "pair": [Path(paths[i]).name, Path(paths[j]).name],
                "score": round(float(scores[i, j]), 4),
                "matches": verdict[(i, j)].matches,
                "inliers": verdict[(i, j)].inliers,
                "share": round(verdict[(i, j)].share, 3),
            }
            for i, j in unrelated_top
        ],
        "held_out_per_edit": {},
    }
    for edit, pairs in copy_pairs.items():
        mine = [p for p in pairs if half_of(*p) == "held_out"]
        shares = [verdict[p].share for p in pairs if verdict[p].matches >= 3]
        out["held_out_per_edit"][edit] = {
            "copies": len(mine),
            "cnn_only": round(float(np.mean([scores[p] >= DEFAULT_THRESHOLD for p in mine])), 3),
            "with_verification": round(float(np.mean([found(p, *shipped) for p in mine])), 3),
            "share_min_all": round(min(shares), 3) if shares else None,
        }
    return out


def _recall_wrong(result: tuple[float, int]) -> dict[str, Any]:
    return {"copy_recall": round(result[0], 3), "unrelated_accepted": result[1]}


def _centre(rules: list[tuple[float, int]], results: dict[Any, tuple[float, int]]) -> Any:
    """Of the rules with the best recall, the median share, then the median inliers."""
    best = max(results[r][0] for r in rules)
    top = [r for r in rules if results[r][0] == best]
    shares = sorted({r[0] for r in top})
    share = shares[(len(shares) - 1) // 2]
    inliers = sorted(r[1] for r in top if r[0] == share)
    return share, inliers[(len(inliers) - 1) // 2]
