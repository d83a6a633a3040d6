"""Model configuration: one dataclass from which the teacher and the student are both built."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from groundrt.errors import GroundrtError


class ConfigError(GroundrtError, ValueError):
    """A model configuration is malformed or does not match a checkpoint."""


@dataclass(frozen=True)
class ModelConfig:
    # image path
    input_size: int = 256  # square letterboxed input, pixels
    widths: tuple[int, ...] = (24, 48, 96, 160)  # backbone channels at strides 4, 8, 16, 32
    depths: tuple[int, ...] = (1, 2, 2, 1)  # residual blocks per stage
    fpn_dim: int = 64  # channels of the pixel decoder
    embed_dim: int = 64  # D of pixel_embed [D, h, w] and mask_embed [Q, D]
    pixel_stride: int = 4  # stride of pixel_embed (2, 4 or 8)
    locality_channels: bool = False  # the last 4 channels of pixel_embed: 1, x, y, x^2 + y^2
    memory_stride: int = 16  # stride of the features the queries attend to (8 or 16)
    num_queries: int = 24  # Q
    query_dim: int = 128
    query_layers: int = 2
    # text path
    vocab_size: int = 256
    text_dim: int = 128
    text_layers: int = 2
    text_heads: int = 4
    max_tokens: int = 128
    # phrase decoder (network v2): each phrase is a query over the object tokens and the image
    # memory with its own mask kernel and presence score; 0 = v1 (a phrase picks query masks)
    phrase_layers: int = 0
    phrase_heads: int = 4
    # grounding
    plural_threshold: float = 0.5  # selection probability above which a plural takes a query
    presence_threshold: float = 0.5  # presence probability above which a phrase is found

    def __post_init__(self) -> None:
        if len(self.widths) != 4 or len(self.depths) != 4:
            raise ConfigError("widths and depths need 4 entries (strides 4, 8, 16, 32)")
        if self.pixel_stride not in (2, 4, 8):
            raise ConfigError(f"pixel_stride must be 2, 4 or 8, not {self.pixel_stride}")
        if self.memory_stride not in (8, 16):
            raise ConfigError(f"memory_stride must be 8 or 16, not {self.memory_stride}")
        if self.locality_channels and self.embed_dim <= 4:
            raise ConfigError("locality_channels needs embed_dim > 4")
        if self.phrase_layers < 0 or self.query_dim % self.phrase_heads:
            raise ConfigError("phrase_layers must be >= 0 and query_dim a multiple of "
                              "phrase_heads")
        if self.input_size % 32:
            raise ConfigError(f"input_size must be a multiple of 32, not {self.input_size}")

    @property
    def phrase_queries(self) -> bool:
        """Network v2: phrases are queries of their own (else v1: they pick query masks)."""
        return self.phrase_layers > 0

    @property
    def text_out_dim(self) -> int:
        """Width of the text path's token features: D in v1 (pooled into phrase embeddings),
        the decoder width in v2 (the phrase decoder reads every token)."""
        return self.query_dim if self.phrase_queries else self.embed_dim

    @property
    def input_shape(self) -> tuple[int, int]:
        """(h, w) of the square the network is trained on."""
        return (self.input_size, self.input_size)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"unknown model config keys: {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"model config missing: {path}")
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"model config {path} is malformed: {exc}") from exc


_V2 = {"phrase_layers": 3, "locality_channels": True}

PRESETS = {
    "teacher": ModelConfig(),
    # 0.31 GFLOPs, 22% of the teacher's 1.40 (input 192 alone is 0.38: over the 25% budget)
    "student": ModelConfig(input_size=192, widths=(16, 32, 64, 96), depths=(1, 1, 2, 1),
                           fpn_dim=40, embed_dim=48, query_dim=96, text_dim=96),
    "tiny": ModelConfig(input_size=64, widths=(8, 8, 16, 16), depths=(1, 1, 1, 1),
                        fpn_dim=16, embed_dim=16, num_queries=8, query_dim=32, query_layers=1,
                        vocab_size=128, text_dim=32, text_layers=1, text_heads=2,
                        max_tokens=64),
}
# network v2: the same image and text paths, phrases decoded as queries of their own
PRESETS.update({f"{name}-v2": replace(cfg, **_V2) for name, cfg in list(PRESETS.items())})
PRESETS["tiny-v2"] = replace(PRESETS["tiny-v2"], phrase_layers=2, phrase_heads=2)
