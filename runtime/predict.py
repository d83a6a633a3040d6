"""Predictions on a PNG split through `Grounder` (the one pipeline every caller uses).

`groundrt predict --model PKG` (or a run folder with `--backend torch`) grounds every narrative
by the char spans of its annotated phrases and writes the prediction format; for network v2 it
adds each phrase's `found`, each plural's instance masks, and the answers to the split's absent
phrases (`groundrt.data.absent`), each image's absent phrases grounded together with its
grounded phrases as one explicit phrase list. The export stage scores each precision of a
package with `score_split`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from groundrt.data import PNGDataset
from groundrt.data.absent import read_absent
from groundrt.metric.evaluate import instance_ious, score_masks
from groundrt.metric.instances import instance_ar
from groundrt.metric.predictions import PhraseKey, PredictionWriter
from groundrt.metric.presence import CURVE_THRESHOLDS, presence_accuracy, presence_curve
from groundrt.runtime.grounder import Grounder


@dataclass
class NarrativePrediction:
    """One narrative's grounded phrases, as `Grounder` answered them."""

    image_id: int
    keys: list[PhraseKey]
    texts: list[str]
    masks: list[np.ndarray]  # [H, W] bool per phrase
    found: list[bool]
    presence: list[float | None]  # network v2: each phrase's presence probability
    instances: list[list[np.ndarray]]  # per phrase; filled for plurals (2+ segments)
    scores: list[float]  # each mask's mean probability (0 when empty)


def predict_narratives(grounder: Grounder, dataset: PNGDataset, limit: int | None = None,
                       progress: bool = False, images: set[int] | None = None
                       ) -> Iterator[NarrativePrediction]:
    """Every narrative (the first `limit`; of `images` only, if given) with grounded phrases,
    grounded by their spans."""
    narratives = [(index, phrases) for index, phrases in dataset.phrases_by_narrative().items()
                  if images is None or phrases[0].image_id in images][:limit]
    for index, phrases in tqdm(narratives, desc="predict", unit="narrative",
                               disable=not progress):
        image_id = phrases[0].image_id
        result = grounder.ground(dataset.image_path(image_id), dataset.narratives[index].caption,
                                 spans=[p.char_span for p in phrases],
                                 plural=[p.plural_flag for p in phrases])
        yield NarrativePrediction(
            image_id, [p.key for p in phrases], [p.text for p in phrases],
            [r.mask for r in result.phrases], [r.found for r in result.phrases],
            [r.presence for r in result.phrases],
            [r.instances if p.is_plural else [] for p, r in zip(phrases, result.phrases,
                                                                strict=True)],
            [r.score for r in result.phrases])


@dataclass
class ProbeAnswer:
    """One phrase of an image's probe list (its grounded phrases and its absent ones, given
    together as explicit phrases) and the Grounder's answer."""

    image_id: str
    text: str
    kind: str  # "present" (a grounded phrase), or the absent phrase's: thing, stuff, unknown
    found: bool
    presence: float | None
    score: float  # the mask's mean probability (0 when empty)
    area_share: float  # the mask's share of the image


def probe_absent(grounder: Grounder, dataset: PNGDataset, limit: int | None = None,
                 images: set[int] | None = None) -> Iterator[ProbeAnswer]:
    """Every phrase of the probe lists of the split's images with absent phrases (the first
    `limit` of them; of `images` only, if given): the present ones too, so that target
    accuracy is also measured where the absent phrases are (a model answering "not found" to
    every explicit phrase would otherwise score well)."""
    first_narrative: dict[int, list[str]] = {}
    for phrases in dataset.phrases_by_narrative().values():
        first_narrative.setdefault(phrases[0].image_id, [p.text for p in phrases])
    chosen = [(image_id, absent) for image_id, absent in read_absent(dataset.layout).items()
              if images is None or int(image_id) in images][:limit]
    for image_id, absent in chosen:
        grounded = first_narrative.get(int(image_id), [])
        kinds = ["present"] * len(grounded) + [a.kind for a in absent]
        texts = grounded + [a.utterance for a in absent]
        result = grounder.ground(dataset.image_path(int(image_id)), phrases=texts)
        pixels = result.image_size[0] * result.image_size[1]
        for text, kind, answer in zip(texts, kinds, result.phrases, strict=True):
            yield ProbeAnswer(image_id, text, kind, answer.found, answer.presence, answer.score,
                              answer.area / pixels)


