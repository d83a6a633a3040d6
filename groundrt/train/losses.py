"""Losses: Hungarian query-to-segment matching, query masks, affinity, phrase masks.

As Mask2Former does for the queries (each panoptic segment of the image is matched to one
query, whose mask learns it with BCE + Dice) and as PPMN/EPNG do for the phrases (BCE + Dice on
the phrase masks), plus a loss on the affinity: a singular phrase's softmax over queries must
pick its segment's query, a plural's sigmoid must take every one of its segments' queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from groundrt.model.grounding import soft_phrase_probs
from groundrt.model.network import GroundingOutput
from groundrt.train.batch import Batch


@dataclass
class LossWeights:
    query_bce: float = 2.0
    query_dice: float = 1.0
    affinity: float = 1.0
    phrase_bce: float = 2.0
    phrase_dice: float = 1.0


def dice_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[N, HW] probabilities and targets -> [N] 1 - Dice."""
    inter = (probs * targets).sum(-1)
    return 1 - (2 * inter + 1) / (probs.sum(-1) + targets.sum(-1) + 1)


@torch.no_grad()
def match_queries(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Hungarian matching: logits [Q, HW], targets [N, HW] -> (query index, segment index).

    Cost = mean BCE + Dice of every (query, segment) pair, computed with two matrix products.
    """
    hw = logits.shape[-1]
    bce = (F.softplus(logits).sum(-1, keepdim=True) - logits @ targets.T) / hw  # [Q, N]
    probs = logits.sigmoid()
    dice = 1 - (2 * probs @ targets.T + 1) / (probs.sum(-1)[:, None] + targets.sum(-1)[None] + 1)
    rows, cols = linear_sum_assignment((bce + dice).cpu().numpy())
    return (torch.as_tensor(rows, dtype=torch.int64, device=logits.device),
            torch.as_tensor(cols, dtype=torch.int64, device=logits.device))


def resize_logits(query_logits: torch.Tensor, loss_size: int) -> torch.Tensor:
    """[B, Q, h, w] -> [B, Q, s, s]: bilinear, as the runtime upsamples."""
    return F.interpolate(query_logits, size=(loss_size, loss_size), mode="bilinear",
                         align_corners=False)


def matched_mask_losses(logits: torch.Tensor, targets: torch.Tensor,
                        match_logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One image: logits [Q, HW], targets [N, HW] -> (BCE, Dice, query index, segment index)
    of the queries matched by `match_logits` [Q, HW]."""
    rows, cols = match_queries(match_logits.detach(), targets)
    matched = logits[rows]
    return (F.binary_cross_entropy_with_logits(matched, targets[cols]),
            dice_loss(matched.sigmoid(), targets[cols]).mean(), rows, cols)


def grounding_loss(out: GroundingOutput, batch: Batch, loss_size: int,
                   weights: LossWeights | None = None,
                   match_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Total loss and its parts (floats) for one batch.

    `match_logits` [B, Q, s, s] (a teacher's) decide the query-to-segment matching instead of the
    model's own logits, so that a student's query q learns what the teacher's query q holds.
    """
    weights = weights or LossWeights()
    logits = resize_logits(out.query_logits, loss_size)  # [B, Q, s, s]
    match_logits = logits if match_logits is None else match_logits
    aux_logits = [resize_logits(a, loss_size) for a in out.aux_query_logits]
    b, q = logits.shape[:2]
    total_q = {k: logits.new_zeros(()) for k in ("query_bce", "query_dice", "affinity")}
    phrase_targets = logits.new_zeros(b, batch.spans.shape[1], loss_size, loss_size)
    for i in range(b):
        targets = batch.segment_masks[i].flatten(1)  # [N, HW]
        bce, dice, rows, cols = matched_mask_losses(logits[i].flatten(1), targets,
                                                    match_logits[i].flatten(1))
        # deep supervision: each earlier layer's queries matched on their own masks
        for aux in aux_logits:
            aux_bce, aux_dice, _, _ = matched_mask_losses(aux[i].flatten(1), targets,
                                                          aux[i].flatten(1))
            bce, dice = bce + aux_bce, dice + aux_dice
        total_q["query_bce"] = total_q["query_bce"] + bce
        total_q["query_dice"] = total_q["query_dice"] + dice
        # which queries belong to which phrase: query rows[k] holds segment cols[k]
        members = batch.phrase_members[i].float()  # [P_i, N]
        query_of_segment = logits.new_zeros(members.shape[1], q)
        query_of_segment[cols, rows] = 1.0
        owned = members @ query_of_segment  # [P_i, Q] 1 where the query is the phrase's
        affinity = out.affinity[i, :members.shape[0]]
        plural = batch.plural[i, :members.shape[0]]
        singular_loss = F.cross_entropy(affinity[~plural], owned[~plural].argmax(-1),
                                        reduction="sum") if (~plural).any() else 0.0
        plural_loss = F.binary_cross_entropy_with_logits(
            affinity[plural], owned[plural], reduction="sum") / q if plural.any() else 0.0
        total_q["affinity"] = total_q["affinity"] + (singular_loss + plural_loss) / len(plural)
        phrase_targets[i, :members.shape[0]] = (members @ targets).clamp(max=1.0).view(
            -1, loss_size, loss_size)
    total = sum(getattr(weights, k) * v / b for k, v in total_q.items())
    parts = {k: float(v.detach()) / b for k, v in total_q.items()}

    probs = soft_phrase_probs(out.affinity, batch.plural, logits)  # [B, P, s, s]
    valid = batch.phrase_valid
    p_probs, p_targets = probs[valid].flatten(1), phrase_targets[valid].flatten(1)
    phrase_bce = F.binary_cross_entropy(p_probs.clamp(1e-6, 1 - 1e-6), p_targets)
    phrase_dice = dice_loss(p_probs, p_targets).mean()
    total = total + weights.phrase_bce * phrase_bce + weights.phrase_dice * phrase_dice
    parts.update(phrase_bce=float(phrase_bce.detach()), phrase_dice=float(phrase_dice.detach()),
                 total=float(total.detach()))
    return total, parts
