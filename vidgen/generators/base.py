"""What the three generators share besides the backbone: construction from presets, conditioning, CFG dropout,
gradient checkpointing, and the checks between a generator and the tokenizer it is paired with.

The token interface: every generator takes the *tokenizer object* and does the encoding itself, so a pipeline or
trainer never branches on the generator type::

    x = gen.encode_videos(tokenizer, video)          # latents (B, C, t, h, w) or ids (B, t, h, w)
    video = gen.decode_videos(tokenizer, x, T, H, W)  # (B, 3, T, H, W), exactly the requested size
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from vidgen.errors import ConfigError, InvalidInputError, UnsupportedError
from vidgen.generators.backbone import VideoTransformerBackbone
from vidgen.generators.config import BackboneConfig, preset_kwargs
from vidgen.generators.embeddings import ConditionEmbedder, Conditioning
from vidgen.precision import autocast_dtype, execution_device
from vidgen.rng import GeneratorLike, rows
from vidgen.tokenizers.loading import StrictLoadingMixin, check_init_options
from vidgen.tokenizers.tokens import tokens_to_video, video_to_tokens

BACKBONE_KEYS = {f.name for f in dataclasses.fields(BackboneConfig)}


class GeneratorMixin(StrictLoadingMixin):
    """Mixed into each generator (with ``ModelMixin`` + ``ConfigMixin``); the subclass sets ``self.backbone``.
    ``from_pretrained`` is strict (:class:`~vidgen.tokenizers.loading.StrictLoadingMixin`)."""

    _supports_gradient_checkpointing = True
    # config keys that only shape the training loss, not the weights: a later stage may change them (``init_from``)
    training_only_config = ("cond_dropout", "task_prob")
    _no_split_modules = ["Block"]
    backbone_config: BackboneConfig

    def check_token_grid(self, grid) -> None:
        """Refuse a token grid ``(t, h, w)`` beyond what this model attends (its backbone's ``max_grid``)."""
        self.backbone.check_grid(tuple(grid))

    def _build_shared(self, architecture: Optional[dict], causal=False) -> None:
        # The config key is ``architecture`` (not ``backbone``): diffusers resolves config keys before modules.
        try:
            self.backbone_config = BackboneConfig(**(architecture or {}))
        except TypeError as err:
            raise ConfigError(f"architecture: {err}; valid keys: {sorted(BACKBONE_KEYS)}") from err
        self.cond_embed = ConditionEmbedder(self.backbone_config)
        self.backbone = VideoTransformerBackbone(self.backbone_config, causal=causal)

    @property
    def device(self) -> torch.device:
        """Where forward computes (:func:`~vidgen.precision.execution_device`): samplers put their state there."""
        return execution_device(self, super().device)

    @classmethod
    def from_preset(cls, name: str, **kwargs):
        """``cls.from_preset("small", vocab_size=4096, text_dim=384, layout="spatiotemporal")``: backbone keys
        (see :class:`BackboneConfig`) go to the backbone on top of the preset, the rest to the generator."""
        arch = {k: v for k, v in kwargs.items() if k in BACKBONE_KEYS}
        own = {k: v for k, v in kwargs.items() if k not in BACKBONE_KEYS and k != "architecture"}
        check_init_options(cls, own, f"{cls.__name__}.from_preset({name!r})")
        return cls(**own, architecture=preset_kwargs(name, {**kwargs.get("architecture", {}), **arch}))

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the model computes in right now: autocast's on its device while autocast is on, else its
        weights' dtype. KV caches are allocated in it; float inputs are cast to it."""
        return autocast_dtype(self.device.type) or self.dtype

    @property
    def num_prefix_tokens(self) -> int:
        return self.backbone_config.num_prefix_tokens

    # ------------------------------------------------------------------ conditioning
    def sample_drop(self, batch: int, generator: GeneratorLike, device) -> Optional[torch.Tensor]:
        """(B,) bool: which samples train unconditionally (classifier-free guidance dropout)."""
        p = self.config.cond_dropout
        if p <= 0:
            return None
        return rows(generator).rand(batch).to(device) < p

    def embed_condition(self, cond: Optional[Conditioning], batch: int, drop=None):
        """-> (prefix tokens or None, cross-attention context or None, adaLN vector (B, d))."""
        tokens, vec = self.cond_embed(cond or Conditioning(), batch, drop)
        if tokens is not None and self.backbone_config.text_conditioning == "cross":
            return None, tokens, vec
        return tokens, None, vec

    # ------------------------------------------------------------------ diffusers-style switches
    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None) -> None:
        self.backbone.gradient_checkpointing = enable
        if gradient_checkpointing_func is not None:
            self.backbone._gradient_checkpointing_func = gradient_checkpointing_func
        elif enable:
            from torch.utils.checkpoint import checkpoint
            self.backbone._gradient_checkpointing_func = lambda fn, *a: checkpoint(fn, *a, use_reentrant=False)


