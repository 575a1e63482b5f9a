"""Every error lookalike raises on purpose. The message is one line meant for a person."""

from __future__ import annotations


class LookalikeError(Exception):
    """Base class: the CLI prints the message alone (no traceback) and exits 1."""


class ImageReadError(LookalikeError):
    """A file could not be read as an image. ``ImageReadError(path, reason)`` keeps both as
    fields (the message is "path: reason"); a single argument is the whole message."""

    def __init__(self, path: object, reason: str | None = None) -> None:
        if reason is None:
            super().__init__(str(path))
            self.path: str | None = None
            self.reason = str(path)
        else:
            super().__init__(f"{path}: {reason}")
            self.path = str(path)
            self.reason = reason


class ModelError(LookalikeError):
    """Unknown model name, bad model options."""


class WeightsNotFoundError(ModelError):
    """Pretrained weights are not available; the message says where we looked."""


class CollectionError(LookalikeError):
    """The collection on disk is missing, damaged or used the wrong way."""


class ModelMismatchError(CollectionError):
    """Vectors from a different model (or adapter) would be mixed into a collection."""


class IndexBuildError(LookalikeError):
    """A search index could not be built or loaded."""


class DatasetError(LookalikeError):
    """A labelled dataset folder (class/image) is missing, empty or malformed."""


class RerankError(LookalikeError):
    """A re-ranking setting that cannot be used (unknown method, bad option)."""


class EngineError(LookalikeError):
    """The embedding engine (a Ray cluster) is missing, unreachable or misconfigured."""
