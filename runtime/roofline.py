"""The roofline of `groundrt bench`: how far each stage is from what this machine can do.

* `count_graph_ops`: the multiply-add work of an ONNX graph (2 ops per multiply-add) over its
  Conv / ConvInteger / QLinearConv / MatMul / MatMulInteger / QLinearMatMul / Gemm nodes, from
  ONNX shape inference at the input shapes actually run; a Conv / MatMul / Gemm whose data and
  weight come from DequantizeLinear (a Q/DQ graph, which ONNX Runtime fuses into integer
  kernels) counts as INT8, like the integer operators. Other nodes (adds, activations, softmax)
  are not counted: the floor is a lower bound.
* `measure_peaks`: this machine's INT8 and FP32 peaks, measured once per run with ONNX Runtime
  on the bench's threads (a MatMulInteger and a MatMul of n x n by n x n, the best of 20
  runs: on a shared machine the best is the one least disturbed), and its copy bandwidth (numpy
  copying a 64 MiB array, one thread; bytes read + written).
* `kernel_bytes`: bytes the native kernels read and write per frame (letterbox, affinity, mask
  decoding), whose floor is bytes / copy bandwidth.
* `EDGE_DEVICES` / `edge_estimate`: frame floors on other hardware from the counted work and
  bytes: estimates, not measurements.

Needs the onnx package (the [export] extra) for counting; the peaks need only ONNX Runtime.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COUNTED_OPS = ("Conv", "ConvInteger", "QLinearConv", "MatMul", "MatMulInteger",
               "QLinearMatMul", "Gemm")
INTEGER_OPS = ("ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul")
WEIGHT_INPUT = {"QLinearConv": 3, "QLinearMatMul": 3}  # the others: input 1


@dataclass(frozen=True)
class GraphOps:
    """The counted work of one graph at one set of input shapes."""

    int8_gops: float
    fp32_gops: float
    counted_nodes: int
    unshaped_nodes: int  # counted-type nodes whose shapes inference could not give
    weight_bytes: int  # the graph's initializers

    @property
    def gops(self) -> float:
        return self.int8_gops + self.fp32_gops

    def to_json(self) -> dict:
        return {"int8_gops": self.int8_gops, "fp32_gops": self.fp32_gops,
                "counted_nodes": self.counted_nodes, "unshaped_nodes": self.unshaped_nodes,
                "weight_bytes": self.weight_bytes}


def _fix_inputs(model, input_shapes: Mapping[str, Sequence[int]]) -> None:
    """Set the graph inputs named in `input_shapes` to those concrete shapes."""
    for graph_input in model.graph.input:
        shape = input_shapes.get(graph_input.name)
        if shape is None:
            continue
        dims = graph_input.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ValueError(f"input {graph_input.name} has rank {len(dims)}, not "
                             f"{len(shape)} as given")
        for dim, value in zip(dims, shape, strict=True):
            dim.Clear()
            dim.dim_value = int(value)


def _shapes(model) -> dict[str, tuple[int, ...] | None]:
    """Every tensor's static shape (None where a dimension is unknown)."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    graph = model.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        values = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        known = info.type.tensor_type.HasField("shape") and None not in values
        shapes[info.name] = tuple(values) if known else None
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _macs(node, shapes: Mapping[str, tuple[int, ...] | None]) -> int | None:
    """Multiply-adds of one counted node (None: a shape is unknown)."""
    weight = shapes.get(node.input[WEIGHT_INPUT.get(node.op_type, 1)])
    out = shapes.get(node.output[0])
    data = shapes.get(node.input[0])
    if weight is None or out is None or data is None:
        return None
    if "Conv" in node.op_type:  # out [N, M, ...], weight [M, C / groups, k...]
        return int(np.prod(out, dtype=np.int64) * np.prod(weight[1:], dtype=np.int64))
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        inner = data[0] if trans_a else data[1]
        return int(np.prod(out, dtype=np.int64) * inner)
    return int(np.prod(out, dtype=np.int64) * data[-1])  # MatMul: [..., M, K] @ [..., K, N]


def count_graph_ops(path: str | Path, input_shapes: Mapping[str, Sequence[int]]) -> GraphOps:
    """The counted work (GOPs, 2 per multiply-add) of the ONNX graph at `path` when its inputs
    have `input_shapes` (name -> shape; unnamed inputs keep their declared shapes)."""
    import onnx

    model = onnx.load(str(path))
    _fix_inputs(model, input_shapes)
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = _shapes(inferred)
    produced_by = {out: node.op_type for node in inferred.graph.node for out in node.output}
    int8 = fp32 = 0
    counted = unshaped = 0
    for node in inferred.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        counted += 1
        macs = _macs(node, shapes)
        if macs is None:
            unshaped += 1
            continue
        dequantized = all(produced_by.get(name) == "DequantizeLinear"
                          for name in node.input[:2])
        if node.op_type in INTEGER_OPS or dequantized:
            int8 += macs
        else:
            fp32 += macs
    weights = sum(int(np.prod(i.dims, dtype=np.int64)) * _itemsize(i.data_type)
                  for i in model.graph.initializer)
    return GraphOps(2 * int8 / 1e9, 2 * fp32 / 1e9, counted, unshaped, weights)


