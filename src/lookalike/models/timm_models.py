"""The reports' CNNs by name (``vgg16``, ``resnet101v2``, ``inception-resnet-v2``), plus
``resnet50`` and any timm model as ``timm:<name>``.

Every one runs through the same path as EfficientNet-Lite (``TorchFeatureModel``: exported
to ONNX once, run by ONNX Runtime). The feature is the global pooling (``avg`` or ``gem``)
of the last convolutional feature map, i.e. what comes before the classifier; for timm
models whose features are tokens (ViT, Swin...) it is the model's own pre-logits pooling,
and only ``avg`` is offered. Preprocessing is the checkpoint's evaluation recipe from
timm's pretrained config (input size, crop_pct, interpolation, mean/std), always a centre
crop. Weights are looked up as described in ``timm_weights``: never downloaded unless
asked, never random unless asked.

The four named models carry their config here (checked against timm by the tests), so
registering them, listing them and, once the ONNX graph is cached, running them import
neither torch nor timm.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lookalike.errors import ModelError
from lookalike.models.base import ModelInfo
from lookalike.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from lookalike.models.registry import ModelEntry, ModelOptions, register, register_resolver
from lookalike.models.timm_weights import RANDOM, FoundWeights, WeightsSpec, available, find_weights

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from lookalike.models.onnx_backend import TorchFeatureModel

PREFIX = "timm:"
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
_RESAMPLES = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


@dataclass(frozen=True)
class TimmModel:
    """One timm checkpoint as a lookalike model."""

    name: str  # lookalike's name
    timm_name: str  # architecture.tag, e.g. "vgg16.tv_in1k"
    dim: int
    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hf_hub_id: str = ""
    url: str = ""
    description: str = ""
    # "map": pool the (n, c, h, w) feature map ourselves (avg|gem); "head": timm's
    # pre-logits pooling (token models).
    features: str = "map"

    def preprocess(self, input_size: int | None = None, recipe: int | None = None) -> Preprocess:
        return Preprocess(
            size=input_size or self.input_size,
            crop_fraction=min(self.crop_pct, 1.0),
            resample=self.interpolation if self.interpolation in _RESAMPLES else "bicubic",
            mean=self.mean,
            std=self.std,
            **({} if recipe is None else {"recipe": recipe}),
        )

    def weights_spec(self) -> WeightsSpec:
        return WeightsSpec(self.name, self.timm_name, self.hf_hub_id, self.url)


NAMED = {
    m.name: m
    for m in (
        TimmModel(
            "vgg16",
            "vgg16.tv_in1k",
            512,
            224,
            0.875,
            "bilinear",
            IMAGENET_MEAN,
            IMAGENET_STD,
            hf_hub_id="timm/vgg16.tv_in1k",
            description="VGG16 (torchvision weights), ImageNet-1k, 224 px, 512-d (reports)",
        ),
        TimmModel(
            "resnet101v2",
            "resnetv2_101.a1h_in1k",
            2048,
            224,
            0.95,
            "bicubic",
            INCEPTION_MEAN,
            INCEPTION_STD,
            hf_hub_id="timm/resnetv2_101.a1h_in1k",
            description="ResNet101-V2 (pre-activation), ImageNet-1k, 224 px, 2048-d (reports)",
        ),
        TimmModel(
            "inception-resnet-v2",
            "inception_resnet_v2.tf_in1k",
            1536,
            299,
            0.8975,
            "bicubic",
            INCEPTION_MEAN,
            INCEPTION_STD,
            hf_hub_id="timm/inception_resnet_v2.tf_in1k",
            description="Inception-ResNet-v2 (TF weights), ImageNet-1k, 299 px, 1536-d (reports)",
        ),
        TimmModel(
            "resnet50",
            "resnet50.a1_in1k",
            2048,
            224,
            0.95,
            "bicubic",
            IMAGENET_MEAN,
            IMAGENET_STD,
            hf_hub_id="timm/resnet50.a1_in1k",
            url="https://github.com/rwightman/pytorch-image-models/releases/download/"
            "v0.1-rsb-weights/resnet50_a1_0-14fe96d1.pth",
            description="ResNet-50 (timm A1 recipe), ImageNet-1k, 224 px, 2048-d",
        ),
    )
}


def create(
    spec: TimmModel, options: ModelOptions, input_size: int | None = None
) -> TorchFeatureModel:
    """The embedder for one timm model. ``input_size`` overrides the checkpoint's (tests)."""
    from lookalike.models.onnx_backend import check_options
    from lookalike.models.pooling import MAP_POOLS
    from lookalike.models.weights import weights_id

    check_options(options)
    pool = options.pool or "avg"  # GeM was measured on the EfficientNet-Lite models only
    options = replace(options, pool=pool)
    if pool not in MAP_POOLS:
        raise ModelError(
            f"--pool {pool} is for the EfficientNet-Lite models; {spec.name} offers: "
            + ", ".join(MAP_POOLS)
        )
    _require_timm(spec.name)
    if spec.features == "head" and pool != "avg":
        raise ModelError(
            f"{spec.name} gives tokens, not a feature map: only --pool avg is available"
        )
    found = find_weights(spec.weights_spec(), options.weights)
    preprocess = spec.preprocess(input_size, options.recipe)
    info = ModelInfo(
        name=spec.name,
        dim=spec.dim,
        input_size=preprocess.size,
        # Pooling and the timm checkpoint change the vectors as much as preprocessing does.
        preprocessing={**preprocess.to_dict(), "pool": pool, "timm": spec.timm_name},
        weights_id=RANDOM if found.path is None else weights_id(found.path),
    )

    def factory() -> torch.nn.Module:
        return build_network(spec, found, pool)

    return _feature_model_class()(info, factory, preprocess, options)


