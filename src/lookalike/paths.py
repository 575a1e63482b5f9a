"""Where lookalike keeps things on a user's machine."""

from __future__ import annotations

import os
from pathlib import Path


def default_db() -> Path:
    """$LOOKALIKE_DB, else a `lookalike` folder in the user's data dir."""
    env = os.environ.get("LOOKALIKE_DB")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("lookalike", appauthor=False))


def cache_dir() -> Path:
    """$LOOKALIKE_CACHE, else the user's cache dir (exported models, thumbnails, eval)."""
    env = os.environ.get("LOOKALIKE_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lookalike", appauthor=False))


def printable(text: str) -> str:
    """``text`` with the surrogate escapes of a file name that is not valid UTF-8 turned
    into replacement characters (U+FFFD): JSON and HTTP bodies must be valid UTF-8."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape") if _escapes_only(text) else None
        if raw is None:
            return text.encode("utf-8", "replace").decode("utf-8")
        return raw.decode("utf-8", "replace")


def _escapes_only(text: str) -> bool:
    """True when every surrogate in text is one of surrogateescape's (U+DC80..U+DCFF)."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)
