"""The grounding arithmetic in numpy: what the kernels compute, written the plain way.

It mirrors `groundrt.model.grounding` (the PyTorch training code) operation by operation, and
is the reference the kernels are tested against (pass float64 arrays for a float64 reference).
Shapes: token_embed [T, D], spans [P, 2], mask_embed [Q, D], pixel_embed [D, h, w].

    phrase_p       = mean of token_embed over span p
    affinity[p, q] = logit_scale * <phrase_p / |phrase_p|, mask_q / |mask_q|> + bias
    selected       = top-1 query for a singular; for a plural also every q with
                     sigmoid(affinity[p, q]) > threshold
    logits_p(y, x) = max over selected q of <mask_q, pixel_embed[:, y, x]>
"""

from __future__ import annotations

import numpy as np


def pool_phrases(token_embed: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """[T, D], [P, 2] token spans [start, end) -> [P, D] means (an empty span gives zeros)."""
    out = np.zeros((len(spans), token_embed.shape[1]), dtype=token_embed.dtype)
    for p, (start, end) in enumerate(spans):
        if end > start:
            out[p] = token_embed[start:end].mean(0)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    # F.normalize's eps: a zero vector stays zero
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def affinity(phrase_embed: np.ndarray, mask_embed: np.ndarray, logit_scale: float,
             bias: float) -> np.ndarray:
    """[P, D] x [Q, D] -> [P, Q]; `logit_scale` is the multiplier (exp of the trained log)."""
    return logit_scale * (_unit(phrase_embed) @ _unit(mask_embed).T) + bias


def select_queries(scores: np.ndarray, plural: np.ndarray, threshold: float) -> np.ndarray:
    """[P, Q] affinity, [P] bool -> [P, Q] bool, at least the top-1 query per phrase."""
    selected = np.zeros(scores.shape, dtype=bool)
    if scores.size:
        selected[np.arange(len(scores)), scores.argmax(-1)] = True
    probability = 1.0 / (1.0 + np.exp(-scores))
    return selected | (plural[:, None] & (probability > threshold))


def phrase_logits(selected: np.ndarray, mask_embed: np.ndarray,
                  pixel_embed: np.ndarray) -> np.ndarray:
    """[P, Q] bool, [Q, D], [D, h, w] -> [P, h, w]: max over the selected queries' logits."""
    d, h, w = pixel_embed.shape
    query_logits = (mask_embed @ pixel_embed.reshape(d, h * w)).reshape(-1, h, w)
    out = np.empty((len(selected), h, w), dtype=query_logits.dtype)
    for p, chosen in enumerate(selected):
        out[p] = query_logits[chosen].max(0)
    return out