def _itemsize(onnx_type: int) -> int:
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type)).itemsize


# ------------------------------------------------------------------------------- peaks


def _matmul_graph(integer: bool, n: int) -> bytes:
    """A one-node ONNX graph: MatMulInteger (uint8 x int8 -> int32) or MatMul (float32)."""
    from onnx import TensorProto, helper

    a_type, b_type = (TensorProto.UINT8, TensorProto.INT8) if integer else (
        TensorProto.FLOAT, TensorProto.FLOAT)
    node = helper.make_node("MatMulInteger" if integer else "MatMul", ["a", "b"], ["y"])
    graph = helper.make_graph(
        [node], "peak", [helper.make_tensor_value_info("a", a_type, [n, n]),
                         helper.make_tensor_value_info("b", b_type, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32 if integer else TensorProto.FLOAT,
                                       [n, n])])
    opset = [helper.make_opsetid("", 17)]
    return helper.make_model(graph, opset_imports=opset, ir_version=8).SerializeToString()


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (buffers, packing)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_peaks(threads: int, n: int = 1024, repeats: int = 20) -> dict:
    """INT8 and FP32 GOP/s of ONNX Runtime on `threads` threads, and the copy bandwidth
    (GB/s of bytes read + written), each the best of `repeats` runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    rng = np.random.default_rng(0)
    peaks: dict = {"matmul_size": n, "threads": threads, "repeats": repeats}
    for name, integer in (("int8_gops", True), ("fp32_gops", False)):
        session = ort.InferenceSession(_matmul_graph(integer, n), options,
                                       providers=["CPUExecutionProvider"])
        feeds = ({"a": rng.integers(0, 255, (n, n), dtype=np.uint8),
                  "b": rng.integers(-127, 127, (n, n), dtype=np.int8)} if integer else
                 {"a": rng.standard_normal((n, n), dtype=np.float32),
                  "b": rng.standard_normal((n, n), dtype=np.float32)})
        seconds = _best_seconds(lambda s=session, f=feeds: s.run(None, f), repeats)
        peaks[name] = 2 * n ** 3 / seconds / 1e9
    source = np.ones(64 << 20, np.uint8)
    target = np.empty_like(source)
    seconds = _best_seconds(lambda: np.copyto(target, source), repeats)
    peaks["copy_gbs"] = 2 * source.nbytes / seconds / 1e9
    return peaks


# ------------------------------------------------------------------------- the kernels


def kernel_bytes(frame_hw: tuple[int, int], input_hw: tuple[int, int], phrases: int,
                 queries: int, embed_dim: int, pixel_hw: tuple[int, int]) -> dict[str, int]:
    """Bytes read + written per frame by the letterbox (BGR uint8 in, [3, h, w] float32 out),
    the affinity (phrase and object embeddings in, a P x Q matrix out) and mask decoding
    (pixel embeddings and P kernels in, P uint8 masks at the frame's size out)."""
    height, width = frame_hw
    pixels = pixel_hw[0] * pixel_hw[1]
    return {
        "preprocess": height * width * 3 + 3 * input_hw[0] * input_hw[1] * 4,
        "affinity": (phrases + queries) * embed_dim * 4 + phrases * queries * 4,
        "decode": (embed_dim * pixels + phrases * embed_dim) * 4 + phrases * height * width,
    }


def stage_floor_ms(ops: GraphOps | None, bytes_moved: int | None, peaks: Mapping) -> float:
    """The least time of a stage: its INT8 and FP32 work at the peaks, or its bytes at the copy
    bandwidth (a graph stage counts its work, a kernel stage its bytes)."""
    if ops is not None:
        return (ops.int8_gops / peaks["int8_gops"] + ops.fp32_gops / peaks["fp32_gops"]) * 1e3
    return (bytes_moved or 0) / (peaks["copy_gbs"] * 1e9) * 1e3


# ------------------------------------------------------------------------------- edges


@dataclass(frozen=True)
class EdgeDevice:
    name: str
    int8_tops: float  # dense
    memory_gbs: float


EDGE_DEVICES = (EdgeDevice("Jetson AGX Orin", 85.0, 204.8),
                EdgeDevice("Jetson Orin Nano Super", 33.0, 102.0),
                EdgeDevice("RTX 4090", 660.0, 1008.0))


def edge_estimate(device: EdgeDevice, gops: float, bytes_moved: int) -> float:
    """An estimate, not a measurement: the frame's floor in ms on `device` if all its counted
    work ran in dense INT8 at the device's peak and its bytes (weights read once, the
    kernels' traffic) moved at its memory bandwidth, whichever is longer (no launch overheads,
    no efficiency loss: real figures are several times this)."""
    return max(gops / (device.int8_tops * 1e3), bytes_moved / (device.memory_gbs * 1e9)) * 1e3
