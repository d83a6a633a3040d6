"""GroundingNet: the image path and the text path, joined by the grounding arithmetic.

v1 (`phrase_layers == 0`): a phrase is the mean of its tokens and picks among the object
tokens' masks (`grounding.py`). v2: the phrase decoder makes every phrase a query of its own
with a mask kernel and a presence score (`phrase_decoder.py`); the affinity with the object
tokens remains, for a plural's instances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn

from groundrt.model.config import ModelConfig
from groundrt.model.grounding import mask_logits, mask_phrase_affinity
from groundrt.model.image_encoder import ImageEncoder
from groundrt.model.phrase_decoder import (
    PhraseDecoder,
    SplitPhraseDecoder,
    object_centroids,
    phrase_padding_of,
    phrase_tokens,
)
from groundrt.model.text_encoder import TextEncoder, pool_phrases


@dataclass
class GroundingOutput:
    pixel_embed: torch.Tensor  # [B, D, h, w]
    mask_embed: torch.Tensor  # [B, Q, D]
    phrase_embed: torch.Tensor  # [B, P, D]
    affinity: torch.Tensor  # [B, P, Q]
    query_logits: torch.Tensor  # [B, Q, h, w]
    # v2 only (empty in v1): per phrase-decoder layer, the last one last
    phrase_kernels: list[torch.Tensor]  # [B, P, D]
    presence: list[torch.Tensor]  # [B, P] logits

    def float(self) -> GroundingOutput:
        """Every tensor as float32 (the outputs of a bfloat16 autocast forward, for the loss)."""
        def cast(value):
            return [v.float() for v in value] if isinstance(value, list) else value.float()
        return GroundingOutput(**{f.name: cast(getattr(self, f.name)) for f in fields(self)})

    def phrase_logits(self, layer: int = -1) -> torch.Tensor:
        """v2: the phrases' own mask logits [B, P, h, w] after a decoder layer."""
        return mask_logits(self.phrase_kernels[layer], self.pixel_embed)


class GroundingNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = ImageEncoder(cfg)
        self.text_encoder = TextEncoder(cfg)
        self.phrase_decoder = PhraseDecoder(cfg) if cfg.phrase_queries else None
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.affinity_bias = nn.Parameter(torch.tensor(-2.0))

    def forward(self, image: torch.Tensor, token_ids: torch.Tensor, token_padding: torch.Tensor,
                spans: torch.Tensor) -> GroundingOutput:
        """image [B, 3, S, S], token_ids [B, T], token_padding [B, T] bool, spans [B, P, 2]."""
        image_features = self.image_encoder.features(image)
        pixel_embed, mask_embed = image_features.pixel_embed, image_features.mask_embed
        query_logits = mask_logits(mask_embed, pixel_embed)
        tokens = self.text_encoder(token_ids, token_padding)
        kernels: list[torch.Tensor] = []
        presence: list[torch.Tensor] = []
        if self.phrase_decoder is None:
            phrase_embed = pool_phrases(tokens, spans)
        else:
            own, own_valid = phrase_tokens(tokens, spans)
            objects = self.phrase_decoder.objects(image_features.object_tokens,
                                                  object_centroids(query_logits))
            decoded = self.phrase_decoder(own, own_valid, phrase_padding_of(spans), objects,
                                          image_features.memory_tokens)
            phrase_embed, kernels, presence = (decoded.phrase_embed, decoded.kernels,
                                               decoded.presence)
        affinity = mask_phrase_affinity(phrase_embed, mask_embed, self.logit_scale,
                                        self.affinity_bias)
        return GroundingOutput(pixel_embed, mask_embed, phrase_embed, affinity, query_logits,
                               kernels, presence)

    # The graphs of a v2 package (export/onnx_export.py) and the torch backend run these, on a
    # SplitPhraseDecoder of this network (`split_phrase_decoder()`, a snapshot of its weights).

    def split_phrase_decoder(self) -> SplitPhraseDecoder:
        return SplitPhraseDecoder(self.phrase_decoder).eval()


def image_outputs(split: SplitPhraseDecoder, pixel_embed: torch.Tensor, mask_embed: torch.Tensor,
                  object_tokens: torch.Tensor, memory_tokens: torch.Tensor
                  ) -> dict[str, torch.Tensor]:
    """What a v2 image graph returns, from the image encoder's features: pixel_embed,
    mask_embed and every phrase-decoder layer's image keys and values [B, layers, h, N, d]."""
    centroids = object_centroids(mask_logits(mask_embed, pixel_embed))
    keys, values = split.image_kv(split.decoder.objects(object_tokens, centroids), memory_tokens)
    return {"pixel_embed": pixel_embed, "mask_embed": mask_embed, "image_keys": keys,
            "image_values": values}


def text_outputs(split: SplitPhraseDecoder, token_embed: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a v2 text graph returns: token features [1, T, C] and every layer's keys and values
    of every token [1, T, layers, 2, C]."""
    return {"token_embed": token_embed, "token_kv": split.token_kv(token_embed)}


@torch.no_grad()
def image_graph(model: GroundingNet, split: SplitPhraseDecoder,
                image: torch.Tensor) -> dict[str, torch.Tensor]:
    features = model.image_encoder.features(image)
    return image_outputs(split, features.pixel_embed, features.mask_embed,
                         features.object_tokens, features.memory_tokens)


@torch.no_grad()
def text_graph(model: GroundingNet, split: SplitPhraseDecoder,
               token_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    return text_outputs(split, model.text_encoder(token_ids))


@torch.no_grad()
def phrase_graph(split: SplitPhraseDecoder, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """phrase_mean, own_keys, own_values, own_bias, image_keys, image_values (see
    SplitPhraseDecoder) -> kernels [B, P, D], presence [B, P] (logits), phrase_embed [B, P, D]
    (for the affinity with mask_embed)."""
    kernels, presence, embed = split(*inputs)
    return {"kernels": kernels, "presence": presence, "phrase_embed": embed}
