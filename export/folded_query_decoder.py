"""The query decoder rewritten for export: the same function in a third of the graph's nodes.

A trained `QueryDecoder` (torch's TransformerDecoderLayer, pre-norm) exports as ~175 small ONNX
nodes for 24 queries: packed-projection splits, head reshapes and transposes around every
attention. On a 2-core CPU each node costs microseconds whatever its size, and in the INT8 graph
each also gets Q/DQ pairs. This module computes the same arithmetic with fewer nodes:

* the first layer's self-attention reads only the learned queries: it is a constant, folded
  here, and so is the query projection of the first cross-attention;
* keys and values of the memory come from 1x1 convolutions of the channel-major feature map
  (no flatten/transpose of the memory), reshaped straight into heads [B, H, dh, N];
* the 1/sqrt(dh) attention scale is folded into the query projections.

`compare_with_torch` (onnx_export.py) checks every exported graph against the original module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from groundrt.model.image_encoder import QueryDecoder


def _split_in_proj(attention: nn.MultiheadAttention) -> tuple[torch.Tensor, ...]:
    """(Wq, bq, Wk, bk, Wv, bv) of a packed-projection MultiheadAttention, Wq and bq scaled."""
    c = attention.embed_dim
    weight, bias = attention.in_proj_weight.detach(), attention.in_proj_bias.detach()
    scale = 1.0 / math.sqrt(c // attention.num_heads)
    return (weight[:c] * scale, bias[:c] * scale, weight[c:2 * c], bias[c:2 * c],
            weight[2 * c:], bias[2 * c:])


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


class FoldedQueryDecoder(nn.Module):
    """memory [B, C, h, w] (the query memory) -> mask_embed [B, Q, D], as QueryDecoder."""

    def __init__(self, decoder: QueryDecoder) -> None:
        super().__init__()
        self.layers = decoder.layers.layers  # norms, output projections, feed-forwards as trained
        first = self.layers[0]
        self.heads = first.self_attn.num_heads
        c = first.self_attn.embed_dim
        self.head_dim = c // self.heads
        side = decoder.side
        projections = [_split_in_proj(layer.multihead_attn) for layer in self.layers]
        with torch.no_grad():
            queries = decoder.queries.detach()[None]
            x0 = queries + first._sa_block(first.norm1(queries), None, None)
            q0 = F.linear(first.norm2(x0), *projections[0][:2])
        self.register_buffer("x0", x0)  # [1, Q, C]
        self.register_buffer("q0", self._heads(q0))  # [1, H, Q, dh]
        # the memory tokens' positions in the channel-major layout [1, C, side, side]; an input
        # cropped from the square uses their top-left corner, as QueryDecoder does
        self.register_buffer("pos", decoder.memory_pos.detach().t().reshape(1, c, side, side))
        # keys and values of every layer's cross-attention: one 1x1 convolution
        kv_weight = torch.cat([torch.cat([wk, wv]) for _, _, wk, _, wv, _ in projections])
        kv_bias = torch.cat([torch.cat([bk, bv]) for _, _, _, bk, _, bv in projections])
        self.kv = nn.Conv2d(c, len(kv_bias), 1)
        with torch.no_grad():
            self.kv.weight.copy_(kv_weight[..., None, None])
            self.kv.bias.copy_(kv_bias)
        # later layers: packed self-attention projections and cross-attention query projections
        self.self_qkv = nn.ModuleList(
            _linear(torch.cat(p[0::2]), torch.cat(p[1::2]))
            for p in (_split_in_proj(layer.self_attn) for layer in self.layers[1:]))
        self.cross_q = nn.ModuleList(_linear(*p[:2]) for p in projections[1:])
        self.norm, self.mask_mlp = decoder.norm, decoder.mask_mlp

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, H, N, dh]."""
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, N, dh] -> [B, N, C]."""
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], self.heads * self.head_dim)

    @staticmethod
    def _attend(q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [B, H, Nq, dh] (scaled), k_t [B, H, dh, Nk], v [B, H, Nk, dh] -> [B, H, Nq, dh]."""
        return torch.softmax(q @ k_t, dim=-1) @ v

    def states(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory [B, C, h, w] -> (the queries' states [B, Q, C], as QueryDecoder.decode; the
        positioned memory tokens [B, h*w, C], as QueryDecoder.memory_tokens)."""
        b, _, h, w = memory.shape
        positioned = memory + self.pos[..., :h, :w]
        # [B, 2 C L, h, w] -> [B, L, 2, H, dh, N]: keys are [dh, N] per head as they are
        kv = self.kv(positioned).reshape(b, len(self.layers), 2, self.heads, self.head_dim, -1)
        x = self.x0.expand(b, -1, -1)
        for i, layer in enumerate(self.layers):
            if i == 0:
                q = self.q0  # the first layer's self-attention and query projection, folded
            else:
                h = layer.norm1(x)
                qkv = self.self_qkv[i - 1](h).reshape(b, -1, 3, self.heads, self.head_dim)
                q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, Q, dh]
                x = x + layer.self_attn.out_proj(self._merge(
                    self._attend(q, k.transpose(-1, -2), v)))
                q = self._heads(self.cross_q[i - 1](layer.norm2(x)))
            attended = self._attend(q, kv[:, i, 0], kv[:, i, 1].transpose(-1, -2))
            x = x + layer.multihead_attn.out_proj(self._merge(attended))
            x = x + layer.linear2(layer.activation(layer.linear1(layer.norm3(x))))
        return self.norm(x), positioned.flatten(2).transpose(1, 2)

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        return self.mask_mlp(self.states(memory)[0])
