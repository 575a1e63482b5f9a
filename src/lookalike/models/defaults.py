"""The model a new collection gets when none is named: the fastest one measured safe here.

* A GPU that ONNX Runtime can use: ``efficientnet-lite0`` (fp32), run on the GPU once its
  vectors agree with the CPU's (onnx_backend.gpu_session_or_cpu).
* A CPU with int8 dot-product instructions (runtime.INT8_CPU_FLAGS) and the calibration
  photos' packages installed: ``efficientnet-lite0-int8``, 2.4x less CPU per image for the
  network than fp32 (BENCHMARKS.md), same retrieval quality on benchmarks/quality.py. The
  same on an x86 CPU with AVX2 but no dot products (runtime.INT8_EXACT_FLAGS), where ORT
  runs it on exact uint8 x uint8 kernels: 1.1-1.3x fp32 end to end there, and the same
  integer sums as VNNI's. Its
  first build checks its vectors against the float network's; if that check (or the build)
  fails, fp32 is used and a one-line warning says why; the failure is remembered on this
  machine (build_memory), and later choices say fp32 at once.
* Anything else: ``efficientnet-lite0`` (fp32), with a one-line note saying what was
  missing.

``LOOKALIKE_DEFAULT_MODEL`` pins the choice. Existing collections keep the model they
record; this only decides for new ones (and for ``eval`` without ``--model``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from lookalike.errors import ModelError
from lookalike.models import runtime
from lookalike.models.base import Embedder
from lookalike.models.build_memory import RETRY_ENV
from lookalike.models.registry import ModelOptions, create_embedder, get_entry

FLOAT_MODEL = "efficientnet-lite0"
INT8_MODEL = "efficientnet-lite0-int8"
DEFAULT_MODEL_ENV = "LOOKALIKE_DEFAULT_MODEL"


class DefaultModelWarning(RuntimeWarning):
    """The preferred default could not be used here; the message says why and what runs."""


@dataclass(frozen=True)
class DefaultChoice:
    model: str
    reason: str  # why this one (shown by `lookalike models`)
    fallback: str | None = None  # what to use if it fails to build (None: nothing)
    note: str | None = None  # said once when the preferred default was passed over


def choose_default(
    options: ModelOptions | None = None,
    cpu_flags: frozenset[str] | None = None,
    providers: list[str] | None = None,
) -> DefaultChoice:
    """Decide, cheaply (nothing is built), which model a new collection gets here."""
    options = options or ModelOptions()
    pinned = os.environ.get(DEFAULT_MODEL_ENV)
    if pinned:
        return DefaultChoice(pinned, f"set by {DEFAULT_MODEL_ENV}")
    if options.backend == "torch":
        return DefaultChoice(FLOAT_MODEL, "the torch backend runs the float model only")
    if providers is None:
        providers = runtime.available_providers()
    device = os.environ.get(runtime.DEVICE_ENV)
    if runtime.choose_providers(providers, device)[0] != runtime.CPU:
        return DefaultChoice(FLOAT_MODEL, "a GPU is here: fp32 on the GPU")
    if not runtime.int8_is_fast(cpu_flags):
        flags = "/".join(runtime.INT8_CPU_FLAGS + runtime.INT8_EXACT_FLAGS)
        return DefaultChoice(
            FLOAT_MODEL,
            f"fp32: this CPU lacks {flags}",
            note=f"{FLOAT_MODEL} (fp32) used: this CPU lacks {flags}, which int8 needs to be fast",
        )
    if not get_entry(INT8_MODEL).weights_available():
        return DefaultChoice(
            FLOAT_MODEL,
            "fp32: int8 needs scikit-image and scikit-learn to calibrate",
            note=(
                f"{FLOAT_MODEL} (fp32) used; for the {_int8_gain(cpu_flags)} faster int8 default: "
                "pip install 'lookalike[int8]'"
            ),
        )
    failed = _int8_failed_here(options)
    if failed:
        return DefaultChoice(
            FLOAT_MODEL,
            f"fp32: int8 failed to build or check here before ({RETRY_ENV}=1 retries)",
            note=f"{failed}; using {FLOAT_MODEL} (fp32)",
        )
    if runtime.int8_dot_products(cpu_flags):
        return DefaultChoice(INT8_MODEL, "int8: this CPU has int8 dot products", FLOAT_MODEL)
    return DefaultChoice(
        INT8_MODEL, "int8: this CPU sums int8 products exactly with AVX2", FLOAT_MODEL
    )


def _int8_gain(cpu_flags: frozenset[str] | None) -> str:
    """int8's measured end-to-end speed-up over fp32 on CPUs like this (BENCHMARKS.md)."""
    return "~1.3-2x" if runtime.int8_dot_products(cpu_flags) else "~1.1-1.3x"


def _int8_failed_here(options: ModelOptions) -> str | None:
    """A failed int8 build remembered on this machine (build_memory): new collections
    then get fp32 at once, and `lookalike models` marks that."""
    from lookalike.models.efficientnet_lite import remembered_int8_failure

    try:
        return remembered_int8_failure(FLOAT_MODEL, options)
    except (ModelError, OSError):
        return None  # building it for real says what is wrong


def create_default_embedder(options: ModelOptions | None = None) -> Embedder:
    """The embedder of ``choose_default``; its fallback, with a warning, if it fails."""
    choice = choose_default(options)
    if choice.note:
        warnings.warn(choice.note, DefaultModelWarning, stacklevel=2)
    if choice.fallback is None:
        return create_embedder(choice.model, options)
    try:
        return create_embedder(choice.model, options)
    except ModelError as exc:
        warnings.warn(f"{exc}; using {choice.fallback} (fp32)", DefaultModelWarning, stacklevel=2)
        return create_embedder(choice.fallback, options)
