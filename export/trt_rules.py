"""Static check that an ONNX Q/DQ graph follows TensorRT's explicit-quantization rules.

TensorRT 10/11 builds INT8 only from Q/DQ nodes in a strongly typed network, and it wants:

* symmetric int8: every QuantizeLinear / DequantizeLinear has a constant int8 zero point of
  all zeros (an absent zero point means uint8 in ONNX) and a constant positive float scale;
* no uint8 anywhere in Q/DQ (U8 activations are ONNX Runtime's CPU format, not TensorRT's);
* weights quantized per output channel: Conv weight DQ on axis 0 with one scale per output
  channel; MatMul weight [K, N] per-tensor or on axis 1; Gemm B on axis 0 when transB=1,
  else axis 1; activations per-tensor (one scale);
* default-domain ops only, opset >= 13, each op one TensorRT's ONNX parser handles well.

The check runs without TensorRT, so `groundrt export` can refuse a graph before a GPU sees it.
It reads the graph with `onnx` alone: polygraphy is not a groundrt dependency, and its ONNX
loaders only wrap `onnx.load` and shape inference, which this module calls directly.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from groundrt.errors import GroundrtError

MIN_OPSET = 13
DEFAULT_DOMAINS = ("", "ai.onnx")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

# Ops TensorRT's ONNX parser supports well enough for groundrt's graphs (TensorRT 10/11).
# NonZero is left out on purpose: its data-dependent output shape defeats engine planning.
TRT_SUPPORTED_OPS = frozenset({
    "Conv", "Relu", "Add", "Mul", "Sub", "Div", "MatMul", "Gemm", "Resize", "Concat", "Reshape",
    "Transpose", "Softmax", "LayerNormalization", "ReduceMean", "Sqrt", "Pow", "Gather", "Shape",
    "Slice", "Unsqueeze", "Squeeze", "Cast", "Constant", "ConstantOfShape", "Where", "Equal",
    "Expand", "Erf", "Sigmoid", "Tanh", "QuantizeLinear", "DequantizeLinear", "Identity", "Range",
    "Less", "Greater", "Not", "And", "Sin", "Cos", "Flatten", "Neg", "Exp", "Log", "Max", "Min",
    "ReduceMax", "ReduceSum", "Split", "Tile", "Pad", "MaxPool", "AveragePool",
    "GlobalAveragePool", "BatchNormalization", "Clip", "Einsum", "TopK", "ArgMax", "Abs", "Floor",
    "Ceil", "Round", "Trilu", "ScatterND", "GatherElements", "Sign", "Reciprocal", "HardSigmoid",
    "HardSwish", "LeakyRelu", "PRelu", "Elu", "Selu", "Softplus", "Or", "IsNaN", "Mod", "CumSum",
    # also in onnx-tensorrt's operator support matrix (docs/operators.md)
    "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare",
    "ConvTranspose", "InstanceNormalization", "DepthToSpace", "SpaceToDepth", "GreaterOrEqual",
    "LessOrEqual", "LogSoftmax", "ArgMin", "Xor", "Softsign", "GatherND", "GlobalMaxPool",
    "Dropout", "Sum", "Mean", "Size",
})
UNSUPPORTED_REASONS = {
    "NonZero": "its output shape depends on the data, which TensorRT handles poorly",
}

_FLOAT_SCALE_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)


class TensorRTRulesError(GroundrtError, ValueError):
    """An ONNX Q/DQ graph breaks TensorRT's explicit-quantization rules."""

    def __init__(self, violations: list[str], source: str = "the graph") -> None:
        self.violations = list(violations)
        listed = "\n".join(f"  - {v}" for v in self.violations)
        super().__init__(
            f"{source} breaks {len(self.violations)} TensorRT explicit-quantization rule(s) "
            f"(symmetric int8, per-channel weights, supported ops):\n{listed}")


