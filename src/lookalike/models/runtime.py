"""Which runtime runs a model on this machine, and when two runtimes count as one model.

Two runtimes (or devices, or precisions) may share a model identity only when their
vectors agree: on real photos, the cosine between the two vectors of each photo is at
least ``AGREEMENT_MIN`` for every photo and ``AGREEMENT_MEAN`` on average. Anything looser
gets its own identity (as ``efficientnet-lite0-int8`` does: cosine 0.985 mean to the float
model), so a collection never mixes vectors that disagree more than this.

Measured on the 13 calibration photos and the 20 foolbox photos (tests/test_runtime.py):
ONNX Runtime vs OpenVINO fp32 1.00000 / 1.00000; OpenVINO bf16 0.99914 / 0.99550 (just
inside); int8 vs fp32 0.985 / 0.94 (outside: its own model).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import ModelError

AGREEMENT_MEAN = 0.999
AGREEMENT_MIN = 0.995

# CPU features with which ONNX Runtime's uint8 x int8 kernels were measured fast and exact
# (AVX-512 VNNI here; AVX-VNNI and AMX-INT8 are the same instructions' successors).
INT8_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# Without them ORT's uint8 x int8 kernels add products in int16 and saturate; with AVX2,
# lookalike has ORT run them as uint8 x uint8 instead (make_session), exact, and int8 was
# still measured 1.1-1.3x fp32 end to end (AVX2 AMD EPYC, BENCHMARKS.md).
INT8_EXACT_FLAGS = ("avx2",)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICE_ENV = "LOOKALIKE_DEVICE"  # "cpu": never use a GPU; "auto" (default): use one if here
DEVICES = ("auto", "cpu")
RUNTIME_NAMES = {CPU: "onnxruntime-cpu", CUDA: "onnxruntime-cuda"}


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean, min) cosine between the rows of two (n, d) vector arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or len(a) == 0:
        raise ModelError(f"cannot compare vectors of shapes {a.shape} and {b.shape}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cosine = (a * b).sum(axis=1)
    return float(cosine.mean()), float(cosine.min())


def agrees(a: np.ndarray, b: np.ndarray) -> bool:
    """Are these the same model's vectors, by the thresholds above?"""
    try:
        mean, low = agreement(a, b)
    except ModelError:
        return False
    return mean >= AGREEMENT_MEAN and low >= AGREEMENT_MIN


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def int8_dot_products(flags: Iterable[str] | None = None) -> bool:
    """Does this CPU have int8 dot-product instructions (ORT's fastest int8 kernels)?"""
    have = _this_cpu() if flags is None else frozenset(flags)
    return any(flag in have for flag in INT8_CPU_FLAGS)


def int8_is_fast(flags: Iterable[str] | None = None) -> bool:
    """Was int8 measured exact and faster than fp32 on CPUs like this one?"""
    have = _this_cpu() if flags is None else frozenset(flags)
    return int8_dot_products(have) or any(flag in have for flag in INT8_EXACT_FLAGS)


@functools.cache
def _this_cpu() -> frozenset[str]:
    return cpu_flags()  # read once: every ONNX Runtime session asks (make_session)


def device_setting(value: str | None) -> str:
    device = (value or "auto").strip().lower()
    if device not in DEVICES:
        raise ModelError(f"{DEVICE_ENV}={value!r}: use one of {', '.join(DEVICES)}")
    return device


def choose_providers(available: Sequence[str], device: str | None = None) -> list[str]:
    """ONNX Runtime providers to try, best first: CUDA when present (unless the device
    setting says cpu), the CPU always last, as the tested fallback."""
    if device_setting(device) == "auto" and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def gpu_available(device: str | None = None) -> bool:
    """Would a float model run on a GPU here (before its vectors check)?"""
    return choose_providers(available_providers(), device)[0] != CPU


def runtime_name(provider: str) -> str:
    return RUNTIME_NAMES.get(provider, provider)


def precision_of(identity: dict[str, object]) -> str:
    """ "int8" or "fp32", from a model identity (ModelInfo.identity())."""
    preprocessing = identity.get("preprocessing")
    if isinstance(preprocessing, dict) and preprocessing.get("quantization"):
        return "int8"
    return "fp32"


def precision_fields(info: dict[str, Any]) -> dict[str, str]:
    """``precision`` and ``runtime`` for a collection's info (``Collection.info()``): what
    `lookalike info --json` and the web app's /api/info add to it."""
    identity = info.get("model_identity")
    precision = precision_of(identity if isinstance(identity, dict) else {})
    return {"precision": precision, "runtime": runtime_here(str(info["model"]), precision)}


def runtime_here(model: str, precision: str) -> str:
    """What would run ``model`` on this machine: "numpy", "onnxruntime-cpu" or -cuda
    (a GPU runs float models only, once their vectors agree with the CPU's)."""
    from lookalike.models.registry import get_entry

    kinds = set()
    for part in model.split("+"):  # combined models: "a+b", "a*0.7+b*0.3"
        try:
            kinds.add(get_entry(part.split("*")[0].strip()).runtime)
        except ModelError:
            kinds.add("onnxruntime")  # timm:<name> and other resolved names
    if kinds == {"numpy"}:
        return "numpy"
    gpu = precision == "fp32" and gpu_available()
    return "onnxruntime-cuda" if gpu else "onnxruntime-cpu"
