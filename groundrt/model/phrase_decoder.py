"""Phrase decoder (network v2): every phrase is a query of its own.

A phrase starts as the mean of its tokens' features, then each layer lets it
  1. attend to the caption's other phrases (self-attention: "the circle on the left" learns
     that "the circle on the right" exists),
  2. attend, in one softmax, to its own tokens (every word, not only their mean), to the object
     tokens (instance proposals, with their masks' centroids as positions) and to the image
     memory (stride-16 features with their positions),
  3. pass an MLP,
and after every layer shared heads read it out: a mask kernel [D] (mask = kernel . pixel_embed,
supervised directly, a plural's target being its union), a presence logit (is the phrase in the
image at all) and, after the last layer, the embedding whose affinity with the object tokens
selects a phrase's instances.

Shapes: own tokens [B, P, L, C] with own_valid [B, P, L], phrase_padding [B, P] (True = pad),
object tokens [B, Q, C], object centroids [B, Q, 2], memory tokens [B, K, C].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from groundrt.model.config import ModelConfig

MASKED = -1e4  # attention logit of a masked key (finite: safe under bfloat16 and in ONNX)


def phrase_tokens(token_feats: torch.Tensor,
                  spans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """token_feats [B, T, C], spans [B, P, 2] -> each phrase's own tokens [B, P, L, C] and their
    validity [B, P, L], L the longest span (at least 1)."""
    b, t, c = token_feats.shape
    lengths = (spans[..., 1] - spans[..., 0]).clamp(min=0)  # [B, P]
    longest = max(1, int(lengths.max())) if lengths.numel() else 1
    offsets = torch.arange(longest, device=spans.device)
    index = (spans[..., :1] + offsets).clamp(max=t - 1)  # [B, P, L]
    gathered = torch.gather(token_feats.unsqueeze(1).expand(-1, index.shape[1], -1, -1), 2,
                            index.unsqueeze(-1).expand(-1, -1, -1, c))
    return gathered, offsets < lengths.unsqueeze(-1)


def object_centroids(query_logits: torch.Tensor) -> torch.Tensor:
    """[B, Q, h, w] mask logits -> [B, Q, 2] (x, y) centroid of each mask in [-1, 1] of the
    map (probability-weighted; detached: positions inform the phrases, they are not trained
    through them)."""
    probs = query_logits.detach().float().sigmoid()
    h, w = probs.shape[-2:]
    ys = torch.linspace(-1.0, 1.0, h, device=probs.device)
    xs = torch.linspace(-1.0, 1.0, w, device=probs.device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    # x, y and 1 of every cell: one MatMul gives both moments and the mass (the exported graph
    # ran six ReduceSums before)
    moments = probs.flatten(2) @ torch.stack([grid_x, grid_y, torch.ones_like(grid_x)],
                                             -1).flatten(0, 1)
    centroids = moments[..., :2] / moments[..., 2:].clamp(min=1e-6)
    return centroids.to(query_logits.dtype)


class PhraseAttention(nn.Module):
    """Each phrase attends to its own tokens and to keys every phrase shares, in one softmax;
    text and image keys have their own projections."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.text_kv = nn.Linear(dim, 2 * dim)
        self.image_kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, own: torch.Tensor, own_valid: torch.Tensor,
                shared: torch.Tensor) -> torch.Tensor:
        b, p, c = x.shape
        h, d = self.heads, c // self.heads
        q = self.query(x).view(b, p, h, d) / math.sqrt(d)
        k_own, v_own = self.text_kv(own).view(b, p, -1, 2, h, d).unbind(3)  # [B, P, L, h, d]
        k_img, v_img = self.image_kv(shared).view(b, -1, 2, h, d).unbind(2)  # [B, K, h, d]
        s_own = torch.einsum("bphd,bplhd->bphl", q, k_own)
        s_own = s_own.masked_fill(~own_valid.unsqueeze(2), MASKED)
        s_img = torch.einsum("bphd,bkhd->bphk", q, k_img)
        weights = torch.cat([s_own, s_img], -1).softmax(-1)
        w_own, w_img = weights.split([s_own.shape[-1], s_img.shape[-1]], -1)
        mixed = (torch.einsum("bphl,bplhd->bphd", w_own, v_own)
                 + torch.einsum("bphk,bkhd->bphd", w_img, v_img))
        return self.out(mixed.reshape(b, p, c))


class PhraseDecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_mlp = (nn.LayerNorm(dim) for _ in range(3))
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = PhraseAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(inplace=True),
                                 nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, phrase_padding: torch.Tensor, own: torch.Tensor,
                own_valid: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        h = self.norm_self(x)
        x = x + self.self_attn(h, h, h, key_padding_mask=phrase_padding, need_weights=False)[0]
        x = x + self.cross_attn(self.norm_cross(x), own, own_valid, shared)
        return x + self.mlp(self.norm_mlp(x))


@dataclass
class PhraseOutputs:
    kernels: list[torch.Tensor]  # per layer [B, P, D]: mask kernels
    presence: list[torch.Tensor]  # per layer [B, P]: presence logits
    phrase_embed: torch.Tensor  # [B, P, D]: for the affinity with the object tokens


class PhraseDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c, d = cfg.query_dim, cfg.embed_dim
        self.start = nn.Parameter(torch.zeros(c))
        self.object_position = nn.Sequential(nn.Linear(2, c), nn.ReLU(inplace=True),
                                             nn.Linear(c, c))
        self.layers = nn.ModuleList(PhraseDecoderLayer(c, cfg.phrase_heads)
                                    for _ in range(cfg.phrase_layers))
        self.norm = nn.LayerNorm(c)
        self.kernel_head = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, d))
        self.presence_head = nn.Linear(c, 1)
        self.affinity_head = nn.Linear(c, d)

    def objects(self, object_tokens: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        """Object tokens [B, Q, C] with their masks' centroids [B, Q, 2] as positions (what the
        image graph hands the phrase graph: it depends only on the image)."""
        return object_tokens + self.object_position(centroids)

    def forward(self, own: torch.Tensor, own_valid: torch.Tensor,
                phrase_padding: torch.Tensor | None, objects: torch.Tensor,
                memory_tokens: torch.Tensor) -> PhraseOutputs:
        """`objects` from `objects()`; `phrase_padding` None when no phrase is padding."""
        weights = own_valid.to(own.dtype)
        mean = (weights.unsqueeze(-1) * own).sum(2) / weights.sum(-1, keepdim=True).clamp(min=1)
        x = mean + self.start
        shared = torch.cat([objects, memory_tokens], 1)
        kernels, presence = [], []
        for layer in self.layers:
            x = layer(x, phrase_padding, own, own_valid, shared)
            state = self.norm(x)
            kernels.append(self.kernel_head(state))
            presence.append(self.presence_head(state).squeeze(-1))
        return PhraseOutputs(kernels, presence, self.affinity_head(state))


def phrase_padding_of(spans: torch.Tensor) -> torch.Tensor:
    """[B, P, 2] spans -> [B, P] True for padding phrases (empty spans)."""
    return spans[..., 1] <= spans[..., 0]





class SplitPhraseDecoder(nn.Module):
    """The trained PhraseDecoder split by what each part depends on, for inference (the
    package's graphs and the torch backend): the same arithmetic (tests compare the two), with
    every projection of text moved to the text path (cached per caption) and every projection
    of the image moved to the image path (once per frame), so the per-frame phrase graph only
    attends.

    * `token_kv(token_feats [B, T, C])` -> [B, T, layers, 2, C]: each layer's keys and values
      of every token (the runtime gathers each phrase's own tokens from them);
    * `image_kv(objects [B, Q, C], memory [B, K, C])` -> keys, values [B, layers, h, N, d]
      (N = Q + K);
    * `forward(phrase_mean [B, P, C], own_keys, own_values [B, P, layers, h, L, d], own_bias
      [B, P, L] (0 for a phrase's tokens, MASKED for padding), image_keys, image_values)` ->
      kernels [B, P, D], presence [B, P], phrase_embed [B, P, D], after the last layer.
    """

    def __init__(self, decoder: PhraseDecoder) -> None:
        super().__init__()
        self.decoder = decoder
        first = decoder.layers[0]
        self.heads = first.cross_attn.heads
        self.dim = first.cross_attn.query.in_features
        self.head_dim = self.dim // self.heads
        self.text_kv = _stacked([layer.cross_attn.text_kv for layer in decoder.layers])
        self.image_kv_proj = _stacked([layer.cross_attn.image_kv for layer in decoder.layers])

    def token_kv(self, token_feats: torch.Tensor) -> torch.Tensor:
        b, t, _ = token_feats.shape
        return self.text_kv(token_feats).view(b, t, len(self.decoder.layers), 2, self.dim)

    def image_kv(self, objects: torch.Tensor,
                 memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shared = torch.cat([objects, memory], 1)
        b, n, _ = shared.shape
        kv = self.image_kv_proj(shared).view(b, n, len(self.decoder.layers), 2, self.heads,
                                             self.head_dim)
        kv = kv.permute(3, 0, 2, 4, 1, 5)  # [2, B, layers, h, N, d]
        return kv[0], kv[1]

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, P, C] -> [B, h, P, d]."""
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        """[B, h, P, d] -> [B, P, C]."""
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], self.dim)

    def forward(self, phrase_mean: torch.Tensor, own_keys: torch.Tensor,
                own_values: torch.Tensor, own_bias: torch.Tensor, image_keys: torch.Tensor,
                image_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        decoder = self.decoder
        scale = 1.0 / math.sqrt(self.head_dim)
        x = phrase_mean + decoder.start
        bias = own_bias.unsqueeze(2).unsqueeze(3)  # [B, P, 1, 1, L]
        for i, layer in enumerate(decoder.layers):
            h = layer.norm_self(x)
            attn = layer.self_attn
            q, k, v = (self._heads(t) for t in F.linear(h, attn.in_proj_weight,
                                                         attn.in_proj_bias).chunk(3, -1))
            mixed = torch.softmax((q * scale) @ k.transpose(-1, -2), -1) @ v
            x = x + attn.out_proj(self._merge(mixed))
            cross = layer.cross_attn
            q = self._heads(cross.query(layer.norm_cross(x))) * scale  # [B, h, P, d]
            # own tokens: per phrase [B, P, h, 1, d] @ [B, P, h, d, L] -> [B, P, h, 1, L]
            q_own = q.transpose(1, 2).unsqueeze(3)
            s_own = q_own @ own_keys[:, :, i].transpose(-1, -2) + bias
            s_img = (q @ image_keys[:, i].transpose(-1, -2)).transpose(1, 2).unsqueeze(3)
            weights = torch.cat([s_own, s_img], -1).softmax(-1)  # [B, P, h, 1, L + N]
            length = own_keys.shape[-2]
            w_own, w_img = weights[..., :length], weights[..., length:]
            mixed = (w_own @ own_values[:, :, i]).squeeze(3)  # [B, P, h, d]
            mixed = mixed + (w_img.squeeze(3).transpose(1, 2) @ image_values[:, i]).transpose(1, 2)
            x = x + cross.out(mixed.reshape(x.shape))
            x = x + layer.mlp(layer.norm_mlp(x))
        state = decoder.norm(x)
        return (decoder.kernel_head(state), decoder.presence_head(state).squeeze(-1),
                decoder.affinity_head(state))


def _stacked(linears: list[nn.Linear]) -> nn.Linear:
    """One Linear computing several Linears of the same input, their outputs concatenated."""
    out = nn.Linear(linears[0].in_features, sum(lin.out_features for lin in linears))
    with torch.no_grad():
        out.weight.copy_(torch.cat([lin.weight for lin in linears]))
        out.bias.copy_(torch.cat([lin.bias for lin in linears]))
    return out
