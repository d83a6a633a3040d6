"""Predictions on a PNG split through `Grounder` (the one pipeline every caller uses).

`groundrt predict --model PKG` (or a run folder with `--backend torch`) grounds every narrative
by the char spans of its annotated phrases and writes the prediction format; for network v2 it
adds each phrase's `found`, each plural's instance masks, and the answers to the split's absent
phrases (`groundrt.data.absent`), each image's absent phrases grounded together with its
grounded phrases as one explicit phrase list. The export stage scores each precision of a
package with `score_split`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from groundrt.data import PNGDataset
from groundrt.data.absent import AbsentPhrase, read_absent
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
                                                                strict=True)])


def probe_absent(grounder: Grounder, dataset: PNGDataset, limit: int | None = None,
                 images: set[int] | None = None
                 ) -> Iterator[tuple[str, AbsentPhrase, bool, float | None]]:
    """(image_id, phrase, found, presence) for the split's absent phrases (of the first `limit`
    images that have some; of `images` only, if given)."""
    first_narrative: dict[int, list[str]] = {}
    for phrases in dataset.phrases_by_narrative().values():
        first_narrative.setdefault(phrases[0].image_id, [p.text for p in phrases])
    chosen = [(image_id, absent) for image_id, absent in read_absent(dataset.layout).items()
              if images is None or int(image_id) in images][:limit]
    for image_id, absent in chosen:
        grounded = first_narrative.get(int(image_id), [])
        result = grounder.ground(dataset.image_path(int(image_id)),
                                 phrases=grounded + [a.utterance for a in absent])
        for phrase, answer in zip(absent, result.phrases[len(grounded):], strict=True):
            yield image_id, phrase, answer.found, answer.presence


def score_split(grounder: Grounder, dataset: PNGDataset, limit: int | None = None,
                progress: bool = False, images: set[int] | None = None,
                thresholds: tuple[float, ...] = CURVE_THRESHOLDS) -> dict:
    """AR per group, acc@0.5 and, for network v2, target / no-target accuracy, instance AR and
    the two accuracies at each of `thresholds` of the presence score on `dataset` (the first
    `limit` narratives and images; of `images` only, if given)."""
    predictions = list(predict_narratives(grounder, dataset, limit, progress, images))
    report = score_masks(dataset, ((p, p.masks) for p in predictions))
    report["narratives"] = len(predictions)
    if grounder.phrase_queries:
        probes = list(probe_absent(grounder, dataset, limit, images))
        found = [f for p in predictions for f in p.found] + [f for _, _, f, _ in probes]
        present = [True] * (len(found) - len(probes)) + [False] * len(probes)
        accuracy = presence_accuracy(found, present)
        report.update(target_acc=accuracy["target_acc"], no_target_acc=accuracy["no_target_acc"])
        scores = [s for p in predictions for s in p.presence] + [s for *_, s in probes]
        report["presence_curve"] = presence_curve(scores, present, thresholds)
        for kind in sorted({phrase.kind for _, phrase, _, _ in probes}):  # thing, stuff, unknown
            answers = [found for _, phrase, found, _ in probes if phrase.kind == kind]
            report[f"no_target_acc:{kind}"] = 1.0 - sum(answers) / len(answers)
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
        for image_id, phrase, found, _ in probe_absent(grounder, dataset):
            writer.add_absent(image_id, phrase.utterance, found)
    return writer.close()
