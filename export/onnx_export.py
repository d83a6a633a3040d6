"""ONNX export of a run: the image path and the text path as two standard-op graphs.

* image graph: `image` [batch, 3, H, W] float32 (letterboxed, normalized RGB) ->
  `pixel_embed` [batch, D, H/stride, W/stride], `mask_embed` [batch, Q, D]; H x W is the
  trained S x S square or a top-left crop of it (`input_shape`, e.g. 144 x 192 for 4:3
  cameras: image_encoder.py);
* text graph: `token_ids` [1, tokens] int32 -> `token_embed` [1, tokens, D] (phrase embeddings
  are the mean over each phrase's token span, done by the runtime, so any number of phrases
  works without re-running the graph).

Network v2 (a phrase decoder) changes two graphs and adds a third:

* image graph: also `objects` [batch, Q, C] (the object tokens, positioned by their masks'
  centroids) and `memory` [batch, K, C] (the positioned memory tokens);
* text graph: `token_embed` [1, tokens, C], the decoder's width;
* phrase graph (per frame, any number of phrases): `objects`, `memory`, `phrase_tokens`
  [batch, phrases, phrase_tokens, C] (each phrase's own tokens, gathered by the runtime from the
  cached token features) and `phrase_token_valid` [batch, phrases, phrase_tokens] bool ->
  `kernels` [batch, phrases, D], `presence` [batch, phrases] (logits), `phrase_embed`
  [batch, phrases, D].

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
from groundrt.model.network import GroundingNet, image_outputs, phrase_outputs

OPSET = 18
IMAGE_FILE, TEXT_FILE, PHRASE_FILE = "image.onnx", "text.onnx", "phrase.onnx"


class ImageGraph(nn.Module):
    """The image encoder with its query decoder folded for export (folded_query_decoder.py)."""

    def __init__(self, model: GroundingNet) -> None:
        super().__init__()
        self.backbone = model.image_encoder.backbone
        self.pixel_decoder = model.image_encoder.pixel_decoder
        self.query_decoder = FoldedQueryDecoder(model.image_encoder.query_decoder)
        self.phrase_decoder = model.phrase_decoder  # v2: positions the object tokens

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pixel_embed, memory = self.pixel_decoder(self.backbone(image))
        if self.phrase_decoder is None:
            return pixel_embed, self.query_decoder(memory)
        states, tokens = self.query_decoder.states(memory)
        return tuple(image_outputs(self.phrase_decoder, pixel_embed,
                                   self.query_decoder.mask_mlp(states), states, tokens).values())


class PhraseGraph(nn.Module):
    def __init__(self, model: GroundingNet) -> None:
        super().__init__()
        self.decoder = model.phrase_decoder

    def forward(self, objects: torch.Tensor, memory: torch.Tensor, phrase_tokens: torch.Tensor,
                phrase_token_valid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(phrase_outputs(self.decoder, objects, memory, phrase_tokens,
                                    phrase_token_valid).values())


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
    d, c, q = cfg.embed_dim, cfg.query_dim, cfg.num_queries
    image_outputs = [{"name": "pixel_embed", "dtype": "float32",
                      "shape": ["batch", d, height // stride, width // stride]},
                     {"name": "mask_embed", "dtype": "float32", "shape": ["batch", q, d]}]
    io = {
        "image": {"inputs": [{"name": "image", "dtype": "float32",
                              "shape": ["batch", 3, height, width]}],
                  "outputs": image_outputs},
        "text": {
            "inputs": [{"name": "token_ids", "dtype": "int32", "shape": [1, "tokens"]}],
            "outputs": [{"name": "token_embed", "dtype": "float32",
                         "shape": [1, "tokens", cfg.text_out_dim]}]},
    }
    if cfg.phrase_queries:
        m = cfg.memory_stride
        memory = -(-height // m) * -(-width // m)
        objects = {"name": "objects", "dtype": "float32", "shape": ["batch", q, c]}
        memory_tokens = {"name": "memory", "dtype": "float32", "shape": ["batch", memory, c]}
        image_outputs += [objects, memory_tokens]
        io["phrase"] = {
            "inputs": [objects, memory_tokens,
                       {"name": "phrase_tokens", "dtype": "float32",
                        "shape": ["batch", "phrases", "phrase_tokens", c]},
                       {"name": "phrase_token_valid", "dtype": "bool",
                        "shape": ["batch", "phrases", "phrase_tokens"]}],
            "outputs": [{"name": "kernels", "dtype": "float32", "shape": ["batch", "phrases", d]},
                        {"name": "presence", "dtype": "float32", "shape": ["batch", "phrases"]},
                        {"name": "phrase_embed", "dtype": "float32",
                         "shape": ["batch", "phrases", d]}]}
    return io


def _export(module: nn.Module, examples: tuple[torch.Tensor, ...], spec: dict, path: Path,
            max_sizes: dict[str, int]) -> None:
    """Exports `module` to `path`; the str axes of the spec's inputs are dynamic (one
    torch.export.Dim per axis name, shared by every input that has it)."""
    dims = {}
    for tensor in spec["inputs"]:
        for axis in tensor["shape"]:
            if isinstance(axis, str) and axis not in dims:
                dims[axis] = torch.export.Dim(
                    axis, **({"max": max_sizes[axis]} if axis in max_sizes else {}))
    args = list(inspect.signature(module.forward).parameters)
    dynamic = {arg: {i: dims[axis] for i, axis in enumerate(tensor["shape"])
                     if isinstance(axis, str)}
               for arg, tensor in zip(args, spec["inputs"], strict=True)}
    torch.onnx.export(module, examples, str(path), input_names=[t["name"] for t in spec["inputs"]],
                      output_names=[t["name"] for t in spec["outputs"]],
                      dynamic_shapes=dynamic, opset_version=OPSET, dynamo=True, verbose=False)


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


def phrase_example(model: GroundingNet, rng: np.random.Generator, batch: int, phrases: int,
                   phrase_tokens: int, image_outputs: dict[str, np.ndarray]
                   ) -> dict[str, np.ndarray]:
    """Inputs of the phrase graph: the image graph's objects and memory, random phrase tokens
    and validity (every phrase keeps its first token)."""
    c = model.cfg.query_dim
    valid = rng.random((batch, phrases, phrase_tokens)) < 0.7
    valid[..., 0] = True
    return {"objects": image_outputs["objects"][:batch], "memory": image_outputs["memory"][:batch],
            "phrase_tokens": rng.standard_normal((batch, phrases, phrase_tokens, c), np.float32),
            "phrase_token_valid": valid}


def compare_with_torch(model: GroundingNet, paths: dict[str, Path], trials: int = 20,
                       seed: int = 0,
                       input_shape: tuple[int, int] | None = None) -> list[ExportCheck]:
    """Max abs error between ONNX Runtime and PyTorch over `trials` random inputs per graph
    (images from N(0, 1) of the graph's input shape, token ids of random lengths up to the
    model's limit; v2: random phrase counts and token counts on the image graph's outputs)."""
    cfg = model.cfg
    height, width = image_input_shape(model, input_shape)
    rng = np.random.default_rng(seed)
    sessions = {name: _session(path) for name, path in paths.items()}
    errors = dict.fromkeys(paths, 0.0)

    def error(got: list[np.ndarray], want) -> float:
        return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want, strict=True))

    with torch.no_grad():
        for _ in range(trials):
            image = rng.standard_normal((1, 3, height, width), np.float32)
            got = sessions["image"].run(None, {"image": image})
            if cfg.phrase_queries:
                want = model.image_graph(torch.from_numpy(image))
                errors["image"] = max(errors["image"], error(got, want.values()))
                inputs = phrase_example(model, rng, 1, int(rng.integers(1, 9)),
                                        int(rng.integers(1, 7)), dict(zip(want, got,
                                                                          strict=True)))
                want_phrase = model.phrase_graph(*(torch.from_numpy(v) for v in inputs.values()))
                errors["phrase"] = max(errors["phrase"], error(
                    sessions["phrase"].run(None, inputs), want_phrase.values()))
            else:
                errors["image"] = max(errors["image"],
                                      error(got, model.image_encoder(torch.from_numpy(image))))
            length = int(rng.integers(1, cfg.max_tokens + 1))
            ids = rng.integers(0, cfg.vocab_size, (1, length)).astype(np.int32)
            want_text = model.text_encoder(torch.from_numpy(ids).long())
            errors["text"] = max(errors["text"], error(
                sessions["text"].run(None, {"token_ids": ids}), [want_text]))
    return [ExportCheck(name, trials, value) for name, value in errors.items()]


def export_onnx(model: GroundingNet, out: str | Path,
                input_shape: tuple[int, int] | None = None) -> dict[str, Path]:
    """Writes `image.onnx` (input [batch, 3, *input_shape], default the trained square),
    `text.onnx` and, for network v2, `phrase.onnx` into `out`; returns their paths by graph
    name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    cfg = model.cfg
    spec = graph_io(model, input_shape)
    # batch 2 (and 3 phrases of 2 tokens): torch.export specializes axes of size 1
    image = torch.zeros(2, 3, *image_input_shape(model, input_shape))
    tokens = torch.full((1, 8), 4, dtype=torch.int32)
    paths = {"image": out / IMAGE_FILE, "text": out / TEXT_FILE}
    if cfg.phrase_queries:
        paths["phrase"] = out / PHRASE_FILE
    # the exporter may write weights as external data beside its file: export into a scratch
    # folder, then save each simplified graph as one self-contained file
    with tempfile.TemporaryDirectory() as scratch, torch.no_grad():
        raw = {name: Path(scratch) / path.name for name, path in paths.items()}
        _export(ImageGraph(model).eval(), (image,), spec["image"], raw["image"], {})
        _export(TextGraph(model).eval(), (tokens,), spec["text"], raw["text"],
                {"tokens": cfg.max_tokens})
        if cfg.phrase_queries:
            outputs = {k: v.numpy() for k, v in model.image_graph(image).items()}
            example = phrase_example(model, np.random.default_rng(0), 2, 3, 2, outputs)
            _export(PhraseGraph(model).eval(), tuple(torch.from_numpy(v)
                                                     for v in example.values()),
                    spec["phrase"], raw["phrase"], {})
        for name, path in paths.items():
            onnx.save(simplify(onnx.load(str(raw[name]))), str(path))
    return paths
