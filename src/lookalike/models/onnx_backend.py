"""Run any PyTorch feature extractor fast: export it to ONNX once, infer with ONNX Runtime.

``TorchFeatureModel`` is the embedder for every CNN family (EfficientNet-Lite, timm...):
give it a factory for an ``nn.Module`` mapping (n, 3, H, W) normalised images to (n, d)
features, the ``Preprocess`` its checkpoint expects, and the user's ``ModelOptions``.

Decode workers only crop and resize (``prepare`` gives (H, W, 3) uint8 pixels); the
network that runs starts with the per-channel normalisation, so that step runs fused in
ONNX Runtime instead of in NumPy in the workers.

The exported graph is cached in the user cache dir, keyed by model name, pooling, weights
hash and preprocessing, so later processes start without importing torch at all. PyTorch eager is
the fallback (``backend="torch"``, or ``"auto"`` when export or ONNX Runtime fails), when the
``torch`` extra is installed. EfficientNet-Lite builds its graph without torch (``lite_model``).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.errors import LookalikeError, ModelError
from lookalike.models import runtime
from lookalike.models.base import Embedder, ModelInfo
from lookalike.models.pooling import (
    GEM_EPS,
    GEM_P,
    GRID_WEIGHT,
    MAP_POOLS,
    POOLS,
    STAGE_WEIGHT,
    grid_cells,
)
from lookalike.models.preprocess import Preprocess
from lookalike.models.registry import ModelOptions
from lookalike.models.torch_extra import require_torch, torch_available
from lookalike.models.weights import atomic_path, cache_dir
from lookalike.vectors import FloatArray, l2_normalize

log = logging.getLogger("lookalike")

if TYPE_CHECKING:
    import onnxruntime
    import torch

BACKENDS = ("auto", "onnx", "torch")
OPSET = 17
# Bump when the export itself changes (graph layout, names), so old cache files are ignored.
EXPORT_VERSION = 1
ALLOW_SPINNING = False  # see make_session; chosen by benchmarks/embed_throughput.py
# ORT and torch differ by float rounding only; 1e-3 relative catches a broken graph.
_EXPORT_TOLERANCE = 1e-3

ModuleFactory = Callable[[], "torch.nn.Module"]
Runner = Callable[[np.ndarray], np.ndarray]

# Exports done by this process; tests use it to prove the cache is reused.
export_count = 0


def check_options(options: ModelOptions) -> None:
    if options.pool is not None and options.pool not in POOLS:
        raise ModelError(f"unknown pool {options.pool!r}; use one of: {', '.join(POOLS)}")
    if options.backend not in BACKENDS:
        raise ModelError(f"unknown backend {options.backend!r}; use one of: {', '.join(BACKENDS)}")
    if options.threads is not None and options.threads < 1:
        raise ModelError(f"threads must be >= 1, got {options.threads}")


def available_cpus() -> int:
    """Cores this process may run on (taskset/cgroup affinity), not all the machine has."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def inference_threads(options: ModelOptions) -> int:
    return options.threads or available_cpus()