def _load(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX graph {path} does not exist")
    return onnx.load(str(path))


def _label(node: onnx.NodeProto, index: int) -> str:
    name = node.name or f"#{index}"
    domain = f"{node.domain}::" if node.domain not in DEFAULT_DOMAINS else ""
    return f"{domain}{node.op_type} node '{name}'"


def _constant_value(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor a Constant node holds (value or value_float(s)/value_int(s)), or None."""
    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
        if attr.name == "value_float":
            return numpy_helper.from_array(np.array(attr.f, dtype=np.float32))
        if attr.name == "value_floats":
            return numpy_helper.from_array(np.array(list(attr.floats), dtype=np.float32))
        if attr.name == "value_int":
            return numpy_helper.from_array(np.array(attr.i, dtype=np.int64))
        if attr.name == "value_ints":
            return numpy_helper.from_array(np.array(list(attr.ints), dtype=np.int64))
    return None


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


class _Graph:
    """Constants, value types and consumers of the main graph, looked up by tensor name."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.constants: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and node.output:
                value = _constant_value(node)
                if value is not None:
                    self.constants[node.output[0]] = value
        self.types: dict[str, int] = {}
        try:  # types of intermediate tensors; a graph shape inference rejects still gets checked
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
        except Exception:  # inference is a best-effort extra here
            inferred = graph
        for info in (*inferred.value_info, *graph.value_info, *graph.input, *graph.output):
            if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
                self.types.setdefault(info.name, info.type.tensor_type.elem_type)
        for name, tensor in self.constants.items():
            self.types[name] = tensor.data_type
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in graph.node:
            for out in node.output:
                self.producer[out] = node
            for slot, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, slot))

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.constants[name])

    def is_weight_dq(self, node: onnx.NodeProto) -> bool:
        """A DQ of a constant, or of a Q whose input is a float constant (fake-quant weight)."""
        if node.op_type != "DequantizeLinear" or not node.input:
            return False
        source = node.input[0]
        if source in self.constants:
            return True
        producer = self.producer.get(source)
        return (producer is not None and producer.op_type == "QuantizeLinear"
                and producer.input[0] in self.constants)

    def weight_shape(self, dq: onnx.NodeProto) -> tuple[int, ...]:
        source = dq.input[0]
        if source not in self.constants:  # Q(constant) -> DQ
            source = self.producer[source].input[0]
        return tuple(int(d) for d in self.constants[source].dims)


def _check_opsets(model: onnx.ModelProto) -> list[str]:
    versions = {op.domain: op.version for op in model.opset_import}
    version = versions.get("", versions.get("ai.onnx"))
    if version is None:
        return ["the model imports no default-domain ONNX opset: export with opset >= "
                f"{MIN_OPSET}"]
    if version < MIN_OPSET:
        return [f"the model uses ONNX opset {version}; TensorRT's Q/DQ support (per-channel "
                f"axis) needs opset >= {MIN_OPSET}: re-export with a newer opset"]
    return []


def _check_op(node: onnx.NodeProto, label: str) -> list[str]:
    if node.domain not in DEFAULT_DOMAINS:
        return [f"{label}: op from custom domain '{node.domain}' (TensorRT parses only the "
                "default ONNX domain): export without contrib ops / ORT graph optimizations"]
    if node.op_type in UNSUPPORTED_REASONS:
        return [f"{label}: {node.op_type} is not supported by the TensorRT build "
                f"({UNSUPPORTED_REASONS[node.op_type]})"]
    if node.op_type not in TRT_SUPPORTED_OPS:
        return [f"{label}: op {node.op_type} is not in the list of ops TensorRT supports here"]
    return []


