"""EfficientNet-Lite as an ONNX graph built straight from its checkpoint: no PyTorch.

Mirrors ``efficientnet_lite_pytorch`` (what the checkpoints were converted for): a 3x3/2
stem, MBConv blocks (1x1 expand, kxk depthwise, 1x1 project; ReLU6; residual add when
the shape allows; no squeeze-excite in the Lite family), a 1x1 head to 1280 channels.
Convolutions use the fixed TF "SAME" padding that package computes for the model's own
input size, which is asymmetric on stride-2 layers. Batch norm is folded into the
convolutions, as ``torch.onnx.export`` does in eval mode.

The graph takes (n, H, W, 3) uint8 pixels and normalises them first (Transpose, Cast,
Mul, Add: the layout ``quantize.fold_input_normalisation`` expects), then pools the last
feature map ("avg" or "gem") to the (n, 1280) features, or with "gem-2stage" also the last
block's map, and with "gem-grid" that map over a grid of cells too (``models.pooling``), or
gives the ImageNet logits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.errors import ModelError
from lookalike.models.pooling import (
    AVG,
    GEM,
    GEM_EPS,
    GEM_GRID,
    GEM_P,
    GRID_WEIGHT,
    POOLS,
    STAGE_POOLS,
    STAGE_WEIGHT,
    grid_cells,
)

if TYPE_CHECKING:
    import onnx

OPSET = 17
BN_EPS = 1e-3  # batch_norm_epsilon of every EfficientNet-Lite
# (repeats, kernel, stride, expand ratio, input filters, output filters): lite0's stages.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# name: (width multiplier, depth multiplier, input size)
SCALING = {
    "efficientnet-lite0": (1.0, 1.0, 224),
    "efficientnet-lite1": (1.0, 1.1, 240),
    "efficientnet-lite2": (1.1, 1.2, 260),
}
HEAD = 1280
STEM = 32


@dataclass(frozen=True)
class Block:
    index: int
    kernel: int
    stride: int
    expand: int
    inp: int
    out: int
    size: int  # the input's side, for the fixed padding

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.inp == self.out


def round_filters(filters: int, width: float) -> int:
    """Channels scaled by the width multiplier, rounded to multiples of 8 as TF does."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def blocks(name: str) -> list[Block]:
    """The MBConv blocks of one variant; the first and last stages are not deepened."""
    width, depth, size = _scaling(name)
    side = math.ceil(size / 2)  # after the stem
    out: list[Block] = []
    for i, (repeats, kernel, stride, expand, inp, outp) in enumerate(STAGES):
        inp = STEM if i == 0 else round_filters(inp, width)
        outp = round_filters(outp, width)
        if 0 < i < len(STAGES) - 1:
            repeats = math.ceil(depth * repeats)
        for r in range(repeats):
            s = stride if r == 0 else 1
            out.append(Block(len(out), kernel, s, expand, inp if r == 0 else outp, outp, side))
            side = math.ceil(side / s)
    return out


