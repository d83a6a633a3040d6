"""Image path: a residual CNN backbone, an FPN pixel decoder and a small query decoder.

image [B, 3, S, S] -> pixel_embed [B, D, S/stride, S/stride] and mask_embed [B, Q, D].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from groundrt.model.config import ModelConfig


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, act: bool = True):
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
              nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels),
                                  conv_bn(channels, channels, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class Backbone(nn.Module):
    """Features at strides 4, 8, 16, 32 with `cfg.widths` channels."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = cfg.widths
        self.stem = nn.Sequential(conv_bn(3, w[0] // 2, stride=2), conv_bn(w[0] // 2, w[0],
                                                                           stride=2))
        self.stages = nn.ModuleList()
        for i, (width, depth) in enumerate(zip(w, cfg.depths, strict=True)):
            down = [] if i == 0 else [conv_bn(w[i - 1], width, stride=2)]
            self.stages.append(nn.Sequential(*down, *[BasicBlock(width) for _ in range(depth)]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def coordinate_channels(x: torch.Tensor, bands: int = 0) -> torch.Tensor:
    """[B, 2 + 4 bands, h, w]: x and y in [-1, 1], then sin and cos of 2^k pi x and y.

    Raw coordinates let a linear mask logit split the image by a line; the sin/cos bands
    (k = 0 .. bands - 1) let `mask_embed . pixel_embed` place a bump around any one instance,
    which two lookalike instances need to get separate masks.
    """
    b, _, h, w = x.shape
    ys = torch.linspace(-1.0, 1.0, h, dtype=x.dtype, device=x.device)
    xs = torch.linspace(-1.0, 1.0, w, dtype=x.dtype, device=x.device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    channels = [grid_x, grid_y]
    for k in range(bands):
        for grid in (grid_x, grid_y):
            channels += [torch.sin(grid * (math.pi * 2**k)), torch.cos(grid * (math.pi * 2**k))]
    return torch.stack(channels).unsqueeze(0).expand(b, -1, -1, -1)


class PixelDecoder(nn.Module):
    """Top-down FPN to `pixel_stride`, then coordinates + convs -> pixel_embed [B, D, h, w]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = cfg.fpn_dim
        self.finest = 0 if cfg.pixel_stride == 4 else 1  # the stride-4 level is unused at 8
        used = cfg.widths[self.finest:]
        self.lateral = nn.ModuleList(conv_bn(w, c, kernel=1) for w in used)
        self.smooth = nn.ModuleList(conv_bn(c, c) for _ in used[:-1])
        self.to_memory = nn.Conv2d(c, cfg.query_dim, 1)
        self.coord_bands = cfg.coord_bands
        self.head = nn.Sequential(conv_bn(c + 2 + 4 * cfg.coord_bands, c),
                                  nn.Conv2d(c, cfg.embed_dim, 1))

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (pixel_embed [B, D, h, w], stride-16 memory [B, C, S/16, S/16] for the queries)."""
        features = features[self.finest:]
        x = self.lateral[-1](features[-1])
        memory = None
        for level in range(len(features) - 2, -1, -1):
            x = F.interpolate(x, size=features[level].shape[-2:], mode="bilinear",
                              align_corners=False)
            x = self.smooth[level](x + self.lateral[level](features[level]))
            if level + self.finest == 2:  # stride 16
                memory = self.to_memory(x)
        x = torch.cat([x, coordinate_channels(x, self.coord_bands)], dim=1)
        return self.head(x), memory


class QueryDecoder(nn.Module):
    """Q learned queries attend to the stride-16 features -> mask_embed [B, Q, D]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c, side = cfg.query_dim, cfg.input_size // 16
        self.queries = nn.Parameter(torch.randn(cfg.num_queries, c) * 0.1)
        self.memory_pos = nn.Parameter(torch.randn(side * side, c) * 0.02)
        layer = nn.TransformerDecoderLayer(c, nhead=4, dim_feedforward=2 * c, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, cfg.query_layers)
        self.norm = nn.LayerNorm(c)
        self.mask_mlp = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True),
                                      nn.Linear(c, cfg.embed_dim))

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        b = memory.shape[0]
        tokens = memory.flatten(2).transpose(1, 2) + self.memory_pos  # [B, h*w, C]
        queries = self.queries.unsqueeze(0).expand(b, -1, -1)
        return self.mask_mlp(self.norm(self.layers(queries, tokens)))


class MaskPooling(nn.Module):
    """Refines each mask embedding with what lies under its own mask (mask-pooled features).

    w_q = sigmoid(mask_embed_q . pixel_embed) is the query's soft mask; the mean of
    [pixel_embed; x; y] under w_q (its appearance and soft centroid) and the embedding itself
    go through an MLP whose output is added to the embedding. It is Mask2Former's masked
    attention reduced to one pooling step: the query sees its instance, not the whole image,
    and its position enters the embedding the phrases are compared with.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.mlp = nn.Sequential(nn.Linear(2 * d + 2, cfg.query_dim), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.query_dim, d))
        # zero-initialized output: training starts from the unrefined embeddings (the first
        # try, with a default init, started far worse: 0.659 vs 0.735 AR after one epoch)
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, mask_embed: torch.Tensor, pixel_embed: torch.Tensor) -> torch.Tensor:
        """mask_embed [B, Q, D], pixel_embed [B, D, h, w] -> refined mask_embed [B, Q, D]."""
        features = torch.cat([pixel_embed, coordinate_channels(pixel_embed)], dim=1).flatten(2)
        weights = torch.sigmoid(mask_embed @ pixel_embed.flatten(2))  # [B, Q, h*w]
        # +1 keeps a query with an empty mask finite (a pixel's weight is at most 1)
        pooled = (weights @ features.transpose(1, 2)) / (weights.sum(-1, keepdim=True) + 1.0)
        return mask_embed + self.mlp(torch.cat([mask_embed, pooled], dim=-1))


class ImageEncoder(nn.Module):
    """image [B, 3, S, S] (normalized) -> (pixel_embed [B, D, h, w], mask_embed [B, Q, D])."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.backbone = Backbone(cfg)
        self.pixel_decoder = PixelDecoder(cfg)
        self.query_decoder = QueryDecoder(cfg)
        self.mask_pooling = MaskPooling(cfg) if cfg.mask_pooling else None

    def forward(self, image: torch.Tensor,
                query_decoder: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`query_decoder` replaces the trained one (export passes its folded equivalent)."""
        pixel_embed, memory = self.pixel_decoder(self.backbone(image))
        mask_embed = (query_decoder or self.query_decoder)(memory)
        if self.mask_pooling is not None:
            mask_embed = self.mask_pooling(mask_embed, pixel_embed)
        return pixel_embed, mask_embed