def _check_zero_point(g: _Graph, node: onnx.NodeProto, label: str) -> list[str]:
    name = node.input[2] if len(node.input) > 2 else ""
    if not name:
        meaning = ("int8 by output_dtype" if _attr(node, "output_dtype", 0) == TensorProto.INT8
                   else "which means uint8 in ONNX")
        return [f"{label}: no zero point ({meaning}); TensorRT wants an explicit int8 zero point "
                "of 0 (symmetric int8)"]
    if name not in g.constants:
        return [f"{label}: zero point '{name}' is computed, not a constant initializer"]
    tensor = g.constants[name]
    if tensor.data_type == TensorProto.UINT8:
        return [f"{label}: uint8 zero point '{name}' (U8 activations are ONNX Runtime's CPU "
                "format): TensorRT wants int8 with zero point 0"]
    if tensor.data_type != TensorProto.INT8:
        dtype = TensorProto.DataType.Name(tensor.data_type).lower()
        return [f"{label}: zero point '{name}' is {dtype}; TensorRT's INT8 path wants int8"]
    values = g.array(name)
    if np.any(values != 0):
        shown = np.unique(values)[:4].tolist()
        return [f"{label}: asymmetric quantization, zero point '{name}' holds {shown}; "
                "TensorRT wants symmetric int8 (zero point 0)"]
    return []


