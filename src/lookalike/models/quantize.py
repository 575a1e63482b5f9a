"""Float ONNX graph -> int8 graph: ONNX Runtime static quantisation, then one graph fix.

Scheme (measured on EfficientNet-Lite0 with ORT 1.32, see BENCHMARKS.md):

* QDQ format, uint8 activations, int8 weights per output channel, MinMax ranges over
  the calibration photos. Per-tensor weights were as fast but far less faithful
  (cosine to the float vectors 0.91 against 0.994).
* Only convolutions, the ReLU6 (Clip) right after them and residual Adds are quantised.
  A Clip quantised with its convolution lets ORT fuse the two into one QLinearConv whose
  output range is 0..6; left out, the convolution's output is quantised over its whole
  range first, and the cosine to the float vectors drops to 0.92 (foolbox photos).
  Anything after the last Clip (the pooling) stays float.
* The input normalisation ``x * mul + add`` is folded into the first DequantizeLinear
  when it is one: with (x - 127) / 128 the uint8 pixels *are* the quantised input
  (scale 1/128, zero point 127), exactly. Quantised as ORT does it by default, the
  float Cast, Mul and broadcast Add over the input cost a third of the inference time.

On x86 CPUs without VNNI, ORT's u8 x s8 kernels add pairs of products in int16 and
saturate (measured on an AVX2 CPU: cosine 0.94 to the graph's exact arithmetic). The
quantisers' remedies cost accuracy here (7-bit weights: cosine to float 0.98 on the
foolbox photos, 0.87 on the worst calibration photo; uint8 weights: 0.93 there); ORT's
session option ``session.x64quantprecision`` does not: it runs the same int8 weights on
uint8 x uint8 kernels, shifted by 128, exactly. So the scheme is the same everywhere,
``make_session`` sets that option where the CPU lacks VNNI, and ``Int8FeatureModel``
checks, on the machine that builds it, that the vectors stay close to the float ones.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookalike.errors import ModelError

if TYPE_CHECKING:
    import onnx

# Names the quantisation; bump the version when it or the calibration set changes: it is
# part of the model's identity (a collection refuses vectors of another scheme) and of
# the cache file name.
SCHEME = "int8-qdq-u8s8-v1"
CALIBRATION_BATCH = 6
# ReLU6 right after a conv, residual adds; also what the quantiser must be allowed to touch.
QUANTISED_OPS = ("Conv", "Clip", "Add")


def input_dequantization(mul: np.ndarray, add: np.ndarray) -> tuple[float, int] | None:
    """(scale, zero point) with ``(x - zero_point) * scale == x * mul + add`` for every
    channel, or None when the normalisation is not of that form (then ORT quantises it)."""
    mul = np.asarray(mul, dtype=np.float64).ravel()
    add = np.asarray(add, dtype=np.float64).ravel()
    if not np.allclose(mul, mul[0], rtol=1e-6, atol=0) or mul[0] <= 0:
        return None
    zero = -add / mul
    point = round(float(zero[0]))
    if not np.allclose(zero, point, rtol=0, atol=1e-4) or not 0 <= point <= 255:
        return None
    return float(np.float32(mul[0])), point


def quantize_graph(
    graph: bytes,
    calibration: np.ndarray,
    normalisation: tuple[np.ndarray, np.ndarray],
) -> bytes:
    """The int8 version of ``graph`` (uint8 NHWC pixels -> float features).

    ``calibration``: (n, H, W, 3) uint8 pixels of typical photos; ``normalisation``: the
    per-channel (mul, add) the graph applies to them first.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Batches(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.name = name
            self.starts = iter(range(0, len(calibration), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self.starts, None)
            if start is None:
                return None
            return {self.name: calibration[start : start + CALIBRATION_BATCH]}

    with tempfile.TemporaryDirectory(prefix="lookalike-int8-") as tmp:
        source, prepared, target = (Path(tmp) / f"{n}.onnx" for n in ("float", "prep", "int8"))
        source.write_bytes(graph)
        # Shape inference and constant folding first, as ORT recommends: the padding
        # arithmetic of the TF-style convolutions folds away.
        quant_pre_process(str(source), str(prepared))
        model = onnx.load(str(prepared))
        quantize_static(
            str(prepared),
            str(target),
            Batches(model.graph.input[0].name),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTISED_OPS),
            nodes_to_quantize=nodes_to_quantize(model),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # Merge the ranges every few batches instead of holding every activation of
            # every calibration photo in memory at once.
            extra_options={"CalibMaxIntermediateOutputs": 4},
        )
        quantised = onnx.load(str(target))
    dequantization = input_dequantization(*normalisation)
    if dequantization is not None:
        fold_input_normalisation(quantised, *dequantization)
    onnx.checker.check_model(quantised)
    out: bytes = quantised.SerializeToString()
    return out


def nodes_to_quantize(model: onnx.ModelProto) -> list[str]:
    """Names of the convolutions, the ReLU6 Clips reading a convolution, and residual Adds
    (both inputs computed; the normalisation's Add has a constant one)."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    constant = {init.name for init in graph.initializer}
    constant.update(out for node in graph.node if node.op_type == "Constant" for out in node.output)
    chosen = []
    for node in graph.node:
        if not node.name:
            raise ModelError("cannot quantise a graph with unnamed nodes")
        source = producer.get(node.input[0]) if node.input else None
        if (
            node.op_type == "Conv"
            # A ReLU6 (min and max); GeM's clamp (min only) stays float, even where it
            # reads a convolution (gem-2stage's last-block map, a linear projection).
            or (
                node.op_type == "Clip"
                and len(node.input) == 3
                and source is not None
                and source.op_type == "Conv"
            )
            or (
                node.op_type == "Add"
                and all(i in producer and i not in constant for i in node.input)
            )
        ):
            chosen.append(node.name)
    return chosen


def fold_input_normalisation(model: onnx.ModelProto, scale: float, zero_point: int) -> None:
    """Replace input -> Transpose -> Cast -> Mul -> Add -> QuantizeLinear by the uint8
    input itself, read by the DequantizeLinear(s) with ``scale`` and ``zero_point``."""
    from onnx import numpy_helper

    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    chain = _single_path(consumers, graph.input[0].name, 5)
    kinds = [node.op_type for node in chain]
    if kinds != ["Transpose", "Cast", "Mul", "Add", "QuantizeLinear"]:
        raise ModelError(f"unexpected input layers for int8: {kinds}")
    pixels = chain[0].output[0]  # (n, 3, H, W) uint8
    readers = consumers.get(chain[-1].output[0], [])
    if not readers or any(node.op_type != "DequantizeLinear" for node in readers):
        raise ModelError("the quantised input is not only dequantised")
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(scale, dtype=np.float32), "pixels_scale"),
            numpy_helper.from_array(np.array(zero_point, dtype=np.uint8), "pixels_zero_point"),
        ]
    )
    for node in readers:
        del node.input[:]
        node.input.extend([pixels, "pixels_scale", "pixels_zero_point"])
    for node in chain[1:]:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [init for init in graph.initializer if init.name not in used]:
        graph.initializer.remove(init)  # the normalisation constants


def _single_path(
    consumers: Mapping[str, Sequence[onnx.NodeProto]], start: str, length: int
) -> list[onnx.NodeProto]:
    """The chain of nodes from tensor ``start``, while each tensor has one reader."""
    chain: list[onnx.NodeProto] = []
    tensor = start
    while len(chain) < length and len(consumers.get(tensor, ())) == 1:
        node = consumers[tensor][0]
        chain.append(node)
        tensor = node.output[0]
    return chain
