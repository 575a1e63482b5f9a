"""Remember, per machine, that a model failed to build or to pass its check here.

Building the int8 model and checking it against the float network takes 5-24 s; when it
fails on a machine it fails the same way next time, so each new collection would pay
that again before falling back to fp32. A failure is recorded as a small JSON file in
the cache dir (``failed-builds/<key>.json``), keyed by everything the outcome depends
on (the caller's ``parts``: model cache key, scheme, thresholds, library versions, CPU
flags...). Any change in those gives a new key, so it is retried.

To retry by hand: ``LOOKALIKE_RETRY_BUILD=1`` (ignores and clears the record), or
delete the file (or the whole cache dir, which holds derived files only).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

from lookalike.models.weights import atomic_path, cache_dir

RETRY_ENV = "LOOKALIKE_RETRY_BUILD"
FOLDER = "failed-builds"


def record_path(parts: dict[str, str]) -> Path:
    blob = json.dumps(parts, sort_keys=True).encode()
    return cache_dir() / FOLDER / f"{hashlib.sha256(blob).hexdigest()[:24]}.json"


def retry_requested() -> bool:
    return os.environ.get(RETRY_ENV, "").strip().lower() not in ("", "0", "false", "no")


def recall(parts: dict[str, str]) -> str | None:
    """The reason of a failure recorded for exactly these ``parts``, or None (also when
    a retry is asked for: the record is then removed)."""
    try:
        path = record_path(parts)
        if retry_requested():
            path.unlink(missing_ok=True)
            return None
        record = json.loads(path.read_text())
    except (OSError, ValueError):  # none, unreadable or damaged: try the build
        return None
    if not isinstance(record, dict) or record.get("parts") != parts:
        return None
    reason = record.get("reason")
    return reason if isinstance(reason, str) and reason else None


def remember(parts: dict[str, str], reason: str) -> None:
    """Record a failure; an unusable cache dir only means trying again next time."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = {"parts": parts, "reason": reason, "when": when}
    with contextlib.suppress(OSError), atomic_path(record_path(parts)) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