class LatentTokensMixin:
    """Token interface of the latent generators (flow, block-causal flow): VAE latents ``(B, C, t, h, w)``."""

    @classmethod
    def tokenizer_kwargs(cls, tokenizer) -> dict:
        """Constructor arguments that pair a new generator with ``tokenizer``."""
        cls._check_kind(tokenizer)
        return {"in_channels": int(tokenizer.config.latent_channels)}

    @classmethod
    def _check_kind(cls, tokenizer) -> None:
        if not hasattr(tokenizer, "normalize_latents"):
            raise InvalidInputError(f"tokenizer: {cls.__name__} works on continuous latents and needs a "
                                    f"CausalVAE or a diffusers video VAE wrapped as "
                                    f"vidgen.tokenizers.DiffusersVideoVAE(vae), got {type(tokenizer).__name__}")

    def check_tokenizer(self, tokenizer) -> None:
        self._check_kind(tokenizer)
        if tokenizer.config.latent_channels != self.config.in_channels:
            raise InvalidInputError(f"tokenizer: {tokenizer.config.latent_channels} latent channels, but the "
                                    f"generator takes in_channels={self.config.in_channels}")

    @torch.no_grad()
    def encode_videos(self, tokenizer, video: torch.Tensor, chunk_frames: Optional[int] = None) -> torch.Tensor:
        """Video -> normalized latents (the posterior mode), ``(B, C, t, h, w)``."""
        self.check_tokenizer(tokenizer)
        return video_to_tokens(tokenizer, video, chunk_frames)

    @torch.no_grad()
    def decode_videos(self, tokenizer, latents: torch.Tensor, num_frames: int, height: int, width: int,
                      chunk_frames: Optional[int] = None) -> torch.Tensor:
        self.check_tokenizer(tokenizer)
        return tokens_to_video(tokenizer, latents, num_frames, height, width, chunk_frames)

    def check_latents(self, latents, name: str = "latents") -> None:
        c = self.config.in_channels
        if not isinstance(latents, torch.Tensor) or latents.dim() != 5 or latents.shape[1] != c:
            raise InvalidInputError(f"{name} must have shape (B, {c}, t, h, w), got "
                                    f"{tuple(getattr(latents, 'shape', ())) or type(latents).__name__}")
        if not latents.is_floating_point():
            raise InvalidInputError(f"{name} must be a float tensor, got {latents.dtype}")