@functools.cache
def _feature_model_class() -> type[TorchFeatureModel]:
    from lookalike.models.onnx_backend import TorchFeatureModel

    class TimmFeatureModel(TorchFeatureModel):
        def onnx_path(self) -> Path | None:
            # Random weights are rebuilt each time: never cache (or reuse) their graph.
            if self.info.weights_id == RANDOM:
                return None
            return super().onnx_path()

    return TimmFeatureModel


def build_network(spec: TimmModel, found: FoundWeights, pool: str) -> torch.nn.Module:
    """The timm model with the pooled-feature forward, weights loaded (or seeded random)."""
    import timm
    import torch

    from lookalike.models.onnx_backend import pooled_features

    if found.path is None:
        # Seeded, so that two builds in one test session give the same network.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            network: Any = timm.create_model(spec.timm_name, pretrained=False, num_classes=0)
    else:
        try:
            # timm's own loader: reads .safetensors/.pth and converts older layouts (e.g.
            # torchvision VGG); with "file" set it never downloads. The classifier is kept
            # while loading: timm loads strictly only then (a file missing layers must
            # fail, not leave them random), and dropped afterwards.
            network = timm.create_model(
                spec.timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(found.path)}
            )
            network.reset_classifier(0)
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(
                f"{spec.name}: cannot load {spec.timm_name} weights from {found.path} "
                f"({found.source}): {first}"
            ) from None
    network.eval()
    if spec.features == "map":
        return pooled_features(network, pool, "forward_features")
    return _head_pooled_class()(network)


@functools.cache
def _head_pooled_class() -> type[torch.nn.Module]:
    import torch

    class HeadPooled(torch.nn.Module):
        """forward_features, then timm's own pooling up to (not including) the classifier."""

        def __init__(self, network: Any) -> None:
            super().__init__()
            self.network: Any = network  # a timm model: forward_features/forward_head

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = self.network.forward_features(x)
            out: torch.Tensor = self.network.forward_head(features, pre_logits=True)
            return out

    return HeadPooled


# ----- timm:<name> -------------------------------------------------------------------------


def resolve_timm(name: str) -> TimmModel:
    """Read a timm model's config and feature size (built on the meta device: no memory,
    no weights)."""
    _require_timm(name)
    import timm
    import torch

    timm_name = name.removeprefix(PREFIX).strip()
    if not timm_name:
        raise ModelError("give a timm model name after 'timm:', e.g. timm:resnet18.a1_in1k")
    try:
        with torch.device("meta"):
            network: Any = timm.create_model(timm_name, pretrained=False, num_classes=0)
    except RuntimeError as exc:
        if "Unknown model" not in str(exc):
            raise
        raise ModelError(
            f'unknown timm model {timm_name!r}; list them with: python -c "import timm; '
            f"print(timm.list_models('*{timm_name.split('.')[0][:8]}*', pretrained=True))\""
        ) from None
    cfg: dict[str, Any] = dict(network.pretrained_cfg or {})
    channels, height, width = cfg.get("input_size", (3, 224, 224))
    if height != width:
        raise ModelError(f"{name}: non-square input size {height}x{width} is not supported")
    features = "map"
    with torch.device("meta"):
        out = network.forward_features(torch.empty(1, channels, height, width))
        if out.ndim != 4 or out.shape[1] != network.num_features:
            features = "head"
            out = network.forward_head(out, pre_logits=True)
    tag = cfg.get("tag")
    architecture = cfg.get("architecture") or timm_name.split(".")[0]
    return TimmModel(
        name=PREFIX + timm_name,
        timm_name=f"{architecture}.{tag}" if tag else architecture,
        dim=int(out.shape[1]),
        input_size=int(height),
        crop_pct=float(cfg.get("crop_pct") or 1.0),
        interpolation=str(cfg.get("interpolation") or "bicubic"),
        mean=_triple(cfg.get("mean", IMAGENET_MEAN)),
        std=_triple(cfg.get("std", IMAGENET_STD)),
        hf_hub_id=str(cfg.get("hf_hub_id") or ""),
        url=str(cfg.get("url") or ""),
        description=f"timm model {timm_name}",
        features=features,
    )


def _triple(values: Any) -> tuple[float, float, float]:
    v = tuple(float(x) for x in values)
    if len(v) == 1:
        v = v * 3
    if len(v) != 3:
        raise ModelError(f"expected 3 channel values, got {v}")
    return v[0], v[1], v[2]


def _require_timm(name: str) -> None:
    if importlib.util.find_spec("timm") is None:
        raise ModelError(f"{name} needs timm: pip install 'lookalike[models]'")


def _build_timm(name: str, options: ModelOptions) -> TorchFeatureModel:
    return create(resolve_timm(name), options)


def _is_timm_name(name: str) -> bool:
    return name.startswith(PREFIX) and "+" not in name


def _weights_available(spec: TimmModel) -> bool:
    return importlib.util.find_spec("timm") is not None and available(spec.weights_spec())


def _register() -> None:
    for spec in NAMED.values():
        register(
            ModelEntry(
                name=spec.name,
                dim=spec.dim,
                input_size=spec.input_size,
                description=spec.description,
                factory=functools.partial(create, spec),
                weights_available=functools.partial(_weights_available, spec),
            )
        )
    register_resolver(_is_timm_name, _build_timm)


_register()
