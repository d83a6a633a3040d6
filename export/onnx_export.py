"""ONNX export of a run: the image path and the text path as two standard-op graphs.

* image graph: `image` [batch, 3, H, W] float32 (letterboxed, normalized RGB) ->
  `pixel_embed` [batch, D, H/stride, W/stride], `mask_embed` [batch, Q, D]; H x W is the
  trained S x S square or a top-left crop of it (`input_shape`, e.g. 144 x 192 for 4:3
  cameras: image_encoder.py);
* text graph: `token_ids` [1, tokens] int32 -> `token_embed` [1, tokens, D] (phrase embeddings
  are the mean over each phrase's token span, done by the runtime, so any number of phrases
  works without re-running the graph).

The image graph's query decoder is first folded into fewer ops (folded_query_decoder.py). Each
graph is exported with the torch.export based exporter (opset 18: the TorchScript exporter
bakes the example's token count into the attention reshapes), simplified
with onnxslim (constant folding, dead-code and shape-op elimination), checked with
`onnx.checker` and compared against PyTorch on random inputs.
"""

from __future__ import annotations

import inspect
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from groundrt.export.folded_query_decoder import FoldedQueryDecoder
from groundrt.model.image_encoder import check_input_shape
from groundrt.model.network import GroundingNet

OPSET = 18
IMAGE_FILE, TEXT_FILE = "image.onnx", "text.onnx"


class ImageGraph(nn.Module):
    """The image encoder with its query decoder folded for export (folded_query_decoder.py)."""

    def __init__(self, model: GroundingNet) -> None:
        super().__init__()
        self.backbone = model.image_encoder.backbone
        self.pixel_decoder = model.image_encoder.pixel_decoder
        self.query_decoder = FoldedQueryDecoder(model.image_encoder.query_decoder)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixel_embed, memory = self.pixel_decoder(self.backbone(image))
        return pixel_embed, self.query_decoder(memory)


class TextGraph(nn.Module):
    def __init__(self, model: GroundingNet) -> None:
        super().__init__()
        self.encoder = model.text_encoder

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        # int32 ids: TensorRT engines take int32 more readily than int64
        return self.encoder(token_ids.long())


def image_input_shape(model: GroundingNet, input_shape: tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) of the image graph: the trained square, or a crop of it (checked)."""
    shape = tuple(input_shape or model.cfg.input_shape)
    check_input_shape(shape, model.cfg.input_size)
    return shape


def graph_io(model: GroundingNet, input_shape: tuple[int, int] | None = None) -> dict:
    """The engines' inputs and outputs as the manifest records them (str = dynamic axis)."""
    cfg = model.cfg
    height, width = image_input_shape(model, input_shape)
    stride = cfg.pixel_stride
    d = cfg.embed_dim
    return {
        "image": {
            "inputs": [{"name": "image", "dtype": "float32",
                        "shape": ["batch", 3, height, width]}],
            "outputs": [{"name": "pixel_embed", "dtype": "float32",
                         "shape": ["batch", d, height // stride, width // stride]},
                        {"name": "mask_embed", "dtype": "float32",
                         "shape": ["batch", cfg.num_queries, d]}]},
        "text": {
            "inputs": [{"name": "token_ids", "dtype": "int32", "shape": [1, "tokens"]}],
            "outputs": [{"name": "token_embed", "dtype": "float32",
                         "shape": [1, "tokens", d]}]},
    }


def _export(module: nn.Module, example: torch.Tensor, spec: dict, path: Path,
            max_sizes: dict[str, int]) -> None:
    """Exports `module` to `path`; the str axes of the spec's input are dynamic."""
    (tensor,) = spec["inputs"]
    axes = {i: torch.export.Dim(axis, **({"max": max_sizes[axis]} if axis in max_sizes else {}))
            for i, axis in enumerate(tensor["shape"]) if isinstance(axis, str)}
    arg = inspect.signature(module.forward).parameters
    torch.onnx.export(module, (example,), str(path), input_names=[tensor["name"]],
                      output_names=[t["name"] for t in spec["outputs"]],
                      dynamic_shapes={next(iter(arg)): axes}, opset_version=OPSET,
                      dynamo=True, verbose=False)


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    slim = onnxslim.slim(model)
    onnx.checker.check_model(slim, full_check=True)
    return slim


@dataclass
class ExportCheck:
    graph: str
    trials: int
    max_abs_error: float


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_with_torch(model: GroundingNet, image_path: Path, text_path: Path,
                       trials: int = 20, seed: int = 0,
                       input_shape: tuple[int, int] | None = None) -> list[ExportCheck]:
    """Max abs error between ONNX Runtime and PyTorch over `trials` random inputs per graph
    (images from N(0, 1) of the graph's input shape, token ids of random lengths up to the
    model's limit)."""
    cfg = model.cfg
    height, width = image_input_shape(model, input_shape)
    rng = np.random.default_rng(seed)
    image_session, text_session = _session(image_path), _session(text_path)
    image_error = text_error = 0.0
    with torch.no_grad():
        for _ in range(trials):
            image = rng.standard_normal((1, 3, height, width), np.float32)
            want = model.image_encoder(torch.from_numpy(image))
            got = image_session.run(None, {"image": image})
            image_error = max(image_error, *(float(np.abs(g - w.numpy()).max())
                                             for g, w in zip(got, want, strict=True)))
            length = int(rng.integers(1, cfg.max_tokens + 1))
            ids = rng.integers(0, cfg.vocab_size, (1, length)).astype(np.int32)
            want_text = model.text_encoder(torch.from_numpy(ids).long()).numpy()
            got_text = text_session.run(None, {"token_ids": ids})[0]
            text_error = max(text_error, float(np.abs(got_text - want_text).max()))
    return [ExportCheck("image", trials, image_error), ExportCheck("text", trials, text_error)]


def export_onnx(model: GroundingNet, out: str | Path,
                input_shape: tuple[int, int] | None = None) -> dict[str, Path]:
    """Writes `image.onnx` (input [batch, 3, *input_shape], default the trained square) and
    `text.onnx` into `out`; returns their paths by graph name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    cfg = model.cfg
    spec = graph_io(model, input_shape)
    # batch 2: torch.export specializes axes of size 1, which would fix the batch at 1
    image = torch.zeros(2, 3, *image_input_shape(model, input_shape))
    tokens = torch.full((1, 8), 4, dtype=torch.int32)
    paths = {"image": out / IMAGE_FILE, "text": out / TEXT_FILE}
    # the exporter may write weights as external data beside its file: export into a scratch
    # folder, then save each simplified graph as one self-contained file
    with tempfile.TemporaryDirectory() as scratch, torch.no_grad():
        raw = {name: Path(scratch) / path.name for name, path in paths.items()}
        _export(ImageGraph(model).eval(), image, spec["image"], raw["image"], {})
        _export(TextGraph(model).eval(), tokens, spec["text"], raw["text"],
                {"tokens": cfg.max_tokens})
        for name, path in paths.items():
            onnx.save(simplify(onnx.load(str(raw[name]))), str(path))
    return paths