def found_share(found: Sequence[bool] | np.ndarray) -> float | None:
    """The share of answers "found" (None for no answers)."""
    return float(np.mean(found)) if len(found) else None


@dataclass
class PresenceAnswers:
    """Every phrase the presence gate answered on a split, one entry per phrase in each array:
    the grounded phrases asked in their captions, then every phrase of the probe lists."""

    found: np.ndarray  # bool
    presence: np.ndarray  # float64: the presence probability
    score: np.ndarray  # float64: the mask's mean probability (0 when empty)
    area_share: np.ndarray  # float64: the mask's share of the image
    kind: np.ndarray  # str: "present", or the absent phrase's kind (thing, stuff, unknown)
    in_caption: np.ndarray  # bool: asked in its caption (else in a probe list)

    @property
    def present(self) -> np.ndarray:
        return self.kind == "present"


def presence_answers(predictions: list[NarrativePrediction],
                     probes: list[ProbeAnswer]) -> PresenceAnswers:
    """The network v2 answers of `predict_narratives` and `probe_absent`, as arrays."""
    asked = [(f, h, s, float(m.mean())) for p in predictions
             for f, h, s, m in zip(p.found, p.presence, p.scores, p.masks, strict=True)]
    rows = np.array(asked + [(a.found, a.presence, a.score, a.area_share) for a in probes],
                    dtype=np.float64).reshape(-1, 4)
    return PresenceAnswers(found=rows[:, 0].astype(bool), presence=rows[:, 1],
                           score=rows[:, 2], area_share=rows[:, 3],
                           kind=np.array(["present"] * len(asked) + [a.kind for a in probes]),
                           in_caption=np.arange(len(rows)) < len(asked))


def score_split(grounder: Grounder, dataset: PNGDataset, limit: int | None = None,
                progress: bool = False, images: set[int] | None = None,
                thresholds: tuple[float, ...] = CURVE_THRESHOLDS) -> dict:
    """AR per group, acc@0.5 and, for network v2, target / no-target accuracy, instance AR and
    the two accuracies at each of `thresholds` of the presence score on `dataset` (the first
    `limit` narratives and images; of `images` only, if given). Target accuracy counts the
    present phrases of both ways of asking: in their captions and in the probe lists
    (`target_acc:caption`, `target_acc:list` apart)."""
    predictions = list(predict_narratives(grounder, dataset, limit, progress, images))
    report = score_masks(dataset, ((p, p.masks) for p in predictions))
    report["narratives"] = len(predictions)
    if grounder.phrase_queries:
        answers = presence_answers(predictions,
                                   list(probe_absent(grounder, dataset, limit, images)))
        present = answers.present
        accuracy = presence_accuracy(answers.found, present)
        report.update(target_acc=accuracy["target_acc"], no_target_acc=accuracy["no_target_acc"])
        report["target_acc:caption"] = found_share(answers.found[answers.in_caption])
        report["target_acc:list"] = found_share(answers.found[~answers.in_caption & present])
        report["presence_curve"] = presence_curve(answers.presence, present, thresholds)
        for kind in sorted(set(answers.kind[~present])):  # thing, stuff, unknown
            report[f"no_target_acc:{kind}"] = 1.0 - found_share(
                answers.found[answers.kind == kind])
        by_key = {p.key: p for p in dataset.phrases}
        segment_ious = [instance_ious(dataset, by_key[key], instances)
                        for p in predictions for key, instances in zip(p.keys, p.instances,
                                                                       strict=True)
                        if by_key[key].is_plural]
        report["instance_ar"] = instance_ar(segment_ious)
    return report


def predict_split(grounder: Grounder, data: str | Path, split: str, out: str | Path,
                  progress: bool = True) -> Path:
    """`groundrt predict`: the prediction file of every grounded phrase of a split."""
    dataset = PNGDataset(data, split)
    writer = PredictionWriter(out)
    v2 = grounder.phrase_queries
    for p in predict_narratives(grounder, dataset, progress=progress):
        for key, text, mask, found, instances in zip(p.keys, p.texts, p.masks, p.found,
                                                     p.instances, strict=True):
            writer.add_mask(key, mask, text, found if v2 else None,
                            instances if v2 and instances else None)
    if v2:
        for answer in probe_absent(grounder, dataset):
            if answer.kind != "present":
                writer.add_absent(answer.image_id, answer.text, answer.found)
    return writer.close()
