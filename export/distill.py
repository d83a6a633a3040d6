"""`groundrt export distill`: a small student learns from the teacher's outputs and the truth.

The student is the same network at a smaller input, width and depth. Its loss is the training
loss on the ground truth, with the query-to-segment matching taken from the teacher (so that
student query q learns what teacher query q holds), plus three distillation terms:

* query masks: BCE of the student's mask logits against the teacher's probabilities, query by
  query, at the loss size (both letterbox the image into the top-left corner of a square, so the
  two inputs cover the same normalized area);
* affinities: singular phrases match the teacher's softmax over queries (KL), plural phrases its
  per-query sigmoid (BCE);
* embeddings: the cosine-similarity matrices among mask embeddings and among phrase embeddings
  (relational, so the student's D may differ from the teacher's);
* network v2 adds the phrases' own masks (BCE against the teacher's final-layer probabilities,
  present phrases) and their presence (BCE against the teacher's presence probabilities).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from groundrt.model.checkpoint import TOKENIZER_FILE, load_model
from groundrt.model.config import PRESETS, ModelConfig
from groundrt.model.network import GroundingNet, GroundingOutput
from groundrt.train.batch import Batch
from groundrt.train.losses import grounding_loss, resize_logits
from groundrt.train.trainer import TrainConfig, train


@dataclass(frozen=True)
class DistillWeights:
    ground_truth: float = 1.0
    query_masks: float = 2.0
    affinity: float = 1.0
    embeddings: float = 1.0
    phrase_masks: float = 2.0  # v2
    presence: float = 1.0  # v2


def cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    """[B, N, D] -> [B, N, N] cosine similarities."""
    x = F.normalize(x, dim=-1)
    return x @ x.transpose(1, 2)


class DistillObjective:
    """The student's loss for one batch (an `Objective` of the trainer)."""

    def __init__(self, teacher: GroundingNet, weights: DistillWeights = DistillWeights()) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.weights = weights

    def __call__(self, out: GroundingOutput, batch: Batch,
                 loss_size: int) -> tuple[torch.Tensor, dict]:
        if batch.teacher_image is None:
            raise ValueError("distillation needs examples built with the teacher's input size")
        with torch.no_grad():
            teacher = self.teacher(batch.teacher_image, batch.tokens, batch.token_padding,
                                   batch.spans)
            teacher_logits = resize_logits(teacher.query_logits, loss_size)
        truth, parts = grounding_loss(out, batch, loss_size, match_logits=teacher_logits)

        student_logits = resize_logits(out.query_logits, loss_size)
        query_masks = F.binary_cross_entropy_with_logits(student_logits, teacher_logits.sigmoid())

        valid = batch.phrase_valid
        singular, plural = valid & ~batch.plural, valid & batch.plural
        affinity = out.affinity.new_zeros(())
        if singular.any():
            affinity = affinity + F.kl_div(out.affinity[singular].log_softmax(-1),
                                           teacher.affinity[singular].log_softmax(-1),
                                           log_target=True, reduction="batchmean")
        if plural.any():
            affinity = affinity + F.binary_cross_entropy_with_logits(
                out.affinity[plural], teacher.affinity[plural].sigmoid())

        pair_valid = (valid[:, :, None] & valid[:, None, :]).float()
        phrase_rel = ((cosine_matrix(out.phrase_embed) - cosine_matrix(teacher.phrase_embed))
                      .square() * pair_valid).sum() / pair_valid.sum().clamp(min=1)
        mask_rel = F.mse_loss(cosine_matrix(out.mask_embed), cosine_matrix(teacher.mask_embed))
        embeddings = phrase_rel + mask_rel

        w = self.weights
        total = (w.ground_truth * truth + w.query_masks * query_masks + w.affinity * affinity
                 + w.embeddings * embeddings)
        parts.update(truth=parts.pop("total"), kd_masks=query_masks.item(),
                     kd_affinity=affinity.item(), kd_embed=embeddings.item())
        if out.phrase_kernels and teacher.phrase_kernels:
            phrase_masks, presence = phrase_terms(out, teacher, batch, loss_size)
            total = total + w.phrase_masks * phrase_masks + w.presence * presence
            parts.update(kd_phrase_masks=phrase_masks.item(), kd_presence=presence.item())
        parts["total"] = total.item()
        return total, parts


def phrase_terms(student: GroundingOutput, teacher: GroundingOutput, batch: Batch,
                 loss_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """v2: the student's final phrase masks and presence against the teacher's."""
    present = batch.phrase_valid & batch.present
    with torch.no_grad():
        target = resize_logits(teacher.phrase_logits(), loss_size)[present].sigmoid()
    masks = F.binary_cross_entropy_with_logits(
        resize_logits(student.phrase_logits(), loss_size)[present], target)
    valid = batch.phrase_valid
    presence = F.binary_cross_entropy_with_logits(student.presence[-1][valid],
                                                  teacher.presence[-1][valid].sigmoid())
    return masks, presence


def distill(teacher_run: str | Path, data: str | Path, out: str | Path,
            student_cfg: ModelConfig | None = None, cfg: TrainConfig | None = None,
            weights: DistillWeights = DistillWeights(), resume: bool = False,
            progress: bool = True, init: str | Path | None = None) -> dict:
    """Trains a student run in `out` from the teacher run (`init`: starting from that student
    run's weights, e.g. a new teacher's student from the last one's); returns the state."""
    teacher_run = Path(teacher_run)
    cfg = cfg or TrainConfig(epochs=3)
    teacher = load_model(teacher_run).to(cfg.device)
    default = "student-v2" if teacher.cfg.phrase_queries else "student"
    student_cfg = replace(student_cfg or PRESETS[default],
                          vocab_size=teacher.cfg.vocab_size, max_tokens=teacher.cfg.max_tokens)
    return train(data, out, student_cfg, cfg, resume=resume, progress=progress,
                 objective=DistillObjective(teacher, weights),
                 teacher_size=teacher.cfg.input_size, tokenizer=teacher_run / TOKENIZER_FILE,
                 extra_config={"teacher": str(teacher_run), "distill": asdict(weights)},
                 init=init)
