"""The EfficientNet-Lite embedders: ONNX graph built from the checkpoint, no PyTorch.

Same identity, cache file and vectors as the PyTorch export they replace (checked by
tests/test_lite_graph.py against it: cosine >= 0.99999), so existing collections and
cached graphs keep working. The torch factory is still given, for ``backend="torch"``
when the ``torch`` extra is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookalike.errors import ModelError
from lookalike.models import onnx_backend
from lookalike.models.base import ModelInfo
from lookalike.models.int8 import Int8FeatureModel
from lookalike.models.onnx_backend import ModuleFactory, TorchFeatureModel
from lookalike.models.preprocess import Preprocess
from lookalike.models.registry import ModelOptions

if TYPE_CHECKING:
    import onnxruntime


class LiteFeatureModel(TorchFeatureModel):
    """``TorchFeatureModel`` whose graph comes from ``lite_graph``, not ``torch.onnx``."""

    def __init__(
        self,
        info: ModelInfo,
        factory: ModuleFactory,
        preprocess: Preprocess,
        options: ModelOptions,
        variant: str,
        weights: Path,
        cache_key: str | None = None,
        build: bool = True,
    ) -> None:
        self.variant = variant  # the float network's name ("-int8" models share it)
        self.weights = weights
        super().__init__(info, factory, preprocess, options, cache_key, build)

    def _export(self) -> bytes:
        from lookalike.models.checkpoint import load_state_dict
        from lookalike.models.lite_graph import build_graph

        state = load_state_dict(self.weights)  # ModelError: cannot read weights file ...
        try:
            pool = str(self.info.preprocessing["pool"])  # resolved by efficientnet_lite.create
            graph = build_graph(self.variant, state, pool, self.preprocess.affine)
        except ModelError as exc:  # "does not hold <name> weights (<why>)"
            raise ModelError(f"{self.variant}: {self.weights} {exc}") from None
        onnx_backend.export_count += 1
        return graph

    def _check_export(self, session: onnxruntime.InferenceSession) -> None:
        """No PyTorch to compare with (tests do): the shape and finite values."""
        got = session.run(None, {session.get_inputs()[0].name: self._example(2)})[0]
        if got.shape != (2, self.info.dim) or not np.isfinite(got).all():
            raise ModelError(f"{self.info.name}: the built graph gives bad features {got.shape}")


class LiteInt8FeatureModel(Int8FeatureModel, LiteFeatureModel):
    """The int8 model quantising ``LiteFeatureModel``'s float graph."""
