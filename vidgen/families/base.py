"""``Family``: everything vidgen needs to know about one diffusers model family, in one object per module of
:mod:`vidgen.families` (as diffusers keeps each family in its own files)::

    family = transformer_family(pipe.transformer)           # vidgen.families.registry, by the model's class
    noise = family.noise((1, 16, 21, 60, 104), generator)   # (B, C, t, h, w), drawn as the family's pipeline draws it
    pred = family.forward(gen, latents, timestep, cond)     # the diffusers model call with the family's inputs

The defaults here are what most families share (vidgen's layout ``(B, C, t, h, w)``, fp32 sampling state, the
scheduler's own timesteps and step, a text encoder called with its mask, ``encode_prompt`` returning
``(prompt_embeds, negative_prompt_embeds)``); a family overrides the methods where its diffusers pipeline differs.
A family without a ``pipeline`` / ``transformer`` is VAE-only: :class:`~vidgen.tokenizers.DiffusersVideoVAE` reads
its :class:`VaeSpec`, nothing else does. The generic code (the transformer adapter, the sampler, the pipeline, window
attention, LoRA and fine-tuning) calls these methods and holds no family names.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

import torch

from vidgen.errors import ConfigError, InvalidInputError, UnsupportedError

#: LoRA targets: the attention projections of every transformer block, named alike in diffusers' video transformers
DEFAULT_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
#: hidden size of the tiny test text encoders
TINY_TEXT_DIM = 32


@dataclass(frozen=True)
class VaeSpec:
    """What vidgen needs to know about one diffusers VAE class, read from its config (``cfg``) or instance. The
    defaults read the names most diffusers video VAEs share."""

    stats: str  # where its pipeline reads the latent statistics: "scale" (scaling/shift factor), "config", "buffers"
    width: Callable  # cfg -> activation channels per pixel at full resolution (memory estimate only)
    channels: Callable = lambda c: c.latent_channels  # cfg -> latent channels
    temporal: Callable = lambda v: v.temporal_compression_ratio  # vae -> pixel frames per latent frame
    spatial: Callable = lambda v: v.spatial_compression_ratio  # vae -> pixels per latent cell (side)
    latent_step: int = 1  # valid latent frame counts are 1 + k * latent_step
    pass_frames: Optional[Callable] = None  # (vae, tc) -> pixel frames one pass holds, if the VAE batches frames
    reciprocal_std: bool = False  # its pipelines divide by 1 / std: the same rounding in bf16


class PromptEmbeddings(NamedTuple):
    """One condition as the family's ``encode_prompt`` gives it, in the field order of vidgen's ``Conditioning``."""

    text: torch.Tensor  # (B, M, D) per-token states
    text_mask: Optional[torch.Tensor] = None  # (B, M) bool, where the transformer reads it
    pooled: Optional[torch.Tensor] = None  # (B, D') pooled embedding, where the transformer reads one


class WindowProcessor:
    """Base of the families' windowed self-attention processors: ``state.attend(q, k, v, prefix)`` is vidgen's
    window attention (:mod:`vidgen.adapters.window`)."""

    def __init__(self, state):
        self.state = state


class UnmaskedTextEncoder(torch.nn.Module):
    """A text encoder called without its attention mask (pad tokens attended), as some pipelines call T5."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask=None):
        return self.encoder(input_ids)


@dataclass(frozen=True)
class ConditionedPipeline:
    """One diffusers pipeline class of a family that samples from a condition (an image, first and last frames, a
    video), declared in ``Family.conditioned`` under its class name. The class is loaded, sampled and saved as the
    family's text-to-video class is; the family's :meth:`Family.prepare_condition` turns the call's condition into
    the sampler's start. ``None`` fields are the family's own (its text-to-video class's)."""

    inputs: tuple  # the call's condition arguments it takes, the required one first: ("image", "last_image")
    components: Optional[tuple] = None  # pipeline components beyond the standard five (all of them, not added)
    config_keys: Optional[tuple] = None  # pipeline config entries passed to its class
    call_options: Optional[tuple] = None  # the family's call options this class takes
    sampling_defaults: Optional[dict] = None  # its __call__'s num_inference_steps, guidance_scale
    default_size: Optional[tuple] = None  # its __call__'s (num_frames, height, width)
    input_defaults: dict = field(default_factory=dict)  # its __call__'s defaults of inputs: {"strength": 0.8}
    frames_from_input: bool = False  # the frame count is the input video's (its __call__ has no num_frames)
    trains: bool = False  # fine-tuning / distillation from shards with first frames is built and tested for it


