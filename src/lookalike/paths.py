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
