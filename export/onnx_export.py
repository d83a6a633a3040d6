"""ONNX export of a run: the image path and the text path as two standard-op graphs.

* image graph: `image` [batch, 3, H, W] float32 (letterboxed, normalized RGB) ->
  `pixel_embed` [batch, D, H/stride, W/stride], `mask_embed` [batch, Q, D]; H x W is the
  trained S x S square or a top-left crop of it (`input_shape`, e.g. 144 x 192 for 4:3
  cameras: image_encoder.py);
* text graph: `token_ids` [1, tokens] int32 -> `token_embed` [1, tokens, D] (phrase embeddings
  are the mean over each phrase's token span, done by the runtime, so any number of phrases
  works without re-running the graph).

Network v2 (a phrase decoder) changes two graphs and adds a third, split by what each part
depends on (`groundrt.model.phrase_decoder.SplitPhraseDecoder`):

* image graph: also `image_keys`, `image_values` [batch, layers, heads, N, d]: every decoder
  layer's keys and values of the object tokens (positioned by their masks' centroids) and the
  image memory (N = Q + K), computed once per frame;
* text graph: `token_embed` [1, tokens, C] and `token_kv` [1, tokens, layers, 2, C], every
  layer's keys and values of every token (cached per caption; the runtime gathers each
  phrase's own tokens from them);
* phrase graph (per frame, any number of phrases): `phrase_mean` [batch, phrases, C],
  `own_keys`, `own_values` [batch, phrases, layers, heads, phrase_tokens, d], `own_bias`
  [batch, phrases, phrase_tokens] (0 or -1e4), `image_keys`, `image_values` -> `kernels`
  [batch, phrases, D], `presence` [batch, phrases] (logits), `phrase_embed` [batch, phrases, D].

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
from groundrt.model.network import (
    GroundingNet,
    image_graph,
    image_outputs,
    phrase_graph,
    text_graph,
    text_outputs,
)
from groundrt.model.phrase_decoder import MASKED

OPSET = 18
IMAGE_FILE, TEXT_FILE, PHRASE_FILE = "image.onnx", "text.onnx", "phrase.onnx"


class ImageGraph(nn.Module):
    """The image encoder with its query decoder folded for export (folded_query_decoder.py)."""

    def __init__(self, model: GroundingNet) -> None:
        super().__init__()
        self.backbone = model.image_encoder.backbone
        self.pixel_decoder = model.image_encoder.pixel_decoder
        self.query_decoder = FoldedQueryDecoder(model.image_encoder.query_decoder)
        self.split = model.split_phrase_decoder() if model.phrase_decoder else None

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pixel_embed, memory = self.pixel_decoder(self.backbone(image))
        if self.split is None:
            return pixel_embed, self.query_decoder(memory)
        states, tokens = self.query_decoder.states(memory)
        return tuple(image_outputs(self.split, pixel_embed, self.query_decoder.mask_mlp(states),
                                   states, tokens).values())


class TextGraph(nn.Module):
    def __init__(self, model: GroundingNet) -> None:
        super().__init__()
        self.encoder = model.text_encoder
        self.split = model.split_phrase_decoder() if model.phrase_decoder else None

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        # int32 ids: TensorRT engines take int32 more readily than int64
        token_embed = self.encoder(token_ids.long())
        if self.split is None:
            return token_embed
        return tuple(text_outputs(self.split, token_embed).values())


class PhraseGraph(nn.Module):
    def __init__(self, model: GroundingNet) -> None:
        super().__init__()
        self.split = model.split_phrase_decoder()

    def forward(self, phrase_mean: torch.Tensor, own_keys: torch.Tensor,
                own_values: torch.Tensor, own_bias: torch.Tensor, image_keys: torch.Tensor,
                image_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.split(phrase_mean, own_keys, own_values, own_bias, image_keys, image_values)


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
        layers, heads = cfg.phrase_layers, cfg.phrase_heads
        m = cfg.memory_stride
        n = q + (height // m) * (width // m)  # object tokens + memory tokens
        image_kv = [{"name": name, "dtype": "float32",
                     "shape": ["batch", layers, heads, n, c // heads]}
                    for name in ("image_keys", "image_values")]
        image_outputs += image_kv
        io["text"]["outputs"].append({"name": "token_kv", "dtype": "float32",
                                      "shape": [1, "tokens", layers, 2, c]})
        own = ["batch", "phrases", layers, heads, "phrase_tokens", c // heads]
        io["phrase"] = {
            "inputs": [{"name": "phrase_mean", "dtype": "float32",
                        "shape": ["batch", "phrases", c]},
                       {"name": "own_keys", "dtype": "float32", "shape": own},
                       {"name": "own_values", "dtype": "float32", "shape": own},
                       {"name": "own_bias", "dtype": "float32",
                        "shape": ["batch", "phrases", "phrase_tokens"]},
                       *image_kv],
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
    """Inputs of the phrase graph: the image graph's keys and values, random phrase features
    and own keys / values, random padding (every phrase keeps its first token)."""
    cfg = model.cfg
    c, layers, heads = cfg.query_dim, cfg.phrase_layers, cfg.phrase_heads
    own = (batch, phrases, layers, heads, phrase_tokens, c // heads)
    valid = rng.random((batch, phrases, phrase_tokens)) < 0.7
    valid[..., 0] = True
    return {"phrase_mean": rng.standard_normal((batch, phrases, c), np.float32),
            "own_keys": rng.standard_normal(own, np.float32),
            "own_values": rng.standard_normal(own, np.float32),
            "own_bias": np.where(valid, 0.0, MASKED).astype(np.float32),
            "image_keys": image_outputs["image_keys"][:batch],
            "image_values": image_outputs["image_values"][:batch]}


def compare_with_torch(model: GroundingNet, paths: dict[str, Path], trials: int = 20,
                       seed: int = 0,
                       input_shape: tuple[int, int] | None = None) -> list[ExportCheck]:
    """Max abs error between ONNX Runtime and PyTorch over `trials` random inputs per graph
    (images from N(0, 1) of the graph's input shape, token ids of random lengths up to the
    model's limit; v2: random phrase and token counts on the image graph's outputs). PyTorch
    runs the trained modules: the image encoder's own query decoder, not the folded one."""
    cfg = model.cfg
    height, width = image_input_shape(model, input_shape)
    rng = np.random.default_rng(seed)
    sessions = {name: _session(path) for name, path in paths.items()}
    errors = dict.fromkeys(paths, 0.0)
    split = model.split_phrase_decoder() if cfg.phrase_queries else None

    def error(got: list[np.ndarray], want) -> float:
        return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want, strict=True))

    with torch.no_grad():
        for _ in range(trials):
            image = rng.standard_normal((1, 3, height, width), np.float32)
            got = sessions["image"].run(None, {"image": image})
            length = int(rng.integers(1, cfg.max_tokens + 1))
            ids = rng.integers(0, cfg.vocab_size, (1, length)).astype(np.int32)
            got_text = sessions["text"].run(None, {"token_ids": ids})
            if split is not None:
                want = image_graph(model, split, torch.from_numpy(image))
                errors["image"] = max(errors["image"], error(got, want.values()))
                want_text = text_graph(model, split, torch.from_numpy(ids).long())
                errors["text"] = max(errors["text"], error(got_text, want_text.values()))
                inputs = phrase_example(model, rng, 1, int(rng.integers(1, 9)),
                                        int(rng.integers(1, 7)),
                                        dict(zip(want, got, strict=True)))
                want_phrase = phrase_graph(split, *(torch.from_numpy(v) for v in inputs.values()))
                errors["phrase"] = max(errors["phrase"], error(
                    sessions["phrase"].run(None, inputs), want_phrase.values()))
            else:
                errors["image"] = max(errors["image"],
                                      error(got, model.image_encoder(torch.from_numpy(image))))
                want_text = model.text_encoder(torch.from_numpy(ids).long())
                errors["text"] = max(errors["text"], error(got_text, [want_text]))
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
    # batch 2 (and 7 phrases of 5 tokens): torch.export specializes axes of size 1
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
            outputs = {k: v.numpy() for k, v in image_graph(
                model, model.split_phrase_decoder(), image).items()}
            example = phrase_example(model, np.random.default_rng(0), 2, 7, 5, outputs)
            _export(PhraseGraph(model).eval(), tuple(torch.from_numpy(v)
                                                     for v in example.values()),
                    spec["phrase"], raw["phrase"], {})
        for name, path in paths.items():
            onnx.save(simplify(onnx.load(str(raw[name]))), str(path))
    return paths