@dataclass
class PreparedCondition:
    """What :meth:`Family.prepare_condition` gives the sampler (:func:`~vidgen.adapters.sampling.sample_latents`)
    for one conditioned call (or one video of a generator list), drawn in the family's pipeline's order."""

    latents: torch.Tensor  # the starting state (B, C, t, h, w), vidgen's layout, as the pipeline starts its loop
    model_kwargs: dict = field(default_factory=dict)  # extra Family.forward keyword arguments at every model call
    timesteps: Optional[torch.Tensor] = None  # the schedule to sample (a video-to-video start), else the family's
    first_index: int = 0  # the scheduler's begin index for ``timesteps``
    clamp: Optional[Callable] = None  # x -> x after every step (given frames kept exactly)
    finish: Optional[Callable] = None  # x -> x after the last step, before decoding


@dataclass(frozen=True)
class Family:
    """One diffusers model family (see the module docstring). Data fields, then the methods a family overrides."""

    name: str  # the family's name in vidgen (family_named(name), tiny_native_pipeline(name))
    pipeline: Optional[str] = None  # its diffusers text-to-video pipeline class
    transformer: Optional[str] = None  # its diffusers transformer class (subclasses match too)
    vae: Optional[str] = None  # its diffusers VAE class
    vae_spec: Optional[VaeSpec] = None
    prediction_type: str = "flow"  # "flow" (velocity, flow-matching schedulers) or "v_prediction" (DDIM / DPM)
    cfg: str = "separate"  # "separate": one pass per condition, "batched": one pass over [negative; prompt]
    max_text_tokens: int = 512  # the pipeline's default max_sequence_length
    text_mask: bool = False  # whether the transformer reads the text attention mask
    text_encoder_masked: bool = True  # whether the pipeline calls its text encoder with the mask
    sampling_defaults: dict = field(default_factory=dict)  # the pipeline's num_inference_steps, guidance_scale
    default_size: tuple = ()  # the pipeline's (num_frames, height, width)
    tiny_size: Optional[tuple] = None  # a (num_frames, height, width) the tiny test model samples and decodes exactly
    tiny_call: dict = field(default_factory=dict)  # call options the tiny test model needs (e.g. its text length)
    components: tuple = ()  # pipeline components beyond vae, transformer, scheduler, text_encoder, tokenizer
    text_components: tuple = ("text_encoder", "tokenizer")  # the components its encode_prompt runs
    config_keys: tuple = ()  # pipeline config entries (passed to its diffusers class)
    call_options: tuple = ()  # options of vidgen's pipeline call only this family takes
    prompt_options: tuple = ()  # the subset of call_options its encode_prompt takes
    lora_target_modules: tuple = DEFAULT_TARGET_MODULES
    refused: dict = field(default_factory=dict)  # vidgen feature -> why this family cannot serve it
    window_processor: Optional[type] = None  # a WindowProcessor subclass for its blocks' attn1, if windows work
    conditioned: dict = field(default_factory=dict)  # diffusers class name -> ConditionedPipeline it also loads

    # ------------------------------------------------------------------ refusals
    def refuse(self, feature: str) -> None:
        """:class:`UnsupportedError` naming ``feature`` if the family cannot serve it (:attr:`refused`)."""
        if feature in self.refused:
            raise UnsupportedError(f"{feature}: not available for the {self.pipeline or self.name} family "
                                   f"({self.refused[feature]})")

    def check_options(self, options: dict, vae=None) -> None:
        """Refuse, by name, call options (given, not None) that belong to other families."""
        bad = sorted(k for k in options if k not in self.call_options)
        if bad:
            raise UnsupportedError(f"{', '.join(bad)}: not available for the {self.pipeline} family (options of "
                                   f"other families' pipelines; this one takes {list(self.call_options) or 'none'})")

    def check_components(self, given: dict, pipeline_class: Optional[str] = None) -> None:
        """Refuse extra pipeline components (given, not None) the family's pipeline (``pipeline_class``, default
        its text-to-video one) has no place for."""
        name = pipeline_class or self.pipeline
        allowed = self.pipeline_class(name).components
        bad = sorted(k for k, v in given.items() if v is not None and k not in allowed)
        if bad:
            where = "" if name == self.pipeline else f" in {name}"
            raise ConfigError(f"{', '.join(bad)}: the {self.pipeline} family has no such component{where} (it takes "
                              f"{list(allowed) or 'none beyond the standard ones'})")

    def pipeline_class(self, name: str) -> ConditionedPipeline:
        """The complete description of the family's diffusers pipeline class ``name``: its text-to-video class
        (no condition inputs) or one of :attr:`conditioned`, with the family's values where that leaves them out."""
        if name != self.pipeline and name not in self.conditioned:
            raise ConfigError(f"{name}: not a pipeline class of the {self.pipeline} family (it has "
                              f"{[self.pipeline, *self.conditioned]})")
        spec = self.conditioned.get(name) or ConditionedPipeline(inputs=())
        own = dict(components=self.components, config_keys=self.config_keys, call_options=self.call_options,
                   sampling_defaults=self.sampling_defaults, default_size=self.default_size)
        return dataclasses.replace(spec, **{k: v for k, v in own.items() if getattr(spec, k) is None})

    # ------------------------------------------------------------------ the model
    def max_text_tokens_of(self, model) -> int:
        """The prompt length for ``model`` (a family whose transformer fixes it reads its config)."""
        return self.max_text_tokens

    def latent_channels(self, model) -> int:
        """Channels of the sampled latents (the VAE's): the transformer's ``out_channels``; its ``in_channels`` can
        be more (an image-to-video transformer also reads the condition's channels)."""
        return int(model.config.get("out_channels") or model.config.in_channels)

    def model_options(self, pipeline_config=None, vae=None) -> dict:
        """Keyword options of :meth:`forward` fixed by the pipeline's config and VAE (a ``DiffusersVideoVAE``)."""
        return {}

    def noise(self, shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        """Starting noise of ``shape`` (B, C, t, h, w), drawn in the family's layout and ``dtype`` as its pipeline
        draws it (so a seed gives diffusers' noise), returned in vidgen's layout."""
        from diffusers.utils.torch_utils import randn_tensor
        return randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)

    def inputs(self, gen, latents: torch.Tensor, cond) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, text)`` in the model's dtype: bf16 kernels round by layout, so ``x`` is contiguous as diffusers'."""
        return latents.to(gen.dtype).contiguous(), cond.text.to(gen.device, gen.dtype)

    def forward(self, gen, latents: torch.Tensor, timestep: torch.Tensor, cond, **options) -> torch.Tensor:
        """The prediction for ``latents`` (B, C, t, h, w) at ``timestep`` (B,), in vidgen's layout and the model's
        dtype: the diffusers model ``gen.model`` called with the family's inputs (``gen``: the
        ``DiffusersVideoTransformer`` adapter, whose ``.model``, ``.dtype`` and ``.device`` it reads). ``options``: :meth:`model_options`,
        then the call's (``attention_kwargs``, ...)."""
        raise UnsupportedError(f"{self.name}: a VAE-only family has no transformer vidgen can call")

    # ------------------------------------------------------------------ sampling
    def check_condition(self, native, call) -> None:
        """Refuse by name, before any work, what the family's conditioned class ``native`` (built over the folder's
        components) cannot take in ``call`` beyond the generic checks (:mod:`vidgen.pipelines.conditions`); none
        here."""

    def check_first_frame_training(self, native) -> None:
        """Refuse, by name, a conditioned class ``native`` whose model cannot be trained from a first frame alone
        (fine-tuning and distillation from shards of first frames, :mod:`vidgen.training.first_frame`)."""

    def prepare_condition(self, native, call, *, grid, batch: int, generator, device, scheduler, steps: int,
                          latents: Optional[torch.Tensor] = None) -> PreparedCondition:
        """The hook of a conditioned call (``image=`` / ``last_image=`` / ``video=`` and ``strength=``) on one of
        the family's :attr:`conditioned` classes: the start of sampling as that class's ``__call__`` builds it, for
        ``batch`` videos of the latent ``grid`` (t, h, w; with :meth:`latent_padding`) sampled at once with
        ``generator`` (each video of a generator list on its own, so a seed gives diffusers' numbers).

        ``native``: the loaded class over the pipeline's components (its own ``video_processor``, ``encode_image``,
        ``prepare_latents``, ... give exact parity); ``call``: the checked call (``call.image``, ``call.last_image``,
        ``call.video``, ``call.strength``, ``call.num_frames`` / ``height`` / ``width``); ``scheduler`` / ``steps``:
        the sampling scheduler and step count, for a start that truncates the schedule; ``latents``: the call's
        ``latents=`` (vidgen's layout), used as the class uses them. Returns a :class:`PreparedCondition`: the start
        (noise drawn, condition blended or noised), extra :meth:`forward` inputs (condition channels, image
        embeddings, a first-frame mask), the schedule, a per-step ``clamp`` and a ``finish``. A family without
        conditioned classes never gets here: the pipeline refuses the call by name first."""
        raise UnsupportedError(f"{self.name}: the {self.pipeline} family has no conditioned pipeline class")

    def sampling_settings(self, config, options: dict) -> tuple:
        """``(config, model_kwargs)`` for one pipeline call: the sampling config whose ``guidance_scale`` is the
        classifier-free scale, and :meth:`forward` options taken from the call's ``options``."""
        return config, {}

    def timesteps(self, scheduler, steps: int, grid, device) -> torch.Tensor:
        """The timesteps of ``steps`` steps on a latent ``grid`` (t, h, w)."""
        scheduler.set_timesteps(steps, device=device)
        return scheduler.timesteps

    def state_dtype(self, cond) -> torch.dtype:
        """The dtype the pipeline keeps its latents in."""
        return torch.float32

    def second_transformer_at(self, t, scheduler, pipeline_config) -> bool:
        """Whether timestep ``t`` is sampled by the pipeline's second transformer (``transformer_2``, with the
        second guidance scale), for a family whose pipeline switches over partway (``pipeline_config``: the
        pipeline's config entries, :attr:`config_keys`); never by default."""
        return False

    def step(self, scheduler, prediction, timesteps, i: int, latents, generator=None, carry=None) -> tuple:
        """One scheduler step from ``timesteps[i]`` -> ``(latents, carry)``; ``carry`` is what a multistep
        scheduler hands the next step (None otherwise)."""
        return scheduler.step(prediction, timesteps[i], latents, return_dict=False)[0], None

    def pipeline_latents(self, latents: torch.Tensor, model=None) -> torch.Tensor:
        """Latents (B, C, t, h, w) in the layout the family's diffusers pipeline takes as ``latents=`` and returns
        with ``output_type="latent"`` (``model``: its transformer, whose patch sizes some layouts pack by)."""
        return latents

    def from_pipeline_latents(self, latents: torch.Tensor, grid, model=None) -> torch.Tensor:
        """The inverse of :meth:`pipeline_latents` for a latent ``grid`` (t, h, w)."""
        return latents

    def latent_padding(self, grid, patch_size) -> int:
        """Extra first latent frames the pipeline samples (and drops before decoding) for a latent ``grid``."""
        return 0

    def dropped_frames(self, model, pipeline_class: str) -> tuple:
        """``(latent frames, pixel frames)`` the family's ``pipeline_class`` (with transformer ``model``) drops from
        the start of what it samples: of its ``output_type="latent"`` latents, of its decoded frames; none here."""
        return 0, 0

    def decodes_with_timestep(self, vae) -> bool:
        """Whether ``vae`` (the raw diffusers VAE) takes a decode timestep (``decode_timestep``)."""
        return False

    def decode(self, tokenizer, latents: torch.Tensor, num_frames: int, height: int, width: int, generator,
               options: dict) -> Optional[torch.Tensor]:
        """The frames (B, 3, T, H, W) of sampled normalized ``latents`` where the family's pipeline decodes them in
        its own way for the call's ``options`` (its :attr:`call_options` given), through ``tokenizer`` (a
        ``DiffusersVideoVAE``); None: the tokenizer's plain decode."""
        return None

    # ------------------------------------------------------------------ training
    def training_timestep(self, sigma: torch.Tensor, scheduler=None) -> torch.Tensor:
        """The timestep the transformer takes at noise levels ``sigma`` (B,) of the straight path
        ``x = (1 - sigma) x0 + sigma noise``, for training (``scheduler``: the pipeline's, whose convention it is)."""
        return sigma * 1000

    def velocity_sign(self, scheduler=None) -> float:
        """The sign of the velocity the transformer predicts, against ``noise - x0``: +1, or -1 where its scheduler
        walks the noise levels the other way."""
        return 1.0

    # ------------------------------------------------------------------ text
    def encode_prompt(self, native, prompt, negative_prompt=None, *, guidance: bool, num_videos_per_prompt: int,
                      max_text_tokens: int, device, **options) -> tuple:
        """``(prompt, negative or None)`` :class:`PromptEmbeddings` from the family's diffusers pipeline ``native``
        (its own ``encode_prompt``); with ``guidance`` the negative prompt defaults to ``""``, as in diffusers.
        ``options``: the family's prompt options, and ``image`` (a conditioned call's image, or None), which only a
        family whose text encoder reads the image uses."""
        pos, neg = native.encode_prompt(prompt, negative_prompt, do_classifier_free_guidance=guidance,
                                        num_videos_per_prompt=num_videos_per_prompt,
                                        max_sequence_length=max_text_tokens, device=device)
        return PromptEmbeddings(pos), (PromptEmbeddings(neg) if guidance else None)

    def caption_text_encoder(self, encoder):
        """``encoder`` (the pipeline folder's text encoder) called as the pipeline calls it, for caption shards."""
        return encoder if self.text_encoder_masked else UnmaskedTextEncoder(encoder)

    def caption_condition(self, hidden: torch.Tensor, mask: torch.Tensor, max_text_tokens: int) -> tuple:
        """Shard caption states (B, M, D) and mask (B, M) -> ``(states, mask or None)`` as the pipeline gives them
        to the transformer: padded to ``max_text_tokens`` with zeros (and a False mask)."""
        if hidden.shape[1] > max_text_tokens:
            raise ConfigError(f"captions of {hidden.shape[1]} tokens, more than the {max_text_tokens} the "
                              f"{self.pipeline} reads")
        pad = max_text_tokens - hidden.shape[1]
        hidden = torch.nn.functional.pad(hidden * mask[..., None].to(hidden.dtype), (0, 0, 0, pad))
        mask = torch.nn.functional.pad(mask, (0, pad), value=False)
        return hidden, (mask if self.text_mask else None)

    # ------------------------------------------------------------------ window attention, tests
    def token_grid(self, model, args, kwargs) -> Optional[tuple]:
        """The transformer's token grid (t, h, w) for a forward call, from its inputs ((B, C, t, h, w) latents)."""
        x = kwargs.get("hidden_states", args[0] if args else None)
        return tuple(int(g) // p for g, p in zip(x.shape[2:], patch_size_of(model)))

    def tiny_components(self, tokenizer, seed: int = 0) -> dict:
        """The components of a tiny random pipeline of the family, built offline around ``tokenizer`` (the offline
        MiniLM tokenizer, standing in for the family's), seeded with ``seed`` (the caller restores the global
        random state)."""
        raise InvalidInputError(f"{self.name}: no tiny test pipeline for this family")

    def tiny_conditioned_components(self, pipeline_class: str, tokenizer, seed: int = 0,
                                    variant: Optional[str] = None) -> dict:
        """As :meth:`tiny_components`, for one of the family's :attr:`conditioned` classes (keyword arguments of
        that class: components and config entries); ``variant``: one of the class's model variants the family
        names."""
        raise InvalidInputError(f"{self.name}: no tiny {pipeline_class} for this family")


def encode_prompt_with_masks(family, native, prompt, negative_prompt=None, *, guidance: bool,
                             num_videos_per_prompt: int, max_text_tokens: int, device, **options) -> tuple:
    """``Family.encode_prompt`` for a pipeline whose ``encode_prompt`` returns the states and masks of both prompts
    (LTX-Video, Mochi): the masks kept, as bool."""
    pos, pos_mask, neg, neg_mask = native.encode_prompt(
        prompt, negative_prompt, do_classifier_free_guidance=guidance, num_videos_per_prompt=num_videos_per_prompt,
        max_sequence_length=max_text_tokens, device=device)
    return PromptEmbeddings(pos, pos_mask.bool()), (PromptEmbeddings(neg, neg_mask.bool()) if guidance else None)


def patch_size_of(model) -> tuple[int, int, int]:
    """``(pt, ph, pw)`` of a diffusers video transformer: latent cells per token along t, h, w."""
    cfg = model.config
    if isinstance(cfg.patch_size, (tuple, list)):
        return tuple(int(p) for p in cfg.patch_size)
    return int(cfg.get("patch_size_t") or 1), int(cfg.patch_size), int(cfg.patch_size)


def pack_latents(x: torch.Tensor, p: int = 1, pt: int = 1) -> torch.Tensor:
    """(B, C, t, h, w) -> (B, tokens, C * pt * p * p), tokens in (t, h, w) order."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // pt, pt, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7).flatten(1, 3)


def unpack_latents(x: torch.Tensor, grid, p: int = 1, pt: int = 1) -> torch.Tensor:
    """The inverse of :func:`pack_latents` for a latent ``grid`` (t, h, w)."""
    t, h, w = grid
    b = x.shape[0]
    x = x.reshape(b, t // pt, h // p, w // p, -1, pt, p, p)
    return x.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, -1, t, h, w)


def tiny_t5(tokenizer, seed: int):
    """A 2-layer T5 encoder over ``tokenizer``'s vocabulary, as diffusers' own pipeline tests size it."""
    from transformers import T5Config, T5EncoderModel
    torch.manual_seed(seed)
    config = T5Config(vocab_size=tokenizer.vocab_size, d_model=TINY_TEXT_DIM, d_kv=8, d_ff=37, num_layers=2,
                      num_heads=4, relative_attention_num_buckets=8, decoder_start_token_id=0)
    return T5EncoderModel(config).eval()
