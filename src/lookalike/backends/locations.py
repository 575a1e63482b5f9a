"""What `--db` names: a folder, or a Milvus collection.

    --db DIR                               a local folder (backends/folder.py)
    --db milvus://HOST:PORT/NAME           collection NAME on a Milvus server or cluster
    --db milvus-lite:///path/file.db       Milvus Lite, embedded, in that file
    --db milvus-lite:///path/file.db#NAME  ... collection NAME in it (default "lookalike")

Each kind of location knows how to read its manifest, create a backend and open one;
adding a backend adds a class here and its module.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.backends.base import StorageBackend
from lookalike.errors import CollectionError
from lookalike.paths import default_db

MILVUS = "milvus://"
MILVUS_LITE = "milvus-lite://"
DEFAULT_MILVUS_NAME = "lookalike"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")


@dataclass(frozen=True)
class FolderLocation:
    root: Path

    def __str__(self) -> str:
        return str(self.root)

    def read_manifest(self) -> dict[str, Any] | None:
        from lookalike.backends.folder import FolderBackend

        return FolderBackend.read_manifest(self.root)

    def create(self, fields: dict[str, Any]) -> StorageBackend | None:
        from lookalike.backends.folder import FolderBackend

        return FolderBackend.create(self.root, fields)

    def open(self, manifest: dict[str, Any], check: bool) -> StorageBackend:
        from lookalike.backends.folder import FolderBackend

        return FolderBackend.open(self.root, manifest, check)


@dataclass(frozen=True)
class MilvusLocation:
    """``uri``: what pymilvus connects to (a server address, or a Milvus Lite file)."""

    uri: str
    name: str
    spelled: str  # as the user wrote it
    lite_file: Path | None = None  # embedded Milvus Lite

    def __str__(self) -> str:
        return self.spelled

    def read_manifest(self) -> dict[str, Any] | None:
        from lookalike.backends.milvus import MilvusBackend

        return MilvusBackend.read_manifest(self)

    def create(self, fields: dict[str, Any]) -> StorageBackend | None:
        from lookalike.backends.milvus import MilvusBackend

        return MilvusBackend.create(self, fields)

    def open(self, manifest: dict[str, Any], check: bool) -> StorageBackend:
        from lookalike.backends.milvus import MilvusBackend

        return MilvusBackend.open(self, manifest)


Location = FolderLocation | MilvusLocation


def is_uri(text: str) -> bool:
    return text.startswith((MILVUS, MILVUS_LITE))


def parse_db(db: str | os.PathLike[str] | None) -> Location:
    """The location ``--db`` names (None: the default folder)."""
    if db is None:
        return FolderLocation(default_db())
    text = os.fspath(db)
    if text.startswith(MILVUS_LITE):
        rest, _, name = text[len(MILVUS_LITE) :].partition("#")
        if not rest:
            raise CollectionError(f"--db {text}: give a file, as in milvus-lite:///path/file.db")
        lite_file = Path(rest).expanduser().absolute()
        return MilvusLocation(str(lite_file), _checked_name(name, text), text, lite_file)
    if text.startswith(MILVUS):
        rest = text[len(MILVUS) :]
        address, _, name = rest.partition("/")
        if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}", address):
            raise CollectionError(
                f"--db {text}: expected milvus://HOST:PORT/NAME (for example "
                "milvus://localhost:19530/photos)"
            )
        return MilvusLocation(f"http://{address}", _checked_name(name, text), text)
    return FolderLocation(Path(text).expanduser())


def _checked_name(name: str, text: str) -> str:
    name = name.strip("/") or DEFAULT_MILVUS_NAME
    if not _NAME.match(name):
        raise CollectionError(
            f"--db {text}: collection name {name!r} must be letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    return name