def _check_scale(g: _Graph, node: onnx.NodeProto, label: str) -> list[str]:
    name = node.input[1] if len(node.input) > 1 else ""
    if name not in g.constants:
        return [f"{label}: scale '{name}' is not a constant initializer"]
    tensor = g.constants[name]
    if tensor.data_type not in _FLOAT_SCALE_TYPES:
        dtype = TensorProto.DataType.Name(tensor.data_type).lower()
        return [f"{label}: scale '{name}' is {dtype}; TensorRT wants float32 (or float16)"]
    values = g.array(name).astype(np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        return [f"{label}: scale '{name}' has values that are not positive and finite"]
    return []


def _check_uint8_tensors(g: _Graph, node: onnx.NodeProto, label: str) -> list[str]:
    if node.op_type == "QuantizeLinear":
        quantized = node.output[0] if node.output else ""
        if _attr(node, "output_dtype", 0) == TensorProto.UINT8:
            return [f"{label}: output_dtype is uint8; TensorRT wants int8"]
    else:
        quantized = node.input[0]
    if g.types.get(quantized) == TensorProto.UINT8:
        return [f"{label}: quantized tensor '{quantized}' is uint8; TensorRT wants int8"]
    return []


def _per_channel_rule(g: _Graph, dq: onnx.NodeProto) -> tuple[str, int | None] | None:
    """(consumer description, required axis or None for per-tensor-or-last-axis) or None."""
    for consumer, slot in g.consumers.get(dq.output[0], []):
        if consumer.op_type == "Conv" and slot == 1:
            return f"Conv '{consumer.name}' weight", 0
        if consumer.op_type == "MatMul" and slot == 1:
            return f"MatMul '{consumer.name}' weight", None
        if consumer.op_type == "Gemm" and slot == 1:
            axis = 0 if _attr(consumer, "transB", 0) else 1
            return f"Gemm '{consumer.name}' weight (transB={_attr(consumer, 'transB', 0)})", axis
    return None


def _check_weight_dq(g: _Graph, node: onnx.NodeProto, label: str) -> list[str]:
    rule = _per_channel_rule(g, node)
    if rule is None or len(node.input) < 2 or node.input[1] not in g.constants:
        return []
    what, axis = rule
    shape = g.weight_shape(node)
    rank = len(shape)
    scale = g.array(node.input[1])
    axis_attr = _attr(node, "axis", 1)
    dq_axis = axis_attr + rank if axis_attr < 0 else axis_attr
    if _attr(node, "block_size", 0):
        return [f"{label}: blocked quantization of {what}; TensorRT's int8 path wants "
                "per-channel scales"]
    if what.startswith("MatMul"):
        if scale.size == 1:
            return []  # per-tensor MatMul weights are fine
        axis = rank - 1  # output columns N of a [..., K, N] weight
    if axis is None:
        return []
    if scale.ndim == 0 or (scale.size == 1 and shape[axis] != 1):
        if what.startswith("Conv"):
            return [f"{label}: per-tensor scale for {what}; TensorRT wants per-channel weights "
                    f"(axis {axis}, {shape[axis]} scales, one per output channel)"]
        return []  # per-tensor Gemm weights are fine too
    if dq_axis != axis:
        return [f"{label}: per-channel scale of {what} on axis {axis_attr}; TensorRT wants axis "
                f"{axis}, the output-channel axis ({shape[axis]} scales)"]
    if scale.size != shape[axis]:
        return [f"{label}: {scale.size} scales for {what} of shape {list(shape)}; TensorRT wants "
                f"one per output channel ({shape[axis]} on axis {axis})"]
    return []


def _check_activation_qdq(g: _Graph, node: onnx.NodeProto, label: str) -> list[str]:
    if node.op_type == "QuantizeLinear" and node.input[0] in g.constants:
        return []  # the Q of a Q(constant) -> DQ weight quantizer
    if len(node.input) < 2 or node.input[1] not in g.constants:
        return []
    scale = g.array(node.input[1])
    if scale.size != 1 or _attr(node, "block_size", 0):
        return [f"{label}: activation quantized per-channel ({scale.size} scales); TensorRT "
                "wants per-tensor activation scales (one scalar)"]
    return []


def _check_qdq(g: _Graph, node: onnx.NodeProto, label: str) -> list[str]:
    if node.op_type == "DequantizeLinear" and g.types.get(node.input[0]) == TensorProto.INT32:
        # ONNX Runtime's quantize_static writes these unless extra_options QuantizeBias=False
        return [f"{label}: int32 input '{node.input[0]}' (a quantized bias); TensorRT's parser "
                "takes only int8 Q/DQ: keep biases float (quantize with QuantizeBias=False)"]
    zero_point = _check_zero_point(g, node, label)
    violations = _check_scale(g, node, label) + zero_point
    if not any("uint8" in v for v in zero_point):  # one uint8 report per node
        violations += _check_uint8_tensors(g, node, label)
    if g.is_weight_dq(node):
        violations += _check_weight_dq(g, node, label)
    else:
        violations += _check_activation_qdq(g, node, label)
    return violations


def check_trt_qdq(model: str | Path | onnx.ModelProto) -> list[str]:
    """Violations of TensorRT's explicit-quantization rules, each naming its node; [] is OK."""
    proto = _load(model)
    g = _Graph(proto)
    violations = _check_opsets(proto)
    for index, node in enumerate(proto.graph.node):
        label = _label(node, index)
        violations += _check_op(node, label)
        if node.op_type in QDQ_OPS and node.domain in DEFAULT_DOMAINS:
            violations += _check_qdq(g, node, label)
    return violations


def assert_trt_qdq(model: str | Path | onnx.ModelProto) -> None:
    """Raises TensorRTRulesError listing every violation of `check_trt_qdq`."""
    violations = check_trt_qdq(model)
    if violations:
        source = str(model) if not isinstance(model, onnx.ModelProto) else "the graph"
        raise TensorRTRulesError(violations, source)


def qdq_summary(model: str | Path | onnx.ModelProto) -> dict:
    """Counts for the manifest: Q and DQ nodes, weight DQs (per-channel among them), and the
    compute nodes by op type that consume a DQ (quantized) or not (float)."""
    proto = _load(model)
    g = _Graph(proto)
    dq_outputs = {n.output[0] for n in proto.graph.node
                  if n.op_type == "DequantizeLinear" and n.output}
    counts: Counter[str] = Counter()
    quantized: Counter[str] = Counter()
    floating: Counter[str] = Counter()
    for node in proto.graph.node:
        if node.op_type in QDQ_OPS:
            counts[node.op_type] += 1
            if g.is_weight_dq(node):
                counts["weight_dq"] += 1
                scale = g.array(node.input[1]) if node.input[1] in g.constants else None
                if scale is not None and scale.size > 1:
                    counts["per_channel_weight_dq"] += 1
        elif node.op_type != "Constant":
            target = quantized if any(i in dq_outputs for i in node.input) else floating
            target[node.op_type] += 1
    return {
        "quantize_linear": counts["QuantizeLinear"],
        "dequantize_linear": counts["DequantizeLinear"],
        "weight_dq": counts["weight_dq"],
        "per_channel_weight_dq": counts["per_channel_weight_dq"],
        "quantized_nodes": dict(sorted(quantized.items())),
        "float_nodes": dict(sorted(floating.items())),
    }
