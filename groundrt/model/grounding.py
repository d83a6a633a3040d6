"""Mask-phrase grounding: the arithmetic the runtime kernels implement, in one place.

Shapes: phrase_embed [B, P, D], mask_embed [B, Q, D], pixel_embed [B, D, h, w].

    affinity[p, q] = exp(logit_scale) * <phrase_p / |phrase_p|, mask_q / |mask_q|> + bias
    selection:  singular phrase -> the top-1 query;
                plural phrase   -> every q with sigmoid(affinity[p, q]) > threshold, and the top-1
    mask logits of query q:  m_q(y, x) = <mask_embed_q, pixel_embed[:, y, x]>
    phrase logits:           l_p(y, x) = max over selected q of m_q(y, x)

The max is the union of the selected queries' masks (sigmoid is monotonic). Panoptic segments are
disjoint, so the union of a plural's instances is what the ground truth holds; a linear
combination of embeddings cannot express a union in logit space, hence the max. Training uses a
soft, differentiable version (`soft_phrase_probs`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mask_phrase_affinity(phrase_embed: torch.Tensor, mask_embed: torch.Tensor,
                         logit_scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """[B, P, D] x [B, Q, D] -> affinity [B, P, Q] (cosine similarity, scaled and shifted)."""
    p = F.normalize(phrase_embed, dim=-1)
    m = F.normalize(mask_embed, dim=-1)
    return logit_scale.exp() * torch.einsum("bpd,bqd->bpq", p, m) + bias


def mask_logits(mask_embed: torch.Tensor, pixel_embed: torch.Tensor) -> torch.Tensor:
    """[B, Q, D] x [B, D, h, w] -> per-query mask logits [B, Q, h, w]."""
    # a MatMul, not an einsum: ONNX Runtime's Einsum ran this product ~3x slower
    return (mask_embed @ pixel_embed.flatten(2)).unflatten(-1, pixel_embed.shape[-2:])


def select_queries(affinity: torch.Tensor, plural: torch.Tensor,
                   threshold: float) -> torch.Tensor:
    """affinity [B, P, Q], plural [B, P] bool -> selected [B, P, Q] bool (>= 1 per phrase)."""
    top1 = F.one_hot(affinity.argmax(-1), affinity.shape[-1]).bool()
    several = torch.sigmoid(affinity) > threshold
    return torch.where(plural.unsqueeze(-1), several | top1, top1)


def phrase_mask_logits(selected: torch.Tensor, query_logits: torch.Tensor) -> torch.Tensor:
    """selected [B, P, Q] bool, query_logits [B, Q, h, w] -> phrase logits [B, P, h, w]."""
    masked = query_logits.unsqueeze(1).masked_fill(~selected[..., None, None], float("-inf"))
    return masked.amax(dim=2)


def selection_weights(affinity: torch.Tensor, plural: torch.Tensor) -> torch.Tensor:
    """Soft selection [B, P, Q]: softmax over queries for singulars, sigmoid for plurals."""
    return torch.where(plural.unsqueeze(-1), torch.sigmoid(affinity), affinity.softmax(-1))


def soft_phrase_probs(affinity: torch.Tensor, plural: torch.Tensor,
                      query_logits: torch.Tensor) -> torch.Tensor:
    """Differentiable phrase masks [B, P, h, w] = min(1, sum_q w[p, q] sigmoid(m_q))."""
    weights = selection_weights(affinity, plural)
    probs = torch.einsum("bpq,bqhw->bphw", weights, torch.sigmoid(query_logits))
    return probs.clamp(max=1.0)