def same_padding(size: int, kernel: int, stride: int) -> list[int]:
    """ONNX pads [top, left, bottom, right] of TF "SAME" for a size x size input."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return [total // 2, total // 2, total - total // 2, total - total // 2]


def build_graph(
    name: str,
    state: Mapping[str, np.ndarray],
    pool: str,
    normalisation: tuple[np.ndarray, np.ndarray],
    logits: bool = False,
) -> bytes:
    """The serialised ONNX model: uint8 pixels -> features (or ImageNet logits)."""
    from onnx import TensorProto, checker, helper

    builder = _Builder(name, state)
    _, _, size = _scaling(name)
    mul, add = (np.asarray(a, dtype=np.float32).reshape(1, 3, 1, 1) for a in normalisation)
    x = builder.node("Transpose", ["pixels"], perm=[0, 3, 1, 2])
    x = builder.node("Cast", [x], to=TensorProto.FLOAT)
    x = builder.node("Mul", [x, builder.const("norm_mul", mul)])
    x = builder.node("Add", [x, builder.const("norm_add", add)])
    x = builder.conv_bn(x, "_conv_stem", "_bn0", stride=2, size=size, relu=True)
    for block in blocks(name):
        x = builder.mbconv(x, block)
    last_block = x
    side = math.ceil(size / 32)
    x = builder.conv_bn(x, "_conv_head", "_bn1", stride=1, size=side, relu=True)
    if logits:
        x = builder.node("ReduceMean", [x], axes=[2, 3], keepdims=0)
        weight = builder.take("_fc.weight").T.copy()
        x = builder.node(
            "Gemm",
            [x, builder.const("fc_w", weight), builder.const("fc_b", builder.take("_fc.bias"))],
        )
        output = "logits"
    elif pool in STAGE_POOLS:
        head = builder.unit(builder.pooled(x, GEM))
        stage = builder.unit(builder.pooled(last_block, GEM))
        stage = builder.node("Mul", [stage, builder.const("stage_weight", np.array(STAGE_WEIGHT))])
        parts = [head, stage]
        if pool == GEM_GRID:
            grid = builder.unit(builder.grid_pooled(last_block, side))
            parts.append(
                builder.node("Mul", [grid, builder.const("grid_weight", np.array(GRID_WEIGHT))])
            )
        x = builder.node("Concat", parts, axis=1)
        output = "features"
    else:
        x = builder.pooled(x, pool)
        output = "features"
    builder.finish(x, output)
    graph = helper.make_graph(
        builder.nodes,
        f"{name}-{output}",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", size, size, 3])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", None])],
        builder.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lookalike"
    )
    model.ir_version = 8  # what ONNX Runtime >= 1.17 reads for opset 17
    checker.check_model(model)
    out: bytes = model.SerializeToString()
    return out


class _Builder:
    """Nodes and initialisers of one graph, with the checkpoint's tensors checked on use."""

    def __init__(self, name: str, state: Mapping[str, np.ndarray]) -> None:
        self.name = name
        self.state = state
        self.used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def take(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if key not in self.state:
            raise self._mismatch(f"missing {key}")
        value = np.asarray(self.state[key])
        if shape is not None and value.shape != shape:
            raise self._mismatch(f"{key} has shape {value.shape}, expected {shape}")
        self.used.add(key)
        return value.astype(np.float64)

    def _mismatch(self, reason: str) -> ModelError:
        return ModelError(f"does not hold {self.name} weights ({reason})")

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        self._count += 1
        out = f"{op.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self._count}", **attrs))
        return out

    def conv_bn(
        self,
        x: str,
        conv: str,
        bn: str,
        stride: int,
        size: int,
        relu: bool,
        groups: int = 1,
        channels: tuple[int, int] | None = None,
    ) -> str:
        """Conv (no bias) + batch norm folded into it (+ ReLU6)."""
        weight = self.take(f"{conv}.weight")
        if weight.ndim != 4 or (
            channels is not None
            and (weight.shape[0] != channels[1] or weight.shape[1] * groups != channels[0])
        ):
            raise self._mismatch(f"{conv}.weight has shape {weight.shape}")
        n = weight.shape[0]
        gamma, beta, mean, var = (
            self.take(f"{bn}.{k}", (n,)) for k in ("weight", "bias", "running_mean", "running_var")
        )
        self.used.add(f"{bn}.num_batches_tracked")
        scale = gamma / np.sqrt(var + BN_EPS)
        kernel = weight.shape[2]
        out = self.node(
            "Conv",
            [
                x,
                self.const(f"{conv}.w", weight * scale[:, None, None, None]),
                self.const(f"{conv}.b", beta - mean * scale),
            ],
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=same_padding(size, kernel, stride),
            group=groups,
        )
        return self.relu6(out) if relu else out

    def relu6(self, x: str) -> str:
        return self.node("Clip", [x, self.shared("relu6_min", 0.0), self.shared("relu6_max", 6.0)])

    def mbconv(self, x: str, block: Block) -> str:
        prefix = f"_blocks.{block.index}"
        mid = block.inp * block.expand
        y = x
        if block.expand != 1:
            y = self.conv_bn(
                y,
                f"{prefix}._expand_conv",
                f"{prefix}._bn0",
                1,
                block.size,
                True,
                channels=(block.inp, mid),
            )
        y = self.conv_bn(
            y,
            f"{prefix}._depthwise_conv",
            f"{prefix}._bn1",
            block.stride,
            block.size,
            True,
            groups=mid,
            channels=(mid, mid),
        )
        if self.state[f"{prefix}._depthwise_conv.weight"].shape[2] != block.kernel:
            raise self._mismatch(f"{prefix} is not a {block.kernel}x{block.kernel} block")
        y = self.conv_bn(
            y,
            f"{prefix}._project_conv",
            f"{prefix}._bn2",
            1,
            math.ceil(block.size / block.stride),
            False,
            channels=(mid, block.out),
        )
        return self.node("Add", [y, x]) if block.residual else y

    def pooled(self, x: str, pool: str) -> str:
        if pool == AVG:
            return self.node("ReduceMean", [x], axes=[2, 3], keepdims=0)
        if pool == GEM:
            y = self.node("ReduceMean", [self.powered(x)], axes=[2, 3], keepdims=0)
            return self.node("Pow", [y, self.shared("gem_inv_p", 1.0 / GEM_P)])
        raise ModelError(f"unknown pool {pool!r}; use one of: {', '.join(POOLS)}")

    def grid_pooled(self, x: str, side: int) -> str:
        """GeM over each cell of a grid on a side x side map, flattened channel-major
        (channel 0's cells first), as onnx_backend.grid_features."""
        kernel, stride = grid_cells(side)
        y = self.node(
            "AveragePool", [self.powered(x)], kernel_shape=[kernel] * 2, strides=[stride] * 2
        )
        y = self.node("Pow", [y, self.shared("gem_inv_p", 1.0 / GEM_P)])
        return self.node("Flatten", [y], axis=1)

    def powered(self, x: str) -> str:
        """GeM's first steps: the map clamped away from zero, raised to p."""
        y = self.node("Clip", [x, self.shared("gem_min", GEM_EPS)])
        return self.node("Pow", [y, self.shared("gem_p", GEM_P)])

    def unit(self, x: str) -> str:
        """Rows scaled to length 1 (GeM's clamp keeps every row away from zero)."""
        return self.node("LpNormalization", [x], axis=1, p=2)

    def shared(self, name: str, value: float) -> str:
        """A scalar constant, made once however many nodes read it."""
        if name not in {i.name for i in self.initializers}:
            self.const(name, np.array(value))
        return name

    def finish(self, x: str, output: str) -> None:
        """Rename the last tensor to ``output``; every weight must have been used."""
        self.nodes[-1].output[0] = output
        extra = sorted(set(self.state) - self.used - {"_fc.weight", "_fc.bias"})
        if extra:
            raise self._mismatch(
                f"unexpected {extra[0]}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")
            )


def _scaling(name: str) -> tuple[float, float, int]:
    try:
        return SCALING[name]
    except KeyError:
        raise ModelError(f"not an EfficientNet-Lite model: {name!r}") from None