class DiscreteTokensMixin:
    """Token interface of the id-based generators (masked, autoregressive)."""

    @classmethod
    def tokenizer_kwargs(cls, tokenizer) -> dict:
        """Constructor arguments that pair a new generator with ``tokenizer``."""
        cls._check_kind(tokenizer)
        return {"vocab_size": int(tokenizer.vocab_size)}

    @classmethod
    def _check_kind(cls, tokenizer) -> None:
        if not (hasattr(tokenizer, "tokenize") and hasattr(tokenizer, "vocab_size")):
            raise InvalidInputError(f"tokenizer: {cls.__name__} works on token ids and needs a discrete "
                                    f"tokenizer (CausalVQVAE), got {type(tokenizer).__name__}")

    def check_tokenizer(self, tokenizer) -> None:
        self._check_kind(tokenizer)
        if getattr(tokenizer.config, "num_quantizers", 1) != 1:
            raise UnsupportedError("tokenizer: residual quantizers (num_quantizers > 1) are not supported by the "
                                   "generators yet")
        if tokenizer.vocab_size != self.config.vocab_size:
            raise InvalidInputError(f"tokenizer: vocab_size {tokenizer.vocab_size} does not match the generator's "
                                    f"vocab_size {self.config.vocab_size}")

    def check_ids(self, ids: torch.Tensor, name: str = "ids", allow_special: bool = False) -> None:
        if not isinstance(ids, torch.Tensor) or ids.dim() != 4 or ids.dtype != torch.long:
            raise InvalidInputError(f"{name} must be a (B, t, h, w) long tensor, got "
                                    f"{getattr(ids, 'dtype', type(ids).__name__)} {tuple(getattr(ids, 'shape', ()))}")
        top = self.config.vocab_size + (1 if allow_special else 0)
        if ids.numel() and (ids.min() < 0 or ids.max() >= top):
            raise InvalidInputError(f"{name} must be in [0, {top}), got [{ids.min().item()}, {ids.max().item()}]")

    def load_related(self, source, differ: list[str]) -> bool:
        """``init_from`` a model of this class whose configuration differs only in ``patch_size``
        (:meth:`load_other_ids`). False otherwise (the caller then reports the difference)."""
        if differ == ["patch_size"] and type(source) is type(self):
            self.load_other_ids(source)
            return True
        return False

    @torch.no_grad()
    def load_other_ids(self, source) -> None:
        """Start from ``source``: the same model trained on another tokenizer's ids of the same vocabulary size,
        grouped into another patch of ids per backbone token (e.g. 8x8-pixel codes one per token -> 4x4-pixel codes
        1x2x2 per token: the same backbone grid, so each token still covers the same pixels and frames).

        The backbone and the conditioning are copied. The ids mean other things now, so their embeddings and the
        head start fresh, except the special id (MASK / BOS): in every slot of the patch its embedding is the
        source's divided by the patch size, so a token whose ids are all special enters the backbone exactly as the
        source's special token did (a fully masked clip starts from what the source learned)."""
        keep = {k: v for k, v in source.state_dict().items() if not k.startswith(("token_embed.", "head."))}
        keep["token_embed.weight"] = table = self.token_embed.weight.detach().clone()
        special, rows = self.config.vocab_size, self.config.vocab_size + 1
        table[special::rows] = source.token_embed.weight[special::rows].sum(0) / self.patch.size
        keep["head.weight"], keep["head.bias"] = self.head.weight.detach().clone(), self.head.bias.detach().clone()
        self.load_state_dict(keep)

    @torch.no_grad()
    def encode_videos(self, tokenizer, video: torch.Tensor, chunk_frames: Optional[int] = None) -> torch.Tensor:
        self.check_tokenizer(tokenizer)
        return video_to_tokens(tokenizer, video, chunk_frames)

    @torch.no_grad()
    def decode_videos(self, tokenizer, ids: torch.Tensor, num_frames: int, height: int, width: int,
                      chunk_frames: Optional[int] = None) -> torch.Tensor:
        self.check_tokenizer(tokenizer)
        self.check_ids(ids)
        return tokens_to_video(tokenizer, ids, num_frames, height, width, chunk_frames)


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be an int >= 1, got {value!r}")


def check_story(story_prob, story_context: int) -> None:
    """The story-training options (:func:`story_rows`): a probability and a whole number of latent frames."""
    if isinstance(story_prob, bool) or not isinstance(story_prob, (int, float)) or not 0 <= story_prob <= 1:
        raise InvalidInputError(f"story_prob must be a number in [0, 1], got {story_prob!r}")
    check_positive_int("story_context", story_context)


def story_rows(generator: GeneratorLike, batch: int, frames: int, story_prob: float, story_context: int,
               device) -> Optional[torch.Tensor]:
    """Story training: (B,) bool, the clips whose first ``story_context`` latent frames become the last ones of the
    next clip in the batch (another caption), given and not scored, as a story's chunk is given the chunk before it
    (:mod:`vidgen.pipelines.story`); None when ``story_prob`` is 0 or the batch has one clip (nothing is drawn)."""
    if story_prob <= 0 or batch < 2:
        return None
    if story_context >= frames:
        raise InvalidInputError(f"story_context {story_context} must be below the clips' {frames} latent frames")
    return (rows(generator).rand(batch) < story_prob).to(device)


def check_steps(num_inference_steps) -> None:
    check_positive_int("num_inference_steps", num_inference_steps)


def per_sample_mean(values: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (B, ...) over each sample's positions weighted by ``counted`` (same shape; 0 = not counted),
    then over samples: the same loss however the batch is split over processes."""
    counted = counted.to(values.dtype)
    return ((values * counted).flatten(1).sum(1) / counted.flatten(1).sum(1).clamp(min=1e-12)).mean()


def check_loss_weight(weight, shape: tuple) -> None:
    """A loss ``weight`` is None or a finite, non-negative float tensor of ``shape`` (B, t, h, w).

    Per-position loss weights are a feature for users' own data (emphasise a region, e.g. a foreground mask, or skip
    padding) without writing a loss; no shipped recipe uses them (tests/unit/test_generators.py checks the weighted mean)."""
    if weight is None:
        return
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise InvalidInputError(f"weight must be a float tensor of shape {tuple(shape)}, got {type(weight).__name__}")
    if tuple(weight.shape) != tuple(shape):
        raise InvalidInputError(f"weight must have shape {tuple(shape)} (batch, latent grid), "
                                f"got {tuple(weight.shape)}")
    if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
        raise InvalidInputError("weight must be finite and >= 0")
