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
