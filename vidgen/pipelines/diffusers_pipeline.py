"""``DiffusersVideoPipeline``: a diffusers video pipeline folder (the pipeline class of a family of
:mod:`vidgen.families`) as a vidgen pipeline, a sibling of :class:`~vidgen.pipelines.FlowVideoPipeline` on the same
base and ``__call__`` recipe::

    pipe = load_pipeline("Wan2.1-T2V-1.3B-Diffusers")             # the folder diffusers' WanPipeline loads
    frames = pipe("a cat surfing", num_frames=81, height=480, width=832).frames
    pipe.save_pretrained("out")                                     # WanPipeline.from_pretrained("out") loads it

Its parts are the folder's own: the transformer (``pipe.transformer``, the diffusers model; vidgen samples and
trains it through :attr:`flow_generator`, a :class:`~vidgen.generators.DiffusersVideoTransformer`), the VAE (used
through :class:`~vidgen.tokenizers.DiffusersVideoVAE`, so any frame count is exact), the text encoder(s),
tokenizer(s) and scheduler. Sampling follows the family's diffusers pipeline step for step
(:mod:`vidgen.adapters.sampling`): with the same prompt, ``latents``, scheduler and steps the frames are diffusers'
own. A folder of one of the family's conditioned classes (``WanImageToVideoPipeline``, ...: ``Family.conditioned``,
:mod:`.diffusers_classes`) takes that class's ``image=`` / ``last_image=`` / ``video=`` / ``strength=`` and saves as
that class, with its extra components (image encoder, image processor). Prompts are encoded by the family's own
``encode_prompt``. Features the family cannot serve (stories and long videos, which need a causal stream decoder;
conditioning frames; class labels; guidance intervals; other families' options) are refused by name before any
work. ``sp_size`` splits the tokens with diffusers' context parallelism (:mod:`.diffusers_parallel`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import diffusers
import torch

from vidgen.errors import ConfigError, InvalidInputError, UnsupportedError
from vidgen.families import PIPELINE_FAMILIES, transformer_family
from vidgen.adapters.transformer import DiffusersVideoTransformer
from vidgen.generators.embeddings import Conditioning
from vidgen.generators.flow import FlowSamplingConfig
from vidgen.generators.sampling_config import UNSET
from vidgen.pipelines.base import CHECKED_INPUTS, VideoPipelineBase
from vidgen.pipelines.call import DiffusersCall, sampling_entry
from vidgen.pipelines.diffusers_cache import DiffusersCacheMixin
from vidgen.pipelines.conditions import check_conditions, condition_defaults, given_conditions
from vidgen.pipelines.diffusers_classes import (NATIVE_PIPELINES, REFUSED, check_class_options, family_inputs,
                                                native_class_name)
from vidgen.pipelines.folder_weights import check_folder_weights, check_no_meta_tensors, fused_adapters
from vidgen.pipelines.output import per_sample, to_output
from vidgen.precision import dtype_argument


class DiffusersVideoPipeline(DiffusersCacheMixin, VideoPipelineBase):
    """A diffusers video pipeline's components sampled by vidgen as the family's pipeline samples them (see the
    module docstring)."""

    _optional_components = ["text_encoder", "tokenizer", "transformer_2", "text_encoder_2", "tokenizer_2",
                            "image_encoder", "image_processor"]
    bf16_pays_on_cpu = True
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    sampling_config_class = FlowSamplingConfig
    frame_axis = 2  # latents (B, C, t, h, w)
    story_refuses = ()  # stories are refused outright (stream)
    continuation_refusal = REFUSED["conditioning_frames"]
    supports_sequence_parallel = True  # through diffusers' context parallelism (.diffusers_parallel)

    def __init__(self, vae, transformer, scheduler, text_encoder=None, tokenizer=None, transformer_2=None,
                 text_encoder_2=None, tokenizer_2=None, image_encoder=None, image_processor=None,
                 boundary_ratio: Optional[float] = None, expand_timesteps: bool = False,
                 pipeline_class: Optional[str] = None):
        VideoPipelineBase.__init__(self)
        from vidgen.tokenizers import DiffusersVideoVAE
        vae = DiffusersVideoVAE.unwrap(vae) if vae is not None else None
        transformer = transformer.model if isinstance(transformer, DiffusersVideoTransformer) else transformer
        family = transformer_family(transformer) if transformer is not None else None
        if family is None:
            raise ConfigError(f"transformer: {type(transformer).__name__} is not a supported diffusers video "
                              f"transformer ({', '.join(sorted(f.transformer for f in PIPELINE_FAMILIES))})")
        extra = dict(transformer_2=transformer_2, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                     image_encoder=image_encoder, image_processor=image_processor)
        family.check_components(extra, pipeline_class)  # pipeline_class: None (text-to-video) or a conditioned one
        self.register_modules(vae=vae, transformer=transformer, scheduler=scheduler, text_encoder=text_encoder,
                              tokenizer=tokenizer, **extra)
        self.register_to_config(boundary_ratio=boundary_ratio, expand_timesteps=expand_timesteps,
                                pipeline_class=pipeline_class if pipeline_class != family.pipeline else None)
        if vae is not None:
            self.flow_generator.check_tokenizer(self.video_tokenizer)

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_native(cls, native) -> "DiffusersVideoPipeline":
        """The vidgen pipeline over the components of a diffusers pipeline object (shared, not copied): one of the
        family's classes, its text-to-video one or a conditioned one, whose class the pipeline keeps."""
        family = transformer_family(native.components.get("transformer"))
        name = type(native).__name__
        spec = family.pipeline_class(name) if family is not None else None
        names = ("vae", "transformer", "scheduler", "text_encoder", "tokenizer") + (spec.components if spec else ())
        parts = {k: v for k, v in native.components.items() if k in names}
        extra = {k: native.config.get(k) for k in (spec.config_keys if spec else ()) if native.config.get(k)}
        return cls(**parts, **extra, pipeline_class=name if family is not None else None)

    family = property(lambda self: transformer_family(self.transformer))

    @property
    def pipeline_class_name(self) -> str:
        """The folder's diffusers class: the family's text-to-video one, or a conditioned one it came with."""
        return self.config.get("pipeline_class") or self.family.pipeline

    @property
    def class_spec(self):
        """The family's ``ConditionedPipeline`` of :attr:`pipeline_class_name` (inputs, components, defaults)."""
        return self.family.pipeline_class(self.pipeline_class_name)

    @property
    def native_class(self) -> type:
        """The diffusers pipeline class this pipeline's folder is written for."""
        return getattr(diffusers, self.pipeline_class_name)

    def native(self):
        """The folder's diffusers pipeline class over the same components (nothing is copied): what
        :meth:`save_pretrained` writes, and what loads LoRAs (``pipe.native().load_lora_weights(...)``)."""
        spec = self.class_spec
        parts = dict(vae=self.vae, transformer=self.transformer, scheduler=self.scheduler,
                     text_encoder=self.text_encoder, tokenizer=self.tokenizer)
        parts.update({k: getattr(self, k, None) for k in spec.components})
        parts.update({k: self.config.get(k) for k in spec.config_keys})
        return self.native_class(**parts)

    def load_lora_weights(self, *args, **kwargs):
        """A LoRA in diffusers' format into the transformer, by the family's own loader (diffusers'
        ``load_lora_weights``, e.g. a ``run_dir/final`` of :mod:`vidgen.training.finetune`)."""
        return self.native().load_lora_weights(*args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """The folder the diffusers pipeline class loads (``model_index.json`` names it: the class the folder came
        with, image encoder and processor included), plus ``sampling_config.json``. A loaded LoRA is saved fused
        into the weights (the pipeline keeps it unfused)."""
        with fused_adapters(*self.components.values()):
            self.native().save_pretrained(save_directory, *args, **kwargs)
        self.sampling_config.save_pretrained(save_directory)

    @property
    def sampling_config(self) -> FlowSamplingConfig:
        """The folder's ``sampling_config.json``, else the family's diffusers defaults (steps, guidance)."""
        if getattr(self, "_sampling_config", None) is None:
            self._sampling_config = FlowSamplingConfig(**self.class_spec.sampling_defaults)
        return self._sampling_config

    @sampling_config.setter
    def sampling_config(self, config) -> None:
        VideoPipelineBase.sampling_config.fset(self, config)

    # ------------------------------------------------------------------ components as vidgen sees them
    @property
    def flow_generator(self) -> DiffusersVideoTransformer:
        """The transformer as a vidgen flow generator (wrapped once; again when the component is replaced)."""
        return self._wrapped("transformer")

    def _wrapped(self, name: str) -> Optional[DiffusersVideoTransformer]:
        model = getattr(self, name, None)
        if model is None:
            return None
        cache = self.__dict__.setdefault("_flow_generators", {})
        if name not in cache or cache[name].model is not model:
            cache[name] = DiffusersVideoTransformer(model, noise_scheduler=self.scheduler)
        gen = cache[name]
        gen.noise_scheduler = self.scheduler
        gen.configure(self.config, self.video_tokenizer if self.vae is not None else None)
        return gen

    @property
    def window(self) -> int:
        """Latent frames sampled at once: the whole video (no chunked long videos for these families)."""
        return 1 << 30

    @property
    def default_size(self) -> tuple[int, int, int]:
        """``(num_frames, height, width)`` of the diffusers pipeline class's defaults."""
        return self.class_spec.default_size

    # ------------------------------------------------------------------ prompts
    def max_text_tokens(self) -> int:
        """The family's prompt length (fixed by the transformer in some families)."""
        return self.flow_generator.max_text_tokens

    def encode_prompt(self, prompt, negative_prompt=None, num_videos_per_prompt: int = 1, prompt_embeds=None,
                      negative_prompt_embeds=None, max_text_tokens: Optional[int] = None, guidance: bool = True,
                      image=None, **options):
        """The family's diffusers ``encode_prompt`` -> ``(prompt_embeds, negative_prompt_embeds)`` as vidgen
        :class:`~vidgen.generators.Conditioning` (per-token states; the mask, pooled embedding where its transformer
        reads them). Under ``guidance`` the negative prompt defaults as its pipeline's (``""`` for most). ``image``:
        the image its text encoder reads (HunyuanVideo I2V). ``options``: its prompt options (``prompt_options``)."""
        if prompt_embeds is not None:
            return prompt_embeds, negative_prompt_embeds
        self._check_components(*self.family.text_components)
        self.family.check_options(options)
        pos, neg = self.family.encode_prompt(self.native(), prompt, negative_prompt, guidance=guidance,
                                             num_videos_per_prompt=num_videos_per_prompt,
                                             max_text_tokens=max_text_tokens or self.max_text_tokens(),
                                             device=self.flow_generator.device, image=image, **options)
        return Conditioning(*pos), (Conditioning(*neg) if neg is not None else None)

    # ------------------------------------------------------------------ sampling: the recipe's hooks
    def _refuse(self, given: dict) -> None:
        bad = [name for name, value in given.items() if value is not None and value is not UNSET]
        if bad:
            raise UnsupportedError(f"{', '.join(bad)}: not available for the {self.family.pipeline} family "
                                   f"({'; '.join(REFUSED[b] for b in bad)})")

    def _generate(self, call):
        """``sp_size`` by diffusers' context-parallel engine on the transformer(s) for the call
        (:mod:`.diffusers_parallel`: Ulysses, or ring where the heads do not divide), around vidgen's recipe."""
        from vidgen.pipelines.diffusers_parallel import context_parallel
        with context_parallel(self, call.sp_size):
            return super()._generate(call.replace(sp_size=1))

    def stream(self, prompt, **kwargs):
        raise UnsupportedError(f"stories and long videos (stream, prompt schedules): not available for the "
                               f"{self.family.pipeline} family ({REFUSED['context_frames']}); sample the whole "
                               "video in one call")

    @sampling_entry
    def __call__(self, prompt=None, negative_prompt=None, num_frames: Optional[int] = None,
                 height: Optional[int] = None, width: Optional[int] = None, num_inference_steps: int = UNSET,
                 guidance_scale: float = UNSET, num_videos_per_prompt: int = 1, generator=None,
                 latents: Optional[torch.Tensor] = None, prompt_embeds=None, negative_prompt_embeds=None,
                 output_type: str = "np", return_dict: bool = True, callback_on_step_end: Optional[Callable] = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
                 decode_chunk_frames: Optional[int] = None, max_sequence_length: Optional[int] = None,
                 frame_rate: Optional[float] = None, guidance_scale_2: Optional[float] = None,
                 true_cfg_scale: Optional[float] = None, prompt_template: Optional[dict] = None,
                 attention_kwargs: Optional[dict] = None, decode_timestep: float = 0.0,
                 decode_noise_scale: Optional[float] = None, class_labels=None, conditioning_frames=None,
                 conditioning_latent_indices=None, context_frames=None, guidance_interval=UNSET,
                 image=None, last_image=None, video=None, strength: Optional[float] = None, sp_size: int = 1):
        """Text -> video as the family's diffusers pipeline samples it. ``num_frames`` / ``height`` / ``width``
        default to the family's (:attr:`default_size`); any frame count is decoded exactly. ``latents``: starting
        noise (B, C, t, h, w) in vidgen's layout. Settings left out come from :attr:`sampling_config`.
        ``frame_rate``, ``guidance_scale_2`` (the second transformer's guidance), ``true_cfg_scale`` (CFG apart from
        an embedded ``guidance_scale``), ``prompt_template``, ``decode_timestep`` / ``decode_noise_scale``
        (timestep-conditioned decoders): options of some families' pipelines, as those apply them, and refused by
        name for the others (``Family.call_options``). The arguments after them exist for vidgen's other pipelines
        and are refused here by name. ``sp_size``: each clip's tokens split over that many processes of a
        distributed launch by diffusers' context parallelism (:mod:`.diffusers_parallel`), every rank returning the
        same frames; refused by name where the family's transformer cannot be split.
        ``image`` / ``last_image`` / ``video`` / ``strength``: the condition of a conditioned class's folder
        (:attr:`class_spec`), as that diffusers class takes them (:mod:`.conditions`); refused by name elsewhere."""
        return self._generate(DiffusersCall(
            prompt=prompt, negative_prompt=negative_prompt, num_frames=num_frames, height=height, width=width,
            num_videos_per_prompt=num_videos_per_prompt, generator=generator, latents=latents,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds, output_type=output_type,
            return_dict=return_dict, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            decode_chunk_frames=decode_chunk_frames, max_sequence_length=max_sequence_length,
            attention_kwargs=attention_kwargs, class_labels=class_labels, conditioning_frames=conditioning_frames,
            conditioning_latent_indices=conditioning_latent_indices, sp_size=sp_size, image=image,
            last_image=last_image, video=video, strength=strength,
            family_options=dict(frame_rate=frame_rate, guidance_scale_2=guidance_scale_2,
                                true_cfg_scale=true_cfg_scale, prompt_template=prompt_template,
                                decode_timestep=decode_timestep, decode_noise_scale=decode_noise_scale),
            settings=dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          context_frames=context_frames, guidance_interval=guidance_interval)))

    def _settings(self, call: DiffusersCall) -> tuple:
        """Refusals first (stories, vidgen-only arguments, other families' options), then the settings with the
        family's CFG scale, and the call with the class's default size for the sizes left out, its family options
        (the given ones), the condition inputs' defaults (a video's frame count as ``num_frames``) and the model
        call's options."""
        if isinstance(call.prompt, dict) or isinstance(call.negative_prompt, dict):
            self.stream(call.prompt)
        self._refuse({**call.given(REFUSED), **{k: v for k, v in call.settings.items() if k in REFUSED}})
        config, call = super()._settings(call)
        if config.guidance_interval is not None:
            self._refuse(dict(guidance_interval=config.guidance_interval))
        given = {k: v for k, v in call.family_options.items() if v is not None}
        if not given.get("decode_timestep"):
            given.pop("decode_timestep", None)
        self.family.check_options(given, self.vae)
        check_class_options(self.pipeline_class_name, self.class_spec, given)
        config, options = self.family.sampling_settings(config, given)  # the CFG scale, the model call's options
        if call.attention_kwargs:
            options["attention_kwargs"] = call.attention_kwargs
        size = {name: default if getattr(call, name) is None else getattr(call, name)  # 0 stays 0, refused later
                for name, default in zip(("num_frames", "height", "width"), self.default_size)}
        size.update(condition_defaults(call, self.pipeline_class_name, self.class_spec, size, self.video_tokenizer,
                                       self.flow_generator.patch_size))
        return config, call.replace(family_options=given, model_options=options, **size)

    def _check_conditions(self, call: DiffusersCall) -> None:
        """The condition inputs against the folder's class (:mod:`.conditions`), each checked, by name."""
        check_conditions(call, self.pipeline_class_name, self.class_spec.inputs, family_inputs(self.family))
        if given_conditions(call):  # the family's own refusals for its class (Family.check_condition)
            self.family.check_condition(self.native(), call)

    def _is_story_call(self, call) -> bool:
        return False  # refused in _settings

    def _checked_inputs(self) -> tuple:
        return tuple(k for k in CHECKED_INPUTS if k != "class_labels") + ("latents",)

    def _grid(self, num_frames: int, height: int, width: int) -> tuple:
        """The latent grid sampled, with the family's extra first latent frames (dropped after sampling)."""
        grid = self.video_tokenizer.latent_grid(num_frames, height, width)
        pad = self.family.latent_padding(grid, self.flow_generator.patch_size)
        return (grid[0] + pad, *grid[1:]), pad

    def check_inputs(self, *, latents=None, **inputs) -> int:
        """The shared checks, the latent grid and the scheduler against the transformer, and ``latents`` as starting
        noise. Returns the number of videos."""
        batch = super().check_inputs(**inputs)
        gen = self.flow_generator
        grid, _ = self._grid(inputs["num_frames"], inputs["height"], inputs["width"])
        gen.check_grid(grid)
        from vidgen.adapters.sampling import check_scheduler
        check_scheduler(gen, self.scheduler)
        if latents is not None:
            from vidgen.generators.flow import check_latents_input
            check_latents_input(gen, latents, (batch, gen.latent_channels, *grid))
        return batch

    def _encode_prompts(self, call: DiffusersCall, config: FlowSamplingConfig, batch: int):
        """Prompts as the family encodes them (under guidance the negative prompt defaults as its pipeline's)."""
        guided = config.guidance_scale > 1.0 or (call.family_options.get("guidance_scale_2") or 0) > 1.0
        prompt_options = {k: v for k, v in call.family_options.items() if k in self.family.prompt_options}
        cond, negative = self.encode_prompt(call.prompt, call.negative_prompt, call.num_videos_per_prompt,
                                            call.prompt_embeds, call.negative_prompt_embeds,
                                            call.max_sequence_length, guided, call.image, **prompt_options)
        return batch, cond, negative

    def _sample(self, run):
        """The family's sampling (:func:`~vidgen.adapters.sampling.sample_latents`), once or once per video with a
        generator list, from a conditioned call's start (:meth:`_prepare`); extra first latent frames dropped."""
        from vidgen.adapters.sampling import sample_latents
        c, config, gen = run.call, run.config, self.flow_generator
        grid, pad = self._grid(c.num_frames, c.height, c.width)
        callback = self._callback(run)
        second = dict(model_2=self._wrapped("transformer_2"), pipeline_config=dict(self.config),
                      guidance_scale_2=c.family_options.get("guidance_scale_2"))

        def sample(rows, g, cond, negative, latents):
            # a. the condition (image, video): the start as the folder's class builds it, drawn from g
            prepared = self._prepare(c, grid, rows, g, latents, config.num_inference_steps)
            truncated = getattr(prepared, "timesteps", None)  # video-to-video: the last steps only
            steps = self._num_timesteps = config.num_inference_steps if truncated is None else len(truncated)
            # b. the denoising loop
            return sample_latents(gen, cond, config, scheduler=self.scheduler, grid=grid, batch=rows,
                                  negative=negative, generator=g, latents=latents if prepared is None else None,
                                  callback=callback, guidance=self._new_guidance(config.guidance_scale),
                                  progress=self.progress(steps), model_kwargs=c.model_options, prepared=prepared,
                                  **second)

        x = per_sample(sample, run.generators, run.batch, dict(cond=run.cond, negative=run.negative,
                                                                latents=c.latents))
        return x[:, :, pad:]

    def _prepare(self, call: DiffusersCall, grid, rows: int, generator, latents, steps: int):
        """The family's start of a conditioned call (``Family.prepare_condition``), None for text-to-video."""
        return None if not given_conditions(call) else self.family.prepare_condition(
            self.native(), call, grid=grid, batch=rows, generator=generator, device=self.flow_generator.device,
            scheduler=self.scheduler, steps=steps, latents=latents)

    def _output(self, run, x):
        """The family's own decode where its pipeline has one for the call's options (LTX's decode timestep), else
        the tokenizer's; without the first frames the folder's class drops (``Family.dropped_frames``)."""
        c, cut = run.call, self.family.dropped_frames(self.transformer, self.pipeline_class_name)[1]
        video = None if c.output_type == "latent" else self.family.decode(
            self.video_tokenizer, x, c.num_frames, c.height, c.width, c.generator, c.family_options)
        return super()._output(run, x) if video is None else to_output(video[:, :, cut:], c.output_type)

    def _decode(self, x, num_frames, height, width, output_type, decode_chunk_frames, per_video=False):
        drop, cut = self.family.dropped_frames(self.transformer, self.pipeline_class_name)
        if output_type == "latent":
            return x[:, :, drop:]
        tok, parts = self.video_tokenizer, (x.split(1) if per_video else [x])
        video = torch.cat([self.flow_generator.decode_videos(tok, part.to(tok.dtype), num_frames, height, width,
                                                        chunk_frames=decode_chunk_frames) for part in parts])
        return to_output(video[:, :, cut:], output_type)


