"""Finding pretrained weights for timm models, in a fixed order, without surprises.

1. the file the user named (``--weights FILE``, ``ModelOptions.weights``);
2. ``$LOOKALIKE_WEIGHTS_DIR/<name>.{safetensors,pth,bin}`` (the lookalike name, e.g.
   ``vgg16``, or timm's, e.g. ``vgg16.tv_in1k``);
3. the Hugging Face cache (``$HF_HUB_CACHE``, ``$HF_HOME``; local files only) and the
   torch hub cache (``$TORCH_HOME``), where timm itself keeps downloads;
4. a download from the Hugging Face Hub, only when asked for with ``LOOKALIKE_DOWNLOAD=1``
   (and not ``HF_HUB_OFFLINE=1``): lookalike never goes online on its own;
5. random weights, only with ``LOOKALIKE_ALLOW_RANDOM_WEIGHTS=1`` (tests), with a warning,
   and recorded as weights ``"random"`` in the model's identity.

Otherwise ``WeightsNotFoundError`` says where it looked and how to fix it. Nothing here
imports torch or timm: `lookalike models` uses it to say which weights are present.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from lookalike.errors import WeightsNotFoundError

WEIGHTS_DIR_ENV = "LOOKALIKE_WEIGHTS_DIR"
DOWNLOAD_ENV = "LOOKALIKE_DOWNLOAD"
RANDOM_ENV = "LOOKALIKE_ALLOW_RANDOM_WEIGHTS"
EXTENSIONS = (".safetensors", ".pth", ".bin")
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm publishes, in its order
RANDOM = "random"  # ModelInfo.weights_id of randomly initialised weights


@dataclass(frozen=True)
class WeightsSpec:
    """Where a model's published weights live."""

    name: str  # lookalike's name, e.g. "vgg16" or "timm:resnet18.a1_in1k"
    timm_name: str  # e.g. "vgg16.tv_in1k"
    hf_hub_id: str = ""  # e.g. "timm/vgg16.tv_in1k"
    url: str = ""  # a direct URL (older timm weights), cached by torch hub by its basename


@dataclass(frozen=True)
class FoundWeights:
    path: Path | None  # None for random weights
    source: str  # "--weights", WEIGHTS_DIR_ENV, "huggingface cache", "torch hub cache", ...

    @property
    def random(self) -> bool:
        return self.path is None


def _flag(env: str) -> bool:
    return os.environ.get(env, "").strip().lower() in ("1", "true", "yes", "on")


def file_stems(spec: WeightsSpec) -> list[str]:
    """File names (without extension) looked for in LOOKALIKE_WEIGHTS_DIR."""
    stems = [spec.name.removeprefix("timm:"), spec.timm_name, spec.timm_name.split(".")[0]]
    return list(dict.fromkeys(s for s in stems if s))


def local_candidates(spec: WeightsSpec) -> list[tuple[str, Path]]:
    """(source, path) of every local place checked after --weights, in order."""
    found: list[tuple[str, Path]] = []
    directory = os.environ.get(WEIGHTS_DIR_ENV)
    if directory:
        root = Path(directory).expanduser()
        found += [(WEIGHTS_DIR_ENV, root / f"{s}{e}") for s in file_stems(spec) for e in EXTENSIONS]
    hf = _hf_cached(spec)
    if hf is not None:
        found.append(("huggingface cache", hf))
    if spec.url:
        found.append(
            ("torch hub cache", torch_hub_dir() / "checkpoints" / spec.url.rsplit("/", 1)[-1])
        )
    return found


def _hf_cached(spec: WeightsSpec) -> Path | None:
    if not spec.hf_hub_id or importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in HF_FILES:
        hit = try_to_load_from_cache(spec.hf_hub_id, filename)
        if isinstance(hit, str):  # else None (unknown) or a "known missing" marker
            return Path(hit)
    return None


