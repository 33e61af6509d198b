"""Backbone configuration (one validated dataclass) and the named size presets shared by all generators.

Attention layouts (every block goes through :mod:`vidgen.attention`):

* ``full``: full 3D attention in every block;
* ``spatiotemporal``: Latte's interleaved factorization, even blocks spatial ``(1, None, None)``, odd blocks
  temporal ``(None, 1, 1)``;
* ``window``: local 3D window ``window`` in every block (NATTEN-style);
* ``frame_causal``: full attention where a token sees only its own and earlier latent frames.

The autoregressive generator makes any of these token-causal (it passes ``causal="token"`` to the backbone).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Tuple

from vidgen.errors import ConfigError

LAYOUTS = ("full", "spatiotemporal", "window", "frame_causal")
TEXT_CONDITIONING = ("prefix", "cross")


@dataclass
class BackboneConfig:
    dim: int = 256
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    layout: str = "full"
    window: Tuple[int, int, int] = (3, 7, 7)
    max_grid: Tuple[int, int, int] = (16, 32, 32)  # largest (t, h, w) token grid accepted (trained extent)
    qk_norm: bool = True
    text_dim: int = 0  # width of the text encoder's hidden states; 0 = no text conditioning
    max_text_tokens: int = 16  # text prefix length (prompts are padded / truncated to it by the encoder)
    text_conditioning: str = "prefix"  # "prefix": text tokens join self-attention; "cross": cross-attention
    num_classes: int = 0  # class conditioning (0 = none); the null class for CFG is one extra row
    attention_backend: str = "auto"

    def __post_init__(self):
        self.window = tuple(self.window)
        self.max_grid = tuple(self.max_grid)
        if self.dim <= 0 or self.num_heads <= 0 or self.dim % self.num_heads:
            raise ConfigError(f"dim ({self.dim}) must be a positive multiple of num_heads ({self.num_heads})")
        if self.depth < 1:
            raise ConfigError(f"depth must be >= 1, got {self.depth}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.text_conditioning not in TEXT_CONDITIONING:
            raise ConfigError(f"text_conditioning must be one of {TEXT_CONDITIONING}, got {self.text_conditioning!r}")
        if len(self.max_grid) != 3 or not all(isinstance(g, int) and g > 0 for g in self.max_grid):
            raise ConfigError(f"max_grid must be three positive ints (t, h, w), got {self.max_grid!r}")
        if self.text_dim < 0 or self.num_classes < 0 or self.max_text_tokens < 1:
            raise ConfigError("text_dim and num_classes must be >= 0 and max_text_tokens >= 1")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def num_prefix_tokens(self) -> int:
        """Prefix tokens in every sequence: the text tokens when text joins self-attention, else none."""
        return self.max_text_tokens if self.text_dim and self.text_conditioning == "prefix" else 0

    def block_window(self, index: int) -> Optional[tuple]:
        """The attention window of block ``index`` (``None`` = full)."""
        if self.layout == "spatiotemporal":
            return (1, None, None) if index % 2 == 0 else (None, 1, 1)
        if self.layout == "window":
            return self.window
        return None

    def block_causal(self, owner_causal) -> object:
        """Causality of every block: the owner's choice ("token" for AR) wins over the layout's."""
        if owner_causal:
            return owner_causal
        return "frame" if self.layout == "frame_causal" else False

    def to_dict(self) -> dict:
        return asdict(self)


# Named sizes (DiT-style registry). Parameters of the backbone alone, without heads / embeddings:
# tiny ~0.1 M (tests), mini ~1.8 M and small ~4.8 M (CPU training), base ~38 M, large ~300 M (GPU). Which preset each
# shipped model uses, and why, is in its model card.
GENERATOR_PRESETS: dict[str, dict] = {
    "tiny": dict(dim=64, depth=2, num_heads=2),
    "mini": dict(dim=192, depth=4, num_heads=3),
    "small": dict(dim=256, depth=6, num_heads=4),
    "base": dict(dim=512, depth=12, num_heads=8),
    "large": dict(dim=1024, depth=24, num_heads=16),
}


def preset_kwargs(name: str, overrides: dict) -> dict:
    if name not in GENERATOR_PRESETS:
        raise ConfigError(f"unknown generator preset {name!r}; choose from {sorted(GENERATOR_PRESETS)}")
    return {**GENERATOR_PRESETS[name], **overrides}


#: backbone keys that shape no weight: a model may start from one that differs in them (``init_from``)
WEIGHTLESS_ARCHITECTURE_KEYS = ("max_grid", "layout", "window", "attention_backend")
