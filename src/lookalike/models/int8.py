"""An int8-quantised torch feature extractor, run by ONNX Runtime.

Built like ``TorchFeatureModel`` (export once, cache, then no torch at start-up), with
one more step at export time: the float graph is checked as the float model checks it,
calibrated on fixed offline photos (``calibration``), quantised (``quantize``) and the
int8 vectors compared with the float graph's. Only the int8 graph
is cached, named after the quantisation scheme so it can never pass for a float graph.

There is no PyTorch fallback: PyTorch would compute the float vectors, which this
model's identity does not describe.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike import __version__
from lookalike.errors import LookalikeError, ModelError
from lookalike.models import build_memory, runtime
from lookalike.models.base import ModelInfo
from lookalike.models.onnx_backend import (
    EXPORT_VERSION,
    OPSET,
    ModuleFactory,
    Runner,
    TorchFeatureModel,
    inference_threads,
    make_session,
)
from lookalike.models.preprocess import Preprocess
from lookalike.models.registry import ModelOptions
from lookalike.vectors import l2_normalize

if TYPE_CHECKING:
    import onnxruntime

# How close (cosine) the int8 vectors of the whole calibration photos must stay to the
# float network's, on average and for every photo. Measured on EfficientNet-Lite0/1/2
# with AVX-512 VNNI: mean 0.993 / 0.987 / 0.986, min 0.981 / 0.957 / 0.927 (the
# low-contrast grey moon photo is the worst). A graph that misses these is not cached
# (7-bit weights, for one, gave mean 0.962, min 0.870 on lite0).
MIN_MEAN_COSINE = 0.97
MIN_COSINE = 0.9


class Int8CheckError(ModelError):
    """The int8 graph's vectors stray from the float network's on this machine."""


class Int8FeatureModel(TorchFeatureModel):
    """``TorchFeatureModel`` whose ONNX graph is quantised to int8 when exported.

    ``info.preprocessing["quantization"]`` names the scheme (``quantize.SCHEME``).
    """

    build_steps = "export, calibration, quantisation and a check: 5-20 s"

    def __init__(
        self,
        info: ModelInfo,
        factory: ModuleFactory,
        preprocess: Preprocess,
        options: ModelOptions,
        **kwargs: Any,  # for the float model class mixed in after this one
    ) -> None:
        self._calibration: np.ndarray | None = None
        self._float_session: onnxruntime.InferenceSession | None = None
        super().__init__(info, factory, preprocess, options, **kwargs)

    def onnx_path(self) -> Path | None:
        path = super().onnx_path()
        if path is None:
            return None
        return path.with_name(f"{path.stem}-{self.info.preprocessing['quantization']}.onnx")

    def _build_runner(self) -> Runner:
        if self.options.backend == "torch":
            raise ModelError(
                f"{self.info.name} runs on ONNX Runtime only; "
                "use its float model for the torch backend"
            )
        remembered = self.remembered_failure()
        if remembered:
            raise ModelError(remembered)
        try:
            return self._onnx_runner()
        except Int8CheckError as exc:
            self._remember_failure(str(exc))
            raise
        except LookalikeError:
            raise  # missing weights or calibration packages: not this machine's doing
        except Exception as exc:  # export, quantisation and ORT errors come in many types
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            message = f"{self.info.name}: building the int8 model failed ({reason})"
            if not isinstance(exc, (OSError, MemoryError)):  # those may pass next time
                self._remember_failure(message)
            raise ModelError(message) from exc
        finally:
            self._calibration = None  # ~12 MB of pixels, only needed while building
            self._float_session = None

    def _memory_key(self) -> dict[str, str] | None:
        """What a build's outcome here depends on (build_memory); None: not remembered."""
        if self.cache_key is None:
            return None
        try:
            import onnxruntime

            ort_version = str(onnxruntime.__version__)
        except ImportError:  # the build reports it; installing ORT changes the key
            ort_version = "none"
        flags = " ".join(sorted(runtime.cpu_flags()))
        return {
            "model": self.cache_key,
            "scheme": str(self.info.preprocessing["quantization"]),
            "export": f"opset{OPSET}-x{EXPORT_VERSION}",
            "thresholds": f"{MIN_MEAN_COSINE},{MIN_COSINE}",
            "lookalike": __version__,
            "onnxruntime": ort_version,
            "kernels": "x64quantprecision",  # before: failures of saturating kernels (no VNNI)
            "numpy": np.__version__,
            "machine": platform.machine(),
            "cpu_flags": hashlib.sha256(flags.encode()).hexdigest()[:16],
        }

    def remembered_failure(self) -> str | None:
        """Why this build failed here before (one line, saying how to retry), or None.
        Cheap: nothing is built, so the default can be decided before building."""
        reason = self._remembered_failure()
        if reason is None:
            return None
        return f"{reason} [failed before on this machine; {build_memory.RETRY_ENV}=1 retries]"

    def _remembered_failure(self) -> str | None:
        """A failure recorded for this build here, unless its graph is cached after all."""
        try:
            path = self.onnx_path()
        except OSError:
            path = None
        if path is not None and path.exists():
            return None
        key = self._memory_key()
        return build_memory.recall(key) if key else None

    def _remember_failure(self, reason: str) -> None:
        key = self._memory_key()
        if key:
            build_memory.remember(key, reason)

    def calibration_pixels(self) -> np.ndarray:
        """(n, H, W, 3) uint8: the calibration photos as this model's input."""
        if self._calibration is None:
            from lookalike.models.calibration import calibration_photos

            photos = calibration_photos()
            self._calibration = np.stack([self.preprocess.pixels(p) for p in photos])
        return self._calibration

    def _export(self) -> bytes:
        from lookalike.models.quantize import quantize_graph

        graph = super()._export()
        # The float graph must pass the float model's check before it is quantised; it
        # is then the reference the int8 graph is checked against.
        self._float_session = make_session(graph, inference_threads(self.options))
        super()._check_export(self._float_session)
        return quantize_graph(graph, self.calibration_pixels(), self.preprocess.affine)

    def _check_export(self, session: onnxruntime.InferenceSession) -> None:
        """The int8 graph's vectors must point where the float network's do."""
        from lookalike.models.calibration import VIEWS

        reference = self._float_session
        if reference is None:
            raise ModelError(f"{self.info.name}: no float graph to check the int8 graph against")
        x = self.calibration_pixels()[::VIEWS]  # each source photo once, whole
        got = l2_normalize(session.run(None, {session.get_inputs()[0].name: x})[0])
        want = l2_normalize(reference.run(None, {reference.get_inputs()[0].name: x})[0])
        cosine = (got * want).sum(axis=1)
        if got.shape != want.shape or not (
            cosine.mean() >= MIN_MEAN_COSINE and cosine.min() >= MIN_COSINE
        ):
            raise Int8CheckError(
                f"{self.info.name}: the int8 graph strays from the float network on this "
                f"machine (cosine mean {cosine.mean():.3f}, min {cosine.min():.3f}; "
                f"needs >= {MIN_MEAN_COSINE}, {MIN_COSINE}); use the float model"
            )
