"""Where a collection lives: the storage contract (base.py) and its backends.

base.py       StorageBackend, the contract Collection and the indexer program against
locations.py  what --db names (a folder or a Milvus URI) and how each is opened
folder.py     a local folder: SQLite + memory-mapped vectors + FAISS (the default)
milvus.py     Milvus Lite (embedded) or a Milvus server/cluster (`lookalike[milvus]`)
"""

from lookalike.backends.base import StorageBackend
from lookalike.backends.locations import parse_db

__all__ = ["StorageBackend", "parse_db"]
