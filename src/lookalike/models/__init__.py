"""Embedding models: a registry of names, and the embedders they build."""

from lookalike.models.base import Embedder, ModelInfo
from lookalike.models.registry import (
    ModelEntry,
    ModelOptions,
    create_embedder,
    get_entry,
    list_models,
    register,
)

# The float reference model: fit's default, and new collections' where int8 is not fast
# here. What a new collection gets is decided per machine by ``defaults.choose_default``.
DEFAULT_MODEL = "efficientnet-lite0"

__all__ = [
    "DEFAULT_MODEL",
    "Embedder",
    "ModelEntry",
    "ModelInfo",
    "ModelOptions",
    "create_embedder",
    "get_entry",
    "list_models",
    "register",
]
