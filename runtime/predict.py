"""Predictions of a model package on a PNG split with ONNX Runtime (no PyTorch needed).

`groundrt predict --model PKG` writes them in the prediction format; the export stage scores
each precision with `evaluate_graphs`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from groundrt.data import PNGDataset
from groundrt.examples import Example, build_examples
from groundrt.metric.evaluate import score_masks
from groundrt.metric.predictions import write_mask_predictions
from groundrt.model.config import ModelConfig
from groundrt.package import input_shape
from groundrt.preprocess import Letterbox, normalize
from groundrt.runtime import reference
from groundrt.runtime.onnx_graphs import OnnxGraphs
from groundrt.runtime.postprocess import Postprocessor
from groundrt.text.tokenizer import Tokenizer


def onnx_predict_masks(graphs: OnnxGraphs, examples: list[Example], batch_size: int = 8,
                       postprocess: Postprocessor | None = None,
                       ) -> Iterator[tuple[Example, np.ndarray]]:
    """For each example, its phrase masks [P, H, W] bool at the original size, decoded by the
    runtime's post-processing (the native kernels when built, as `Grounder` does)."""
    postprocess = postprocess or Postprocessor()
    g = graphs.manifest["grounding"]
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        pixel_embed, mask_embed = graphs.image(np.stack([normalize(e.image) for e in chunk]))
        for i, example in enumerate(chunk):
            phrases = reference.pool_phrases(graphs.text(example.tokens), example.spans)
            _, selected = postprocess.affinity(phrases, mask_embed[i], g["logit_scale"],
                                               g["affinity_bias"], example.plural,
                                               g["plural_threshold"])
            box = Letterbox(example.image.shape[:2], *example.original_size)
            masks, _ = postprocess.decode_masks(pixel_embed[i], mask_embed[i], selected,
                                                *box.crop_region(g["pixel_stride"]),
                                                box.height, box.width)
            yield example, masks.astype(bool)


def package_examples(graphs: OnnxGraphs, dataset: PNGDataset,
                     progress: bool = False) -> list[Example]:
    """The split's narratives prepared for the package (its input shape and tokenizer)."""
    manifest = graphs.manifest
    cfg = ModelConfig.from_json(manifest["model"]["config"])
    tokenizer = Tokenizer(graphs.folder / manifest["tokenizer"]["file"])
    return build_examples(dataset, tokenizer, cfg, progress,
                          input_shape=input_shape(manifest))


def evaluate_graphs(graphs: OnnxGraphs, dataset: PNGDataset, examples: list[Example]) -> dict:
    """AR per group and acc@0.5 of the graphs on `examples` of `dataset`."""
    return score_masks(dataset, onnx_predict_masks(graphs, examples))


def predict_split_with_package(package: str | Path, data: str | Path, split: str,
                               out: str | Path, precision: str | None = None,
                               progress: bool = True) -> Path:
    """`groundrt predict --model PKG`: the package's masks for every grounded phrase."""
    graphs = OnnxGraphs(package, precision)
    dataset = PNGDataset(data, split)
    examples = package_examples(graphs, dataset, progress)
    return write_mask_predictions(dataset, onnx_predict_masks(graphs, examples), out,
                                  len(examples), progress)
