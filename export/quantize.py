"""INT8 by explicit quantization: one calibration pass, two Q/DQ graphs.

* `image.int8.trt.onnx`: symmetric int8 activations (zero point 0) and per-channel symmetric
  int8 weights: what TensorRT 10/11 build as a strongly typed network;
* `image.int8.cpu.onnx`: uint8 activations, per-channel int8 weights: what ONNX Runtime runs
  fastest on x86 CPUs with VNNI (U8S8).

Calibration runs ONNX Runtime's MinMax calibrator once over N letterboxed training images; the
ranges go to a cache file that both quantizations read, so both graphs come from the same
ranges. What stays float is chosen by measurement (see `FLOAT_POLICIES` and the export note):
the final embedding projections, whose outputs are dot-producted and thresholded directly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from groundrt.data import PNGDataset
from groundrt.preprocess import Letterbox, normalize

CPU_SUFFIX, TRT_SUFFIX = ".int8.cpu.onnx", ".int8.trt.onnx"
PRODUCERS_TO_SKIP = {"Add", "Reshape", "Transpose", "Relu"}  # between a projection and output


class ImageCalibrationReader(CalibrationDataReader):
    """Letterboxed, normalized images of a split, one at a time, with a progress bar."""

    def __init__(self, dataset: PNGDataset, image_ids: list[int], shape: tuple[int, int],
                 input_name: str = "image", progress: bool = True) -> None:
        self.dataset, self.image_ids, self.shape = dataset, image_ids, shape
        self.input_name, self.progress = input_name, progress
        self.rewind()

    def _feeds(self) -> Iterator[dict[str, np.ndarray]]:
        bar = tqdm(self.image_ids, desc="calibrate", unit="img", disable=not self.progress)
        for image_id in bar:
            image = self.dataset.read_image(image_id)
            box = Letterbox(self.shape, *image.shape[:2])
            yield {self.input_name: normalize(box.apply(image))[None]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = self._feeds()

    def __len__(self) -> int:
        return len(self.image_ids)


def calibration_images(dataset: PNGDataset, count: int, seed: int = 0) -> list[int]:
    """`count` image ids of the split, a seeded random choice (all of them if fewer)."""
    ids = sorted(dataset.panoptic.images)
    order = np.random.default_rng(seed).permutation(len(ids))[:count]
    return [ids[i] for i in sorted(order)]


def output_projections(model: onnx.ModelProto) -> list[str]:
    """The Conv/MatMul/Gemm nodes that compute the graph's outputs (the final embedding
    projections), found by walking back from each output through bias adds and reshapes."""
    producer = {out: node for node in model.graph.node for out in node.output}
    found = []
    for output in model.graph.output:
        node = producer.get(output.name)
        while node is not None and node.op_type in PRODUCERS_TO_SKIP:
            node = producer.get(node.input[0])
        if node is not None and node.op_type in ("Conv", "MatMul", "Gemm"):
            found.append(node.name)
    return found


def input_convolutions(model: onnx.ModelProto) -> list[str]:
    """The Conv nodes that read a graph input (the stem's first convolution)."""
    inputs = {i.name for i in model.graph.input}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and inputs & set(n.input)]


ATTENTION_OPS = ("MatMul", "Gemm", "Softmax", "LayerNormalization")

# What may stay float, by name: a function of the (prepared) graph -> {node: reason}.
FLOAT_POLICIES = {
    "projections": lambda model: {
        name: "final embedding projection: its output feeds the affinity and mask dot products"
        for name in output_projections(model)},
    "stem": lambda model: {
        name: "first convolution: 3 input channels, where int8 kernels are slower than float"
        for name in input_convolutions(model)},
    "attention": lambda model: {
        node.name: f"{node.op_type} of the query decoder: 24-row matrices, where Q/DQ pairs "
                   "cost more than int8 saves"
        for node in model.graph.node if node.op_type in ATTENTION_OPS},
    "norms": lambda model: {
        node.name: f"{node.op_type}: normalization statistics are sensitive to int8 inputs"
        for node in model.graph.node if node.op_type in ("LayerNormalization", "Softmax")},
}
# measured on the 192x192 student, 2 threads (export note): the INT8 image graph 2.85 ms with
# only the projections float, 2.45 ms with all three
DEFAULT_FLOAT_POLICIES = ("projections", "stem", "attention")


@dataclass
class QuantizedGraphs:
    cpu: Path
    trt: Path
    calibration_images: int
    float_nodes: dict[str, str] = field(default_factory=dict)  # node -> why it stays float


def quantize_image_graph(fp32: str | Path, reader: ImageCalibrationReader, work: str | Path,
                         keep_float: tuple[str, ...] = DEFAULT_FLOAT_POLICIES
                         ) -> QuantizedGraphs:
    """Writes `<stem>.int8.cpu.onnx` and `<stem>.int8.trt.onnx` beside `fp32`; the nodes
    that the `keep_float` policies name stay float."""
    fp32, work = Path(fp32), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    prepared = work / "prepared.onnx"
    # symbolic shape inference + ORT's graph optimizations, as ORT recommends before quantizing
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=False)
    prepared_model = onnx.load(str(prepared))
    float_nodes = {name: reason for policy in keep_float
                   for name, reason in FLOAT_POLICIES[policy](prepared_model).items()}
    cache = work / "calibration.json"
    cache.unlink(missing_ok=True)
    stem = fp32.name.removesuffix(".onnx")
    out = QuantizedGraphs(fp32.with_name(stem + CPU_SUFFIX), fp32.with_name(stem + TRT_SUFFIX),
                          len(reader), float_nodes)
    common = dict(quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                  calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(float_nodes),
                  calibration_cache_path=cache)
    logging.getLogger().setLevel(logging.WARNING)  # ORT's quantizer logs every node at INFO
    # The first call calibrates (one pass over the images) and caches the ranges; the second
    # reads them back.
    reader.rewind()
    quantize_static(str(prepared), str(out.trt), reader, activation_type=QuantType.QInt8,
                    # TensorRT's parser takes no int32 (quantized) biases: biases stay float
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                   "QuantizeBias": False},
                    **common)
    quantize_static(str(prepared), str(out.cpu), None, activation_type=QuantType.QUInt8,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                    **common)
    for path in (out.cpu, out.trt):
        onnx.checker.check_model(str(path))
    return out
