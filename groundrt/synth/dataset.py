"""`groundrt data synth`: renders procedural scenes in parallel and writes them as a PNG split,
with the absent phrases of every scene in its side file (`groundrt.data.absent`).

`renderer` picks who makes the pixels and words: "training" (`groundrt.synth.scene.TRAINING`,
the training data's) or "heldout" (`groundrt.synth.heldout`, kept apart to measure how a model
generalizes to scenes drawn and worded otherwise).
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from groundrt.data.absent import AbsentPhrase, write_absent
from groundrt.data.layout import SplitLayout
from groundrt.data.narratives import Narrative, Utterance
from groundrt.data.writer import SplitWriter, annotation_record, image_record, write_image_files
from groundrt.synth.sample import SynthSample
from groundrt.vocabulary import load_vocabulary

if TYPE_CHECKING:
    from groundrt.synth.scene import Renderer

# Image ids per split never collide, so files of different splits can be told apart.
SPLIT_ID_BASE = {"train": 1_000_000, "val": 2_000_000, "test": 3_000_000}
RENDERERS = ("training", "heldout")


def image_id_for(split: str, index: int) -> int:
    return SPLIT_ID_BASE.get(split.removesuffix("2017"), 9_000_000) + index


def narrative_of(image_id: int, sample: SynthSample) -> Narrative:
    return Narrative(
        image_id=str(image_id), annotator_id=0, caption=sample.caption,
        utterances=tuple(
            Utterance(u.utterance, tuple(u.segment_ids), u.plural, u.noun, tuple(u.phenomena))
            for u in sample.utterances),
    )


def get_renderer(name: str) -> Renderer:
    """The `groundrt.synth.scene.Renderer` called `name` (one of RENDERERS)."""
    if name == "training":
        from groundrt.synth.scene import TRAINING

        return TRAINING
    if name == "heldout":
        from groundrt.synth.heldout import HELDOUT

        return HELDOUT
    raise ValueError(f"unknown renderer {name!r}; expected one of {RENDERERS}")


def _render_and_write(job: tuple) -> tuple[dict, dict, Narrative, list[AbsentPhrase]]:
    import numpy as np

    from groundrt.synth.absent import ABSENT_STREAM, absent_phrases
    from groundrt.synth.scene import render_scene  # imported in the worker

    layout, split, seed, index, size, renderer_name = job
    renderer = get_renderer(renderer_name)
    image_id = image_id_for(split, index)
    sample, scene = render_scene(seed, index, size, renderer)
    absent = absent_phrases(np.random.default_rng([seed, index, ABSENT_STREAM]),
                            load_vocabulary(), scene, str(image_id), renderer.wording)
    write_image_files(layout, image_id, sample.image_bgr, sample.jpeg_quality,
                      sample.panoptic_ids)
    height, width = sample.panoptic_ids.shape
    return (image_record(image_id, height, width),
            annotation_record(image_id, [s.to_json() for s in sample.segments_info]),
            narrative_of(image_id, sample), absent)


def synthesize(out: str | Path, split: str, count: int, seed: int,
               size: tuple[int, int] | None = None, workers: int | None = None,
               progress: bool = True, renderer: str = "training") -> SplitLayout:
    """Render `count` scenes of `split` deterministically from `seed` into `out`.

    Scene i depends only on (seed, i) (and the renderer), so the output is the same for any
    number of workers.
    """
    get_renderer(renderer)  # an unknown name fails before anything is written
    if count < 1:
        raise ValueError(f"--count must be at least 1, got {count}")
    if size is not None and (size[0] < 32 or size[1] < 32):
        raise ValueError(f"--size must be at least 32x32, got {size[0]}x{size[1]}")
    writer = SplitWriter(out, split, load_vocabulary().coco_categories())
    workers = workers or min(os.cpu_count() or 1, 8)
    jobs = [(writer.layout, split, seed, i, size, renderer) for i in range(count)]
    bar = tqdm(total=count, desc=f"synth {writer.layout.name}", unit="img", disable=not progress)
    pool = get_context("spawn").Pool(workers) if workers > 1 else None
    with pool or nullcontext():
        results = pool.imap(_render_and_write, jobs, chunksize=8) if pool else map(
            _render_and_write, jobs)
        absent: list[AbsentPhrase] = []
        for image, annotation, narrative, scene_absent in results:
            writer.add(image, annotation, [narrative])
            absent.extend(scene_absent)
            bar.update()
    bar.close()
    writer.close()
    write_absent(writer.layout.root, split, absent)
    info = {"generator": "groundrt.synth", "renderer": renderer, "split": writer.layout.name,
            "count": count, "seed": seed, "size": list(size) if size else None}
    (writer.layout.root / f"synth_{writer.layout.name}.json").write_text(json.dumps(info))
    return writer.layout
