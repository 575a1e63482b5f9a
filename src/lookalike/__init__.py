"""lookalike: reverse image search over your own images.

The public API is small and imports nothing heavy until used::

    from lookalike import Collection
    with Collection.open("~/my-db", model="efficientnet-lite0") as col:
        col.index(["~/Pictures"])
        for hit in col.search(["query.jpg"], k=5)[0].results:
            print(hit.rank, hit.path, hit.score)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Collection", "LookalikeError", "__version__"]

if TYPE_CHECKING:
    from lookalike.collection import Collection
    from lookalike.errors import LookalikeError


def __getattr__(name: str) -> Any:
    # Lazy so that `import lookalike` stays cheap (no NumPy/ONNX/torch at import time).
    if name == "Collection":
        from lookalike.collection import Collection

        return Collection
    if name == "LookalikeError":
        from lookalike.errors import LookalikeError

        return LookalikeError
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
