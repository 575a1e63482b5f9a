"""Where model files live, what they hash to, and writing cache files safely.

The cache directory holds derived files only (exported ONNX graphs, weight hashes): it
can be deleted at any time. ``LOOKALIKE_CACHE`` overrides its location.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lookalike.errors import WeightsNotFoundError

CACHE_ENV = "LOOKALIKE_CACHE"


def cache_dir() -> Path:
    """The user cache directory for lookalike (created on first use)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        path = Path(override).expanduser()
    else:
        from platformdirs import user_cache_dir

        path = Path(user_cache_dir("lookalike"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it onto ``target``.

    Readers (other processes too) see either no file or a complete one, never a
    half-written file; a crash leaves only a stray ``*.tmp`` behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_id(path: str | os.PathLike[str]) -> str:
    """First 16 hex digits of the file's SHA-256, remembered across runs.

    Hashing ~20 MB costs ~50 ms at every start, so the result is cached under a key made
    of the resolved path, size and mtime: an edited or replaced file gets a new key.
    """
    path = Path(path).expanduser().resolve()
    try:
        st = path.stat()
    except OSError as exc:
        raise WeightsNotFoundError(f"weights file {path}: {exc.strerror or exc}") from None
    key_src = f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    name = hashlib.sha256(key_src).hexdigest()[:32] + ".txt"
    # An unusable cache (read-only, full disk) only costs hashing again next time.
    with contextlib.suppress(OSError):
        memo = cache_dir() / "hashes" / name
        cached = memo.read_text().strip() if memo.exists() else ""
        if len(cached) == 16:
            return cached
    digest = sha256_file(path)[:16]
    with contextlib.suppress(OSError), atomic_path(cache_dir() / "hashes" / name) as tmp:
        tmp.write_text(digest + "\n")
    return digest
