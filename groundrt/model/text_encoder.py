"""Text path: token embeddings and a small transformer; phrases pool their token spans.

token ids [B, T] -> token_embed [B, T, D] (already projected to D, so that mean pooling over a
span gives the phrase embedding directly: pooling and the projection commute). In network v2
the tokens are projected to the phrase decoder's width C instead (`ModelConfig.text_out_dim`).
"""

from __future__ import annotations

import torch
from torch import nn

from groundrt.model.config import ModelConfig


class TextEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.text_dim)
        self.pos = nn.Parameter(torch.randn(cfg.max_tokens, cfg.text_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.text_dim, cfg.text_heads, 2 * cfg.text_dim,
                                           dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.text_dim)
        self.proj = nn.Linear(cfg.text_dim, cfg.text_out_dim)

    def forward(self, token_ids: torch.Tensor,
                padding: torch.Tensor | None = None) -> torch.Tensor:
        """token_ids [B, T] int64, padding [B, T] bool (True = pad) -> token_embed [B, T, D]."""
        t = token_ids.shape[1]
        x = self.embed(token_ids) + self.pos[:t]
        x = self.layers(x, src_key_padding_mask=padding)
        return self.proj(self.norm(x))


def pool_phrases(token_embed: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """Mean of each phrase's tokens: token_embed [B, T, D], spans [B, P, 2] -> [B, P, D].

    A span is [start, end) in token positions; empty spans (padding phrases) give zeros.
    """
    t = token_embed.shape[1]
    positions = torch.arange(t, device=token_embed.device)
    inside = ((positions >= spans[..., :1]) & (positions < spans[..., 1:])).to(token_embed.dtype)
    counts = inside.sum(-1, keepdim=True).clamp(min=1.0)
    return (inside / counts) @ token_embed