class TorchFeatureModel(Embedder):
    """An embedder around a torch feature extractor, run by ONNX Runtime or PyTorch.

    ``cache_key`` names the exported graph in the cache; by default it is built from the
    model name, pooling, ``info.weights_id`` and the preprocessing. With ``weights_id ==
    "none"`` (random or unknown weights) nothing is cached: each instance exports anew.
    """

    def __init__(
        self,
        info: ModelInfo,
        factory: ModuleFactory,
        preprocess: Preprocess,
        options: ModelOptions,
        cache_key: str | None = None,
        build: bool = True,
    ) -> None:
        check_options(options)
        if options.pool is None:
            # The factory's family resolves the default; this records it for the cache key.
            options = replace(options, pool=str(info.preprocessing.get("pool", "avg")))
        self.info = info
        self.preprocess = preprocess
        self.options = options
        self._factory = factory
        self._module: torch.nn.Module | None = None
        self._network: torch.nn.Module | None = None
        if cache_key is None and info.weights_id != "none":
            # The preprocessing constants are baked into the graph, so they are in the key.
            recipe = json.dumps(preprocess.to_dict(), sort_keys=True).encode()
            recipe_id = hashlib.sha256(recipe).hexdigest()[:8]
            cache_key = f"{info.name}-{options.pool}-{info.weights_id}-{recipe_id}"
        self.cache_key = cache_key
        self.backend = ""  # "onnx" or "torch": what actually runs, once built
        self._lanes = 1  # see inference_lanes; set by the ONNX Runtime CPU runner
        self._lane_pool: ThreadPoolExecutor | None = None
        self.runtime = ""  # e.g. "onnxruntime-cpu", "onnxruntime-cuda", "torch"
        # build=False: a description only (its cache key, a remembered failure), cheap.
        self._run = self._build_runner() if build else _not_built(info.name)

    build_steps = "exporting its ONNX graph"  # what a first start does, said to the user

    # --- Embedder -------------------------------------------------------------------

    @property
    def draft_size(self) -> int:
        return self.preprocess.draft_size

    def prepare(self, image: Any) -> np.ndarray:
        return self.preprocess.pixels(image)

    @property
    def inference_lanes(self) -> int:
        return self._lanes

    def embed_prepared(self, batch: Sequence[Any]) -> FloatArray:
        lanes = min(self._lanes, len(batch))
        if lanes < 2:
            return self.embed_serial(batch)
        # One slice per lane, this thread running the first: whole networks side by side
        # instead of one network whose every layer waits for its slowest thread.
        if self._lane_pool is None:
            self._lane_pool = ThreadPoolExecutor(self._lanes - 1, "lookalike-infer")
        bounds = np.linspace(0, len(batch), lanes + 1).astype(int)
        slices = [batch[a:b] for a, b in itertools.pairwise(bounds)]
        others = [self._lane_pool.submit(self.embed_serial, part) for part in slices[1:]]
        first = self.embed_serial(slices[0])
        return np.concatenate([first, *(f.result() for f in others)])

    def embed_serial(self, batch: Sequence[Any]) -> FloatArray:
        if not batch:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        features = self._run(np.stack(batch))
        if features.shape != (len(batch), self.info.dim):
            raise ModelError(
                f"{self.info.name}: network gave features of shape {features.shape}, "
                f"expected ({len(batch)}, {self.info.dim})"
            )
        return l2_normalize(features)

    # --- building -------------------------------------------------------------------

    def _build_runner(self) -> Runner:
        backend = self.options.backend
        if backend == "torch":
            return self._torch_runner()
        try:
            return self._onnx_runner()
        except LookalikeError:
            raise  # missing weights etc.: torch would fail the same way
        except Exception as exc:
            # Export and ORT failures come in many types (torch.onnx, onnx, ORT's own).
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            if backend == "onnx" or not torch_available():
                raise ModelError(f"{self.info.name}: ONNX backend failed ({reason})") from exc
            warnings.warn(
                f"{self.info.name}: ONNX Runtime unavailable ({reason}); using PyTorch (slower)",
                RuntimeWarning,
                stacklevel=4,
            )
            return self._torch_runner()

    def torch_module(self) -> torch.nn.Module:
        """The factory's feature extractor in eval mode: (n, 3, H, W) float -> (n, d)."""
        if self._module is None:
            module = self._factory()
            module.eval()
            self._module = module
        return self._module

    def network(self) -> torch.nn.Module:
        """What actually runs: (n, H, W, 3) uint8 pixels -> normalise -> (n, d) features."""
        if self._network is None:
            mul, add = self.preprocess.affine
            self._network = _normalized_input_class()(self.torch_module(), mul, add).eval()
        return self._network

    def _torch_runner(self) -> Runner:
        torch = require_torch(f"{self.info.name} with the torch backend")

        if self.options.threads:
            torch.set_num_threads(self.options.threads)  # process-wide: torch has no other way
        module = self.network()

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out: np.ndarray = module(torch.from_numpy(batch)).float().numpy()
            return out

        self.backend = "torch"
        self.runtime = "torch"
        return run

    def onnx_path(self) -> Path | None:
        """Where the exported graph is cached, or None when it is not cached."""
        if self.cache_key is None:
            return None
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.cache_key)
        return cache_dir() / "onnx" / f"{safe}-opset{OPSET}-x{EXPORT_VERSION}.onnx"

    def _onnx_runner(self) -> Runner:
        try:
            path = self.onnx_path()
        except OSError as exc:  # the cache dir cannot be created: work without it
            warnings.warn(f"not caching the ONNX graph: {exc}", RuntimeWarning, stacklevel=5)
            path = None
        session = None
        source: Path | bytes | None = None
        # One thread per session run; embed_prepared runs one slice per core at once
        # (BENCHMARKS.md, "One network per core": faster than ORT's threads per layer).
        if path is not None and path.exists():
            try:
                session = make_session(path, 1)
                source = path
            except Exception as exc:
                # Unreadable by this onnxruntime (or damaged): export again over it.
                warnings.warn(f"re-exporting {path.name}: {exc}", RuntimeWarning, stacklevel=5)
        if session is None:
            # Seconds of silence otherwise (int8: 5-20 s), once per machine and cache.
            log.info("preparing %s for this machine, once (%s)", self.info.name, self.build_steps)
            graph = self._export()
            session = make_session(graph, 1)
            self._check_export(session)
            source = graph
            if path is not None:
                # Written only once checked, so a bad export is never cached.
                try:
                    with atomic_path(path) as tmp:
                        tmp.write_bytes(graph)
                except OSError as exc:  # read-only or full: the next start exports again
                    warnings.warn(f"not caching {path}: {exc}", RuntimeWarning, stacklevel=5)
        session, provider = self._on_best_device(session, source)
        input_name = session.get_inputs()[0].name

        def run(batch: np.ndarray) -> np.ndarray:
            out: np.ndarray = session.run(None, {input_name: batch})[0]
            return out

        self.backend = "onnx"
        self.runtime = runtime.runtime_name(provider)
        self._lanes = inference_threads(self.options) if provider == runtime.CPU else 1
        return run

    def _on_best_device(
        self, cpu_session: onnxruntime.InferenceSession, source: Path | bytes | None
    ) -> tuple[onnxruntime.InferenceSession, str]:
        """A GPU session when ONNX Runtime has one here and its vectors agree with the CPU
        session's (runtime.agrees); else the CPU session. A GPU that fails either way
        is reported once and the CPU used."""
        providers = runtime.choose_providers(
            runtime.available_providers(), os.environ.get(runtime.DEVICE_ENV)
        )
        if providers[0] == runtime.CPU or source is None:
            return cpu_session, runtime.CPU
        return gpu_session_or_cpu(
            cpu_session, source, providers[0], self._example(8), self.info.name
        )

    def _example(self, n: int) -> np.ndarray:
        size = self.preprocess.size
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)

    def _export(self) -> bytes:
        """The feature extractor as an ONNX graph with a dynamic batch axis."""
        global export_count
        module = self.network()
        with tempfile.TemporaryDirectory(prefix="lookalike-export-") as tmp:
            target = Path(tmp) / "model.onnx"
            self._export_to(module, target)
            graph = target.read_bytes()
        export_count += 1
        return graph

    def _export_to(self, module: torch.nn.Module, target: Path) -> None:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python constants
            torch.onnx.export(
                module,
                (torch.from_numpy(self._example(1)),),
                str(target),
                input_names=["pixels"],
                output_names=["features"],
                dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )

    def _check_export(self, session: onnxruntime.InferenceSession) -> None:
        """The graph must compute what the torch module computes (batch of 2)."""
        import torch

        x = self._example(2)
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        with torch.inference_mode():
            want = self.network()(torch.from_numpy(x)).float().numpy()
        err = float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-12))
        if got.shape != want.shape or not err < _EXPORT_TOLERANCE:
            raise ModelError(f"exported graph disagrees with PyTorch (relative error {err:.2g})")