def load_native_pipeline(path, **kwargs) -> DiffusersVideoPipeline:
    """A diffusers video pipeline folder as a :class:`DiffusersVideoPipeline`, with its ``sampling_config.json``
    if it has one. ``dtype`` / ``torch_dtype`` as :meth:`~vidgen.pipelines.VideoPipelineBase.from_pretrained`; none:
    as its diffusers class loads it (fp32). Weights must match (:mod:`vidgen.pipelines.folder_weights`)."""
    name = native_class_name(path)
    if name is None:
        raise ConfigError(f"{path}: not a supported diffusers video pipeline folder (model_index.json must name one "
                          f"of {sorted(NATIVE_PIPELINES)})")
    dtype = DiffusersVideoPipeline._resolve_dtype(dtype_argument(kwargs.pop("dtype", None), kwargs.pop(
        "torch_dtype", None)), kwargs.get("device_map") or ("cuda" if torch.cuda.is_available() else "cpu"))
    from vidgen.pipelines.quantization import check_quantization, load_dtype, model_components
    quantization = kwargs.get("quantization_config")
    dtype = load_dtype(dtype, quantization)  # diffusers' torchao loader would switch to bf16
    if quantization is not None:  # diffusers only warns about a component name the folder lacks
        check_quantization(path, quantization, kwargs.get("device_map") or ("cuda" if torch.cuda.is_available()
                                                                          else "cpu"), dtype)
    unknown = sorted(set(kwargs) - {"device_map", "local_files_only", "quantization_config"}
                     - set(model_components(path)))  # a component given as a model (load_gguf_transformer)
    if unknown:
        raise InvalidInputError(f"{path}: unknown loading option(s) {unknown}")
    check_folder_weights(path)  # diffusers would only warn, and leave the missing tensors on the meta device
    native = getattr(diffusers, name).from_pretrained(str(path), dtype=dtype, **kwargs)
    check_no_meta_tensors(native.components, path)
    pipe = DiffusersVideoPipeline.from_native(native)
    if (Path(path) / "sampling_config.json").is_file():  # else the family's defaults
        pipe._sampling_config = FlowSamplingConfig.from_pretrained(Path(path), DiffusersVideoPipeline)
    return pipe
