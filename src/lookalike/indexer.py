"""Incremental indexing: bring a collection in line with what is on disk under some paths.

Only new or changed files are embedded. A file whose content (hash) is already stored at a
path that disappeared counts as moved and keeps its vector. Files gone from disk under the
given paths are dropped. Work is committed in batches, so an interrupted run keeps what it
committed and the next run resumes from there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookalike.backends.base import StorageBackend
from lookalike.engines import EmbedEngine, LocalEngine
from lookalike.errors import CollectionError
from lookalike.hashing import digest_many
from lookalike.images import absolute, scan
from lookalike.models.base import Embedder
from lookalike.store import ImageRecord, NewImage

# Commit at least this often (images) so a crash loses little work.
COMMIT_EVERY = 256
COMMIT_SECONDS = 10.0
COMMIT_EVERY_ENV = "LOOKALIKE_COMMIT_EVERY"  # overrides COMMIT_EVERY (crash tests use 4)

ProgressFn = Callable[[int, int], None]  # (done, total) of the files to embed


@dataclass
class Skip:
    path: str
    reason: str


@dataclass
class IndexReport:
    """What one `index` run did. ``total`` is the collection's size afterwards."""

    model: str
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    total: int = 0
    ignored: int = 0  # non-image files seen and left alone
    repaired: int = 0  # images re-embedded because their rows were cut off vectors.f32
    skipped: list[Skip] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # PATHs given that do not exist
    index: dict[str, Any] = field(default_factory=dict)  # what the search index did

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "moved": self.moved,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "total": self.total,
            "ignored": self.ignored,
            "repaired": self.repaired,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "model": self.model,
            "index": self.index,
        }


@dataclass
class _Candidate:
    path: Path
    size: int
    mtime_ns: int
    digest: str = ""  # "" until hashed (_needs_early_hash, or the pipeline's read)
    previous: ImageRecord | None = None  # stored record at the same path (a changed file)
    unreadable: bool = False


def _reason(text: str, path: Path) -> str:
    """Reasons from the image loader start with the path; the JSON has it separately."""
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def index_paths(
    store: StorageBackend,
    embedder: Embedder,
    paths: Sequence[str | os.PathLike[str]],
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    engine: EmbedEngine | None = None,
) -> IndexReport:
    """``engine``: where embedding runs (engines.LocalEngine, this process's threads, if None)."""
    report = IndexReport(model=embedder.info.name)
    found = scan(paths)
    report.ignored = found.ignored
    report.skipped.extend(Skip(str(p), r) for p, r in found.errors)
    report.missing = [str(p) for p in found.missing]

    # Everything stored under the roots that exist; roots that vanished (an unmounted
    # drive, a typo) are reported above and their images are kept.
    stored: dict[str, ImageRecord] = {}
    stale_skips: set[str] = set()
    for raw in paths:
        root = absolute(raw)  # spelled exactly as scan() spells the files under it
        if root.exists():
            stored.update(store.records_under(str(root)))
            stale_skips.update(store.skipped_under(str(root)))

    candidates: list[_Candidate] = []
    touches: list[tuple[int, int, int]] = []
    skips: list[tuple[str, int, int, str]] = []
    present: set[str] = set()
    for path in found.files:
        key = str(path)
        present.add(key)
        try:
            st = path.stat()
        except OSError as exc:
            report.skipped.append(Skip(key, f"cannot stat ({exc.strerror or exc})"))
            continue
        record = stored.get(key)
        if record and record.size == st.st_size and record.mtime_ns == st.st_mtime_ns:
            report.unchanged += 1
            continue
        known_bad = store.skipped_entry(key)
        if known_bad and known_bad[:2] == (st.st_size, st.st_mtime_ns):
            report.skipped.append(Skip(key, known_bad[2]))  # same broken file as last time
            continue
        candidates.append(_Candidate(path, st.st_size, st.st_mtime_ns, previous=record))

    # Hashed now only where the hash decides something before embedding: a file changed
    # at its path (a touch?), or one whose size a stored image has (a move or a copy?).
    # The rest are read once, by the pipeline, which hashes the very bytes it decodes.
    early = _needs_early_hash(store, candidates)
    for cand, digest in zip(early, digest_many([c.path for c in early]), strict=True):
        if isinstance(digest, OSError):
            reason = f"cannot read ({digest.strerror or digest})"
            report.skipped.append(Skip(str(cand.path), reason))
            skips.append((str(cand.path), cand.size, cand.mtime_ns, reason))
            cand.unreadable = True
        else:
            cand.digest = digest
    candidates = [c for c in candidates if not c.unreadable]

    # Same content as before at the same path (a touch): keep the vector.
    to_embed: list[_Candidate] = []
    for cand in candidates:
        if cand.previous and cand.digest and cand.previous.hash == cand.digest:
            touches.append((cand.previous.id, cand.size, cand.mtime_ns))
            report.unchanged += 1
        else:
            to_embed.append(cand)

    # Moves: a new path whose content was stored at a path that is gone.
    gone = {p: r for p, r in stored.items() if p not in present}
    # Several gone files may share content (copies moved together): each can be a source.
    gone_by_hash: dict[str, list[ImageRecord]] = {}
    for record in gone.values():
        gone_by_hash.setdefault(record.hash, []).append(record)
    moves: list[tuple[int, str, int, int]] = []
    remaining: list[_Candidate] = []
    for cand in to_embed:
        early_new = cand.previous is None and cand.digest
        sources = gone_by_hash.get(cand.digest) if early_new else None
        source = sources.pop(0) if sources else None
        if source is not None:
            moves.append((source.id, str(cand.path), cand.size, cand.mtime_ns))
            del gone[source.path]
        else:
            remaining.append(cand)
    report.moved = len(moves)
    report.removed = len(gone)
    store.apply_changes(
        moves=moves,
        touches=touches,
        removals=[r.id for r in gone.values()],
        skips=skips,
        unskips=sorted(stale_skips - present),  # skipped files that are gone now
    )

    # Copies of content stored elsewhere reuse that vector instead of embedding again.
    fresh: list[_Candidate] = []
    copies: list[tuple[_Candidate, ImageRecord]] = []
    for cand in remaining:
        twin = store.by_hash(cand.digest) if cand.digest else None
        if twin is not None and twin.path != str(cand.path):
            copies.append((cand, twin))
        else:
            fresh.append(cand)
    if copies:
        vectors = store.vectors_for([twin.id for _, twin in copies])
        store.add_images([_new_image(c, (t.width, t.height)) for c, t in copies], vectors)
        _count_added(report, [c for c, _ in copies])

    _embed_and_commit(store, embedder, fresh, batch_size, report, progress, engine)
    report.total = store.count()
    return report


