"""Image path: a residual CNN backbone, an FPN pixel decoder and a small query decoder.

image [B, 3, S, S] -> pixel_embed [B, D, S/stride, S/stride] and mask_embed [B, Q, D].

The network is trained on S x S letterboxed squares (the image in the top-left corner). It also
runs on a top-left crop [B, 3, H, W] of that square (H, W <= S, multiples of 16), the input of a
package built for one camera aspect (144 x 192 for 4:3 frames): every position table (coordinate
channels, the queries' memory positions) is the square's, cropped, so a pixel sees the values it
has in the square; only the padding rows or columns the crop leaves out are gone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from groundrt.model.config import ConfigError, ModelConfig


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
        """-> [stride 2 (the stem's first conv, w[0] / 2 channels), stride 4, ..., stride 32]."""
        half = self.stem[0](x)
        x = self.stem[1](half)
        features = [half]
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def coordinate_channels(x: torch.Tensor, side: int) -> torch.Tensor:
    """[B, 2, h, w] normalized x and y coordinates, so embeddings know position: those of the
    top-left h x w cells of a side x side map spanning [-1, 1]."""
    b, _, h, w = x.shape
    grid = torch.linspace(-1.0, 1.0, side, dtype=x.dtype, device=x.device)
    grid_y, grid_x = torch.meshgrid(grid[:h], grid[:w], indexing="ij")
    return torch.stack([grid_x, grid_y]).unsqueeze(0).expand(b, -1, -1, -1)


LOCALITY_GAIN = 4.0  # lets the mask MLP reach sharp bumps with moderate weights


def locality_channels(coords: torch.Tensor) -> torch.Tensor:
    """`coordinate_channels` [B, 2, h, w] -> [B, 4, h, w] fixed channels g * (1, x, y, x^2 + y^2).

    With them in pixel_embed, a mask embedding whose last four entries are
    a * (-|c|^2, 2 c_x, 2 c_y, -1) adds -a g |p - c|^2 to its logit at pixel p: a bump around any
    centre c. Linear coordinates alone only split the image by a line, which cannot isolate the
    middle one of three lookalike instances; the dot product the runtime kernels compute is
    unchanged.
    """
    radius = (coords**2).sum(1, keepdim=True)
    return LOCALITY_GAIN * torch.cat([torch.ones_like(radius), coords, radius], dim=1)


def check_input_shape(shape: tuple[int, int], size: int) -> None:
    """An input (H, W) must be a crop of the S x S square whose sides are multiples of 16."""
    if not all(0 < side <= size and side % 16 == 0 for side in shape):
        raise ConfigError(f"input {shape[0]}x{shape[1]} is not a crop of the {size}x{size} input "
                          "with sides that are multiples of 16")


class PixelDecoder(nn.Module):
    """Top-down FPN to stride 4 (or 8), then coordinates + convs -> pixel_embed [B, D, h, w];
    at `pixel_stride` 2 the stride-4 head's features are doubled and refined with the stem's
    stride-2 features."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = cfg.fpn_dim
        self.finest = 1 if cfg.pixel_stride == 8 else 0  # the stride-4 level is unused at 8
        self.size = cfg.input_size
        self.fpn_stride = max(cfg.pixel_stride, 4)
        self.memory_level = {8: 1, 16: 2}[cfg.memory_stride]
        used = cfg.widths[self.finest:]
        self.lateral = nn.ModuleList(conv_bn(w, c, kernel=1) for w in used)
        self.smooth = nn.ModuleList(conv_bn(c, c) for _ in used[:-1])
        self.to_memory = nn.Conv2d(c, cfg.query_dim, 1)
        self.locality = cfg.locality_channels
        learned = cfg.embed_dim - 4 if self.locality else cfg.embed_dim
        self.fine = cfg.pixel_stride == 2
        if self.fine:
            # 1x1 convs at stride 2: a 3x3 there would double the teacher's GFLOPs; the stem's
            # features (one 3x3 conv of the pixels) bring the edges the stride-4 map lacks
            self.head = conv_bn(c + 2, c)
            self.fine_lateral = conv_bn(cfg.widths[0] // 2, c // 2, kernel=1)
            self.fine_head = nn.Sequential(conv_bn(c + c // 2 + 2, c // 2, kernel=1),
                                           nn.Conv2d(c // 2, learned, 1))
        else:
            self.head = nn.Sequential(conv_bn(c + 2, c), nn.Conv2d(c, learned, 1))

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (pixel_embed [B, D, h, w], memory [B, C, S/m, S/m] for the queries, m the
        memory stride)."""
        half, features = features[0], features[1 + self.finest:]
        x = self.lateral[-1](features[-1])
        memory = None
        for level in range(len(features) - 2, -1, -1):
            # 2x, then cropped: a crop whose side is an odd multiple of 16 has a stride-32 map
            # with one cell more than half its stride-16 map (144 / 32 -> 5 of 9 rows)
            h, w = features[level].shape[-2:]
            doubled = (2 * x.shape[-2], 2 * x.shape[-1])
            x = F.interpolate(x, size=doubled, mode="bilinear", align_corners=False)
            if doubled != (h, w):
                x = x[..., :h, :w]
            x = self.smooth[level](x + self.lateral[level](features[level]))
            if level + self.finest == self.memory_level:
                memory = self.to_memory(x)
        coords = coordinate_channels(x, self.size // self.fpn_stride)
        pixel_embed = self.head(torch.cat([x, coords], dim=1))
        if self.fine:
            x = F.interpolate(pixel_embed, size=half.shape[-2:], mode="bilinear",
                              align_corners=False)
            coords = coordinate_channels(x, self.size // 2)
            pixel_embed = self.fine_head(torch.cat([x, self.fine_lateral(half), coords], dim=1))
        if self.locality:
            pixel_embed = torch.cat([pixel_embed, locality_channels(coords)], dim=1)
        return pixel_embed, memory


class QueryDecoder(nn.Module):
    """Q learned queries attend to the memory features -> mask_embed [B, Q, D]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c, side = cfg.query_dim, cfg.input_size // cfg.memory_stride
        self.side = side
        self.queries = nn.Parameter(torch.randn(cfg.num_queries, c) * 0.1)
        self.memory_pos = nn.Parameter(torch.randn(side * side, c) * 0.02)
        layer = nn.TransformerDecoderLayer(c, nhead=4, dim_feedforward=2 * c, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, cfg.query_layers)
        self.norm = nn.LayerNorm(c)
        self.mask_mlp = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True),
                                      nn.Linear(c, cfg.embed_dim))

    def memory_tokens(self, memory: torch.Tensor) -> torch.Tensor:
        """memory [B, C, h, w] -> tokens [B, h*w, C] with their (the square's) positions."""
        b, c, h, w = memory.shape
        position = self.memory_pos.view(self.side, self.side, c)[:h, :w].reshape(h * w, c)
        return memory.flatten(2).transpose(1, 2) + position

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """memory tokens [B, h*w, C] -> the queries' states [B, Q, C] (the object tokens)."""
        queries = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        return self.norm(self.layers(queries, tokens))

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        return self.mask_mlp(self.decode(self.memory_tokens(memory)))


class ImageEncoder(nn.Module):
    """image [B, 3, S, S] or a top-left crop [B, 3, H, W] of it (normalized)
    -> (pixel_embed [B, D, H/stride, W/stride], mask_embed [B, Q, D])."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.size = cfg.input_size
        self.backbone = Backbone(cfg)
        self.pixel_decoder = PixelDecoder(cfg)
        self.query_decoder = QueryDecoder(cfg)

    def features(self, image: torch.Tensor) -> ImageFeatures:
        """Everything the phrases need of an image (caption-independent)."""
        check_input_shape(tuple(image.shape[-2:]), self.size)
        pixel_embed, memory = self.pixel_decoder(self.backbone(image))
        memory_tokens = self.query_decoder.memory_tokens(memory)
        object_tokens = self.query_decoder.decode(memory_tokens)
        return ImageFeatures(pixel_embed, self.query_decoder.mask_mlp(object_tokens),
                             object_tokens, memory_tokens)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(image)
        return features.pixel_embed, features.mask_embed


@dataclass
class ImageFeatures:
    pixel_embed: torch.Tensor  # [B, D, h, w]
    mask_embed: torch.Tensor  # [B, Q, D]: the object tokens' mask kernels
    object_tokens: torch.Tensor  # [B, Q, C]: instance proposals (the query decoder's states)
    memory_tokens: torch.Tensor  # [B, h'*w', C]: memory features plus their positions
