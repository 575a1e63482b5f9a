"""PyTorch is optional (the ``torch`` extra): import it with a message naming the extra."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from lookalike.errors import ModelError

EXTRA_HINT = "pip install 'lookalike[torch]'"


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def require_torch(purpose: str) -> ModuleType:
    """``import torch``, or a one-line ``ModelError`` saying which extra brings it."""
    if not torch_available():
        raise ModelError(f"{purpose} needs PyTorch: {EXTRA_HINT}")
    return importlib.import_module("torch")