def _needs_early_hash(store: StorageBackend, cands: list[_Candidate]) -> list[_Candidate]:
    """The candidates whose hash is needed before embedding (see index_paths)."""
    sizes = store.sizes_present(c.size for c in cands if c.previous is None)
    return [c for c in cands if c.previous is not None or sizes is None or c.size in sizes]


def _new_image(cand: _Candidate, size: tuple[int | None, int | None]) -> NewImage:
    return NewImage(
        path=str(cand.path),
        size=cand.size,
        mtime_ns=cand.mtime_ns,
        hash=cand.digest,
        width=size[0],
        height=size[1],
    )


def _count_added(report: IndexReport, cands: Sequence[_Candidate]) -> None:
    for cand in cands:
        if cand.previous is None:
            report.added += 1
        else:
            report.updated += 1


def _commit_every() -> int:
    raw = os.environ.get(COMMIT_EVERY_ENV)
    if not raw:
        return COMMIT_EVERY
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise CollectionError(f"{COMMIT_EVERY_ENV} must be a whole number >= 1, got {raw!r}")
    return value


def _embed_and_commit(
    store: StorageBackend,
    embedder: Embedder,
    cands: list[_Candidate],
    batch_size: int,
    report: IndexReport,
    progress: ProgressFn | None,
    engine: EmbedEngine | None = None,
) -> None:
    import numpy as np

    commit_every = _commit_every()
    done = 0
    if progress:
        progress(0, len(cands))
    pending_images: list[NewImage] = []
    pending_vectors: list[Any] = []
    pending_cands: list[_Candidate] = []
    last_commit = time.monotonic()

    def commit() -> None:
        nonlocal last_commit
        if pending_images:
            store.add_images(pending_images, np.concatenate(pending_vectors))
            _count_added(report, pending_cands)
        pending_images.clear()
        pending_vectors.clear()
        pending_cands.clear()
        last_commit = time.monotonic()

    engine = engine or LocalEngine()
    # Batches may come in any order (a cluster): their indices say which files they are.
    for batch in engine.embed(embedder, [c.path for c in cands], batch_size):
        failed = []
        for index, reason in batch.failures:
            cand = cands[index]
            text = _reason(reason, cand.path)
            report.skipped.append(Skip(str(cand.path), text))
            failed.append((str(cand.path), cand.size, cand.mtime_ns, text))
        if failed:
            store.apply_changes(skips=failed)
        for index, size, read in zip(batch.indices, batch.sizes, batch.reads, strict=True):
            cand = cands[index]
            # Stored with the hash, size and mtime of the bytes actually embedded (the file
            # may have been replaced since it was hashed above).
            cand.digest, cand.size, cand.mtime_ns = read.digest, read.size, read.mtime_ns
            pending_images.append(_new_image(cand, size))
            pending_cands.append(cand)
        if batch.indices:
            pending_vectors.append(batch.vectors)
        done += len(batch.indices) + len(batch.failures)
        if len(pending_images) >= commit_every or time.monotonic() - last_commit > COMMIT_SECONDS:
            commit()
        if progress:
            progress(done, len(cands))
    commit()
