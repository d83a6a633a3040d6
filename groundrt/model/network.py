"""GroundingNet: the image path and the text path, joined by the grounding arithmetic."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn

from groundrt.model.config import ModelConfig
from groundrt.model.grounding import mask_logits, mask_phrase_affinity
from groundrt.model.image_encoder import ImageEncoder
from groundrt.model.text_encoder import TextEncoder, pool_phrases


@dataclass
class GroundingOutput:
    pixel_embed: torch.Tensor  # [B, D, h, w]
    mask_embed: torch.Tensor  # [B, Q, D]
    phrase_embed: torch.Tensor  # [B, P, D]
    affinity: torch.Tensor  # [B, P, Q]
    query_logits: torch.Tensor  # [B, Q, h, w]

    def float(self) -> GroundingOutput:
        """Every tensor as float32 (the outputs of a bfloat16 autocast forward, for the loss)."""
        return GroundingOutput(**{f.name: getattr(self, f.name).float() for f in fields(self)})


class GroundingNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = ImageEncoder(cfg)
        self.text_encoder = TextEncoder(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.affinity_bias = nn.Parameter(torch.tensor(-2.0))

    def forward(self, image: torch.Tensor, token_ids: torch.Tensor, token_padding: torch.Tensor,
                spans: torch.Tensor) -> GroundingOutput:
        """image [B, 3, S, S], token_ids [B, T], token_padding [B, T] bool, spans [B, P, 2]."""
        pixel_embed, mask_embed = self.image_encoder(image)
        phrase_embed = pool_phrases(self.text_encoder(token_ids, token_padding), spans)
        affinity = mask_phrase_affinity(phrase_embed, mask_embed, self.logit_scale,
                                        self.affinity_bias)
        return GroundingOutput(pixel_embed, mask_embed, phrase_embed, affinity,
                               mask_logits(mask_embed, pixel_embed))