def hf_cache_dir() -> Path:
    if importlib.util.find_spec("huggingface_hub") is not None:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    return Path("~/.cache/huggingface/hub").expanduser()


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "torch" / "hub"


def available(spec: WeightsSpec) -> bool:
    """Cheap: are weights on this machine now (without --weights)?"""
    return any(path.is_file() for _, path in local_candidates(spec))


def find_weights(spec: WeightsSpec, explicit: Path | None = None) -> FoundWeights:
    """The weights to load, following the order in the module docstring."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"{spec.name}: weights file {path} not found")
        return FoundWeights(path, "--weights")
    for source, path in local_candidates(spec):
        if path.is_file():
            return FoundWeights(path, source)
    if _flag(DOWNLOAD_ENV):
        return FoundWeights(download(spec), "download")
    if _flag(RANDOM_ENV):
        warnings.warn(
            f"{spec.name}: no pretrained weights found; using RANDOM weights because "
            f"{RANDOM_ENV} is set (vectors will be meaningless, recorded as weights 'random')",
            RuntimeWarning,
            stacklevel=3,
        )
        return FoundWeights(None, RANDOM)
    raise WeightsNotFoundError(not_found_message(spec))


def not_found_message(spec: WeightsSpec) -> str:
    stems = file_stems(spec)
    directory = os.environ.get(WEIGHTS_DIR_ENV)
    places = [
        "--weights (not given)",
        f"${WEIGHTS_DIR_ENV}/{{{','.join(stems)}}}{{{','.join(EXTENSIONS)}}}"
        + ("" if directory else " (not set)"),
    ]
    if spec.hf_hub_id:
        places.append(f"Hugging Face cache {hf_cache_dir()} ({spec.hf_hub_id})")
    if spec.url:
        places.append(f"torch hub cache {torch_hub_dir() / 'checkpoints'}")
    source = f"https://huggingface.co/{spec.hf_hub_id}" if spec.hf_hub_id else spec.url
    fixes = [
        "pass --weights FILE",
        f"put the file in ${WEIGHTS_DIR_ENV} as {stems[0]}.safetensors",
    ]
    if spec.hf_hub_id:
        fixes.insert(0, f"run once online with {DOWNLOAD_ENV}=1 to download it")
    return (
        f"{spec.name}: no pretrained weights found; looked in: {'; '.join(places)}. "
        f"To fix: {', or '.join(fixes)}" + (f" (weights: {source})" if source else "")
    )


def download(spec: WeightsSpec) -> Path:
    """Fetch the weights from the Hugging Face Hub into its cache, saying so on stderr."""
    if not spec.hf_hub_id:
        raise WeightsNotFoundError(
            f"{spec.name}: {DOWNLOAD_ENV}=1 downloads from the Hugging Face Hub, but this model "
            f"has no weights there; {not_found_message(spec)}"
        )
    if _flag("HF_HUB_OFFLINE"):
        raise WeightsNotFoundError(
            f"{spec.name}: {DOWNLOAD_ENV}=1 asks for a download but HF_HUB_OFFLINE is set; "
            + not_found_message(spec)
        )
    if importlib.util.find_spec("huggingface_hub") is None:
        raise WeightsNotFoundError(
            f"{spec.name}: downloading needs huggingface_hub: pip install 'lookalike[models]'"
        )
    from huggingface_hub import hf_hub_download

    print(
        f"lookalike: downloading {spec.name} weights from https://huggingface.co/"
        f"{spec.hf_hub_id} into {hf_cache_dir()} ({DOWNLOAD_ENV}=1)",
        file=sys.stderr,
        flush=True,
    )
    errors = []
    for filename in HF_FILES:
        try:
            return Path(hf_hub_download(spec.hf_hub_id, filename))
        except Exception as exc:  # network, missing file, auth: all end in the same error
            errors.append(
                f"{filename}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
    raise WeightsNotFoundError(
        f"{spec.name}: download from {spec.hf_hub_id} failed ({'; '.join(errors)})"
    )
