"""Losses: Hungarian query-to-segment matching, query masks, affinity, phrase masks.

As Mask2Former does for the queries (each panoptic segment of the image is matched to one
query, whose mask learns it with BCE + Dice) and as PPMN/EPNG do for the phrases (BCE + Dice on
the phrase masks), plus a loss on the affinity: a singular phrase's softmax over queries must
pick its segment's query, a plural's sigmoid must take every one of its segments' queries.
In network v2 the phrases' own masks are supervised directly after every decoder layer (as
PPMN, DRMN and NICE do), with a presence loss; phrases absent from the image (no segments) train
only the presence.
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
    presence: float = 1.0  # v2


def dice_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[N, HW] probabilities and targets -> [N] 1 - Dice."""
    inter = (probs * targets).sum(-1)
    return 1 - (2 * inter + 1) / (probs.sum(-1) + targets.sum(-1) + 1)


@torch.no_grad()
def match_queries(logits: list[torch.Tensor],
                  targets: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Hungarian matching per image: logits [Q, HW] and targets [N, HW] of each image ->
    (query index, segment index) of each image.

    Cost = mean BCE + Dice of every (query, segment) pair, two matrix products on the logits'
    device; the costs of all images reach the host in one copy (on a GPU, one wait per step).
    """
    costs = []
    for image_logits, image_targets in zip(logits, targets, strict=True):
        hw = image_logits.shape[-1]
        bce = (F.softplus(image_logits).sum(-1, keepdim=True)
               - image_logits @ image_targets.T) / hw  # [Q, N]
        probs = image_logits.sigmoid()
        dice = 1 - (2 * probs @ image_targets.T + 1) / (
            probs.sum(-1)[:, None] + image_targets.sum(-1)[None] + 1)
        costs.append(bce + dice)
    host = torch.cat([c.flatten() for c in costs]).cpu().split([c.numel() for c in costs])
    matches = []
    for cost, flat in zip(costs, host, strict=True):
        rows, cols = linear_sum_assignment(flat.view(cost.shape).numpy())
        matches.append((torch.as_tensor(rows, dtype=torch.int64, device=cost.device),
                        torch.as_tensor(cols, dtype=torch.int64, device=cost.device)))
    return matches


def resize_logits(query_logits: torch.Tensor, loss_size: int) -> torch.Tensor:
    """[B, Q, h, w] -> [B, Q, s, s]: bilinear, as the runtime upsamples."""
    return F.interpolate(query_logits, size=(loss_size, loss_size), mode="bilinear",
                         align_corners=False)


def grounding_loss(out: GroundingOutput, batch: Batch, loss_size: int,
                   weights: LossWeights | None = None,
                   match_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Total loss and its parts (floats) for one batch: the instance terms, then the phrase
    terms of the network's version (v1: soft phrase masks from the queries; v2: each phrase's
    own mask after every decoder layer, and its presence).

    `match_logits` [B, Q, s, s] (a teacher's) decide the query-to-segment matching instead of the
    model's own logits, so that a student's query q learns what the teacher's query q holds.
    """
    weights = weights or LossWeights()
    logits = resize_logits(out.query_logits, loss_size)  # [B, Q, s, s]
    total, parts, phrase_targets = instance_loss(out, batch, logits, weights, match_logits)
    if out.phrase_kernels:
        phrase_total, phrase_parts = phrase_query_loss(out, batch, phrase_targets, weights)
    else:
        phrase_total, phrase_parts = soft_phrase_loss(out, batch, logits, phrase_targets,
                                                      weights)
    total = total + phrase_total
    parts.update(phrase_parts, total=float(total.detach()))
    return total, parts


def instance_loss(out: GroundingOutput, batch: Batch, logits: torch.Tensor, weights: LossWeights,
                  match_logits: torch.Tensor | None
                  ) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """Matched query masks (BCE + Dice) and the affinity of present phrases with the queries
    that hold their segments; also returns the phrases' union targets [B, P, s, s]."""
    match_logits = logits if match_logits is None else match_logits
    b, q, loss_size = logits.shape[0], logits.shape[1], logits.shape[-1]
    total_q = {k: logits.new_zeros(()) for k in ("query_bce", "query_dice", "affinity")}
    phrase_targets = logits.new_zeros(b, batch.spans.shape[1], loss_size, loss_size)
    all_targets = [m.flatten(1) for m in batch.segment_masks]  # B x [N, HW]
    matches = match_queries([m.flatten(1).detach() for m in match_logits], all_targets)
    for i in range(b):
        targets = all_targets[i]  # [N, HW]
        rows, cols = matches[i]
        matched, matched_targets = logits[i].flatten(1)[rows], targets[cols]
        total_q["query_bce"] = total_q["query_bce"] + F.binary_cross_entropy_with_logits(
            matched, matched_targets)
        total_q["query_dice"] = total_q["query_dice"] + dice_loss(matched.sigmoid(),
                                                                  matched_targets).mean()
        # which queries belong to which phrase: query rows[k] holds segment cols[k]
        members = batch.phrase_members[i].float()  # [P_i, N]
        n_phrases = members.shape[0]
        query_of_segment = logits.new_zeros(members.shape[1], q)
        query_of_segment[cols, rows] = 1.0
        owned = members @ query_of_segment  # [P_i, Q] 1 where the query is the phrase's
        present = batch.present[i, :n_phrases]
        affinity = out.affinity[i, :n_phrases][present]
        owned, plural = owned[present], batch.plural[i, :n_phrases][present]
        singular_loss = F.cross_entropy(affinity[~plural], owned[~plural].argmax(-1),
                                        reduction="sum") if (~plural).any() else 0.0
        plural_loss = F.binary_cross_entropy_with_logits(
            affinity[plural], owned[plural], reduction="sum") / q if plural.any() else 0.0
        total_q["affinity"] = total_q["affinity"] + (singular_loss + plural_loss) / max(
            1, len(plural))
        phrase_targets[i, :n_phrases] = (members @ targets).clamp(max=1.0).view(
            -1, loss_size, loss_size)
    total = sum(getattr(weights, k) * v / b for k, v in total_q.items())
    return total, {k: float(v.detach()) / b for k, v in total_q.items()}, phrase_targets


def soft_phrase_loss(out: GroundingOutput, batch: Batch, logits: torch.Tensor,
                     phrase_targets: torch.Tensor, weights: LossWeights
                     ) -> tuple[torch.Tensor, dict]:
    """v1: BCE + Dice on the soft phrase masks the affinity makes of the query masks."""
    probs = soft_phrase_probs(out.affinity, batch.plural, logits)  # [B, P, s, s]
    valid = batch.phrase_valid & batch.present
    p_probs, p_targets = probs[valid].flatten(1), phrase_targets[valid].flatten(1)
    phrase_bce = F.binary_cross_entropy(p_probs.clamp(1e-6, 1 - 1e-6), p_targets)
    phrase_dice = dice_loss(p_probs, p_targets).mean()
    total = weights.phrase_bce * phrase_bce + weights.phrase_dice * phrase_dice
    return total, {"phrase_bce": float(phrase_bce.detach()),
                   "phrase_dice": float(phrase_dice.detach())}


def phrase_query_loss(out: GroundingOutput, batch: Batch, phrase_targets: torch.Tensor,
                      weights: LossWeights) -> tuple[torch.Tensor, dict]:
    """v2: after every decoder layer, BCE + Dice of each present phrase's own mask against its
    union target, and BCE of every phrase's presence logit (averaged over the layers)."""
    loss_size = phrase_targets.shape[-1]
    present = batch.phrase_valid & batch.present
    targets = phrase_targets[present].flatten(1)
    sums = {"phrase_bce": 0.0, "phrase_dice": 0.0, "presence": 0.0}
    layers = len(out.phrase_kernels)
    for layer in range(layers):
        logits = resize_logits(out.phrase_logits(layer), loss_size)[present].flatten(1)
        sums["phrase_bce"] = sums["phrase_bce"] + F.binary_cross_entropy_with_logits(
            logits, targets)
        sums["phrase_dice"] = sums["phrase_dice"] + dice_loss(logits.sigmoid(), targets).mean()
        sums["presence"] = sums["presence"] + F.binary_cross_entropy_with_logits(
            out.presence[layer][batch.phrase_valid], batch.present[batch.phrase_valid].float())
    total = sum(getattr(weights, k) * v / layers for k, v in sums.items())
    return total, {k: float(v.detach()) / layers for k, v in sums.items()}