def gpu_session_or_cpu(
    cpu_session: onnxruntime.InferenceSession,
    source: Path | bytes,
    provider: str,
    probe: np.ndarray,
    name: str,
    make: Callable[..., Any] | None = None,
) -> tuple[Any, str]:
    """(session, provider): one on ``provider`` if it builds and its vectors of ``probe``
    agree with the CPU session's, else the CPU session (with a one-line warning)."""
    make = make or make_session
    try:
        gpu = make(source, 1, provider=provider)
        if gpu.get_providers()[0] != provider:  # ORT fell back to the CPU by itself
            raise ModelError(f"{provider} did not initialise")
        feed = cpu_session.get_inputs()[0].name
        want = cpu_session.run(None, {feed: probe})[0]
        got = gpu.run(None, {gpu.get_inputs()[0].name: probe})[0]
        mean, low = runtime.agreement(got, want)
    except Exception as exc:  # a missing CUDA library, an unsupported op...
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        warnings.warn(f"{name}: {provider} failed ({reason}); using the CPU", RuntimeWarning, 2)
        return cpu_session, runtime.CPU
    if mean >= runtime.AGREEMENT_MEAN and low >= runtime.AGREEMENT_MIN:
        return gpu, provider
    warnings.warn(
        f"{name}: {provider} vectors disagree with the CPU's (cosine mean {mean:.4f}, "
        f"min {low:.4f}; needs {runtime.AGREEMENT_MEAN}, {runtime.AGREEMENT_MIN}); using the CPU",
        RuntimeWarning,
        2,
    )
    return cpu_session, runtime.CPU


