"""The grounding arithmetic in numpy: what the kernels compute, written the plain way.

It mirrors `groundrt.model.grounding` (the PyTorch training code) operation by operation, and
is the reference the kernels are tested against (pass float64 arrays for a float64 reference).
Shapes: token_embed [T, D], spans [P, 2], mask_embed [Q, D], pixel_embed [D, h, w].

    phrase_p       = mean of token_embed over span p
    affinity[p, q] = logit_scale * <phrase_p / |phrase_p|, mask_q / |mask_q|> + bias
    selected       = top-1 query for a singular; for a plural also every q with
                     sigmoid(affinity[p, q]) > threshold
    logits_p(y, x) = max over selected q of <mask_q, pixel_embed[:, y, x]>

Network v2's presence (`presence_probability`): the presence head's logit, or a logistic
regression of it and the phrase's decoded mask (its mean probability and log share of the
image) with the weights a package's export fitted.
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


AREA_FLOOR = 1e-4  # added to a mask's share of the image before the log (an empty mask: 0)


def presence_features(logits: np.ndarray, mask_score: np.ndarray,
                      area_share: np.ndarray) -> np.ndarray:
    """[P] presence logits, masks' mean probability, masks' share of the image -> [P, 3]."""
    return np.column_stack([np.asarray(logits, np.float64), np.asarray(mask_score, np.float64),
                            np.log(np.asarray(area_share, np.float64) + AREA_FLOOR)])


def presence_probability(logits: np.ndarray, mask_score: np.ndarray, area_share: np.ndarray,
                         weights: list[float] | None = None) -> np.ndarray:
    """[P] probability that each phrase is in the image: the presence head's sigmoid, or with
    `weights` (w_logit, w_score, w_log_area, bias) the logistic regression of
    `presence_features` (an absent phrase's mask is mostly small and unsure)."""
    z = np.asarray(logits, np.float64)
    if weights is not None:
        w = np.asarray(weights, np.float64)
        z = presence_features(z, mask_score, area_share) @ w[:3] + w[3]
    return 1.0 / (1.0 + np.exp(-z))