def make_session(
    model: Path | bytes, threads: int, provider: str = "CPUExecutionProvider"
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session tuned for batch inference on a few cores (or on a GPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only; ORT's warnings are noise for users
    # Idle pool threads spin-wait by default, burning the cores the decode workers need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if ALLOW_SPINNING else "0")
    if not runtime.int8_dot_products():
        # Without VNNI, ORT's uint8 x int8 kernels add pairs of products in int16 and
        # saturate: the int8 graph's vectors strayed to cosine 0.94 of its exact arithmetic
        # (AVX2 machine, BENCHMARKS.md). This has ORT run those layers as uint8 x uint8
        # (weights shifted by 128: the same products, summed exactly). Not where VNNI is:
        # ORT would apply it there too, giving up the VNNI kernels for the same sums.
        # Float graphs have no such layers.
        opts.add_session_config_entry("session.x64quantprecision", "1")
    source = str(model) if isinstance(model, Path) else model
    providers = [provider] if provider == runtime.CPU else [provider, runtime.CPU]
    return ort.InferenceSession(source, opts, providers=providers)


# --- pooling: feature map -> vector, shared by model families --------------------------


def global_pool(feature_map: torch.Tensor, pool: str) -> torch.Tensor:
    """(n, c, h, w) -> (n, c): mean ("avg") or generalised mean with p=3 ("gem")."""
    if pool == "avg":
        return feature_map.mean((2, 3))
    if pool == "gem":
        return feature_map.clamp(min=GEM_EPS).pow(GEM_P).mean((2, 3)).pow(1.0 / GEM_P)
    raise ModelError(f"unknown pool {pool!r} for a feature map; use one of: {', '.join(MAP_POOLS)}")


def pooled_features(
    backbone: torch.nn.Module, pool: str, method: str = "forward_features"
) -> torch.nn.Module:
    """A module computing ``global_pool(backbone.<method>(x), pool)``.

    E.g. ``method="extract_features"`` for EfficientNet-Lite, ``"forward_features"`` for
    timm models (both return the last feature map).
    """
    if pool not in MAP_POOLS:
        raise ModelError(
            f"unknown pool {pool!r} for a feature map; use one of: {', '.join(MAP_POOLS)}"
        )
    return _pooled_class()(backbone, pool, method)


def two_stage_features(
    feature_map: torch.Tensor, stage_map: torch.Tensor, grid: bool = False
) -> torch.Tensor:
    """``gem-2stage`` (models.pooling) from the last map and an earlier stage's map; with
    ``grid``, ``gem-grid``: the stage's map over a grid of cells too."""
    import torch

    head = torch.nn.functional.normalize(global_pool(feature_map, "gem"), dim=1)
    stage = torch.nn.functional.normalize(global_pool(stage_map, "gem"), dim=1)
    parts = [head, STAGE_WEIGHT * stage]
    if grid:
        parts.append(GRID_WEIGHT * torch.nn.functional.normalize(grid_features(stage_map), dim=1))
    return torch.cat(parts, dim=1)


def grid_features(feature_map: torch.Tensor) -> torch.Tensor:
    """(n, c, s, s) -> (n, c * cells^2): GeM of each grid cell (models.pooling.grid_cells),
    channel-major, as lite_graph's grid_pooled."""
    import torch

    kernel, stride = grid_cells(feature_map.shape[-1])
    powered = feature_map.clamp(min=GEM_EPS).pow(GEM_P)
    cells = torch.nn.functional.avg_pool2d(powered, kernel, stride)
    return cells.pow(1.0 / GEM_P).flatten(1)


@functools.cache
def _pooled_class() -> type[torch.nn.Module]:
    # Defined lazily so that importing this module never imports torch.
    import torch

    class PooledFeatures(torch.nn.Module):
        def __init__(self, backbone: torch.nn.Module, pool: str, method: str) -> None:
            super().__init__()
            self.backbone = backbone
            self.pool = pool
            self.method = method

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return global_pool(getattr(self.backbone, self.method)(x), self.pool)

    return PooledFeatures


@functools.cache
def _normalized_input_class() -> type[torch.nn.Module]:
    import torch

    class NormalizedInput(torch.nn.Module):
        """(n, H, W, 3) uint8 -> (n, 3, H, W) float32 ``x * mul + add`` -> the model."""

        mul: torch.Tensor
        add: torch.Tensor

        def __init__(self, model: torch.nn.Module, mul: np.ndarray, add: np.ndarray) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mul", torch.from_numpy(np.array(mul).reshape(1, 3, 1, 1)))
            self.register_buffer("add", torch.from_numpy(np.array(add).reshape(1, 3, 1, 1)))

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            x = pixels.permute(0, 3, 1, 2).float() * self.mul + self.add
            return self.model(x)

    return NormalizedInput


def _not_built(name: str) -> Runner:
    def run(_pixels: np.ndarray) -> np.ndarray:
        raise ModelError(f"{name}: created without its network (build=False)")

    return run
