"""What the video pipelines share: the ``__call__`` recipe (:meth:`VideoPipelineBase._generate`), loading and saving
as diffusers does (:mod:`.pretrained`), input checks, prompt encoding (:mod:`.text_encoding`), per-sample generators,
decoding and output conversion. Each pipeline subclass says how its generator samples (its :meth:`_sample` hook) and
checks its own inputs; its ``__call__`` builds the call (:mod:`.call`) from its arguments.

Conventions follow diffusers: ``output_type`` ``"np"`` -> ``(B, T, H, W, 3)`` floats in [0, 1]; ``"pil"`` -> a
list (per video) of lists of PIL images; ``"pt"`` -> ``(B, T, 3, H, W)`` in [0, 1] (as diffusers' video
pipelines return it); ``"latent"`` -> the generator's latents / ids. A list of ``torch.Generator`` (one per
video) samples each video on its own, so a prompt and seed give the same video whatever else is in the batch.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import torch
from diffusers import DiffusionPipeline

from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.generators import Conditioning
from vidgen.generators.sampling import Guidance, check_guidance
from vidgen.generators.sampling_config import UNSET, SamplingConfig
from vidgen.parallel import check_sp_size
from vidgen.pipelines.call import VideoCall
from vidgen.pipelines.conditions import refuse_conditions
from vidgen.pipelines.inputs import PipelineInputsMixin
from vidgen.pipelines.pretrained import PretrainedMixin
from vidgen.pipelines.long_video import LongVideoMixin
from vidgen.pipelines.output import VideoPipelineOutput, to_output
from vidgen.pipelines.sequence_parallel import call_group
from vidgen.pipelines.text_encoding import TextEncodingMixin


#: the recipe's inputs that every pipeline's ``check_inputs`` takes
CHECKED_INPUTS = ("prompt", "negative_prompt", "class_labels", "prompt_embeds", "negative_prompt_embeds", "num_frames",
                  "height", "width", "num_videos_per_prompt", "generator", "output_type", "decode_chunk_frames",
                  "callback_on_step_end_tensor_inputs")


@dataclasses.dataclass
class SamplingRun:
    """One ``__call__`` as the recipe hands it to the pipeline's :meth:`~VideoPipelineBase._sample` hook: the call
    (checked), its sampling settings, the prompts encoded, the latent grid, one generator per part sampled
    at once (one part, or one per video with a generator list) and the latent frames given by conditioning frames."""

    call: VideoCall
    config: SamplingConfig
    batch: int
    grid: tuple
    cond: Optional[Conditioning]
    negative: Optional[Conditioning]
    generators: list
    given: Optional[torch.Tensor] = None  # latents / ids of the given latent frames, padded to the grid
    given_mask: Optional[torch.Tensor] = None  # (B, t) bool: which latent frames are given

    @property
    def per_video(self) -> bool:
        """Whether each video is sampled and decoded on its own (a list of generators)."""
        return len(self.generators) > 1


class VideoPipelineBase(PretrainedMixin, PipelineInputsMixin, TextEncodingMixin, LongVideoMixin, DiffusionPipeline):
    """Base of :class:`MaskedVideoPipeline`, :class:`FlowVideoPipeline`, :class:`AutoregressiveVideoPipeline`.

    Subclasses register ``transformer``, the video tokenizer as ``video_tokenizer_name`` (``"vae"`` / ``"vqvae"``),
    optional ``text_encoder`` + ``tokenizer`` (diffusers' names), and name their generator's sampling config
    (:attr:`sampling_config_class`).
    """

    video_tokenizer_name = "vae"
    #: whether ``dtype="auto"`` picks bf16 on a CPU with fast bf16 units, by measurement (eval/bench_pipelines.py)
    bf16_pays_on_cpu = True
    # without text components the offline default text encoder is loaded on first use; any other component may be
    # None too (a pipeline of only its text components runs encode_prompt), and sampling checks that they are there
    _optional_components = ["text_encoder", "tokenizer"]
    _callback_tensor_inputs: Sequence[str] = ("latents",)
    #: the generator's sampling settings: their defaults, checks and file (:mod:`vidgen.generators.sampling_config`)
    sampling_config_class: type = SamplingConfig
    #: components sampling needs besides the transformer and the video tokenizer
    sampling_components: tuple = ("scheduler",)
    #: the key of the generator's per-step callback tensors (``"latents"``, or ``"ids"`` for token generators)
    callback_key: str = "latents"
    #: ``__call__`` arguments a long video or story cannot take: refused by name unless at their defaults
    story_refuses: tuple = ("class_labels", "latents", "prompt_embeds", "negative_prompt_embeds",
                            "conditioning_latent_indices", "callback_on_step_end")
    #: whether ``pipe(..., sp_size=P)`` can split the generator's sequence over processes (:mod:`.sequence_parallel`)
    supports_sequence_parallel: bool = True
    #: the running call's :class:`~vidgen.parallel.SequenceParallel` (None: unsplit), set by :meth:`_generate` for
    #: the call only; the samplers take it as their ``sp`` argument, the transformer never holds it
    _sequence_parallel = None

    def enable_group_offload(self, onload_device, *args, **kwargs):
        """diffusers' group offloading (``DiffusionPipeline.enable_group_offload``, the same arguments), refused by
        name where its groups would read an emptied tensor (:func:`~vidgen.pipelines.quantization.check_group_offload`:
        leaf-level groups on disk over tied weights)."""
        import inspect
        from vidgen.pipelines.quantization import check_group_offload
        given = inspect.signature(DiffusionPipeline.enable_group_offload).bind(self, onload_device, *args, **kwargs)
        given.apply_defaults()
        options = given.arguments
        check_group_offload(self, options["offload_type"], options["offload_to_disk_path"], options["exclude_modules"])
        return super().enable_group_offload(onload_device, *args, **kwargs)

    # ------------------------------------------------------------------ sampling state (diffusers' conventions)
    @property
    def guidance_scale(self) -> float:
        """The CFG scale in use, read by the sampler at every step from one place (a
        :class:`~vidgen.generators.sampling.Guidance`): set by ``__call__`` from the settings; a ``callback_on_step_end``
        may set ``pipe._guidance_scale`` and the following steps use the new value (e.g. CFG cut off after a fraction
        of the steps). CFG runs when the call starts with a scale other than 1 (:attr:`do_classifier_free_guidance`)."""
        guidance = getattr(self, "_guidance", None)
        return None if guidance is None else guidance.scale

    @property
    def _guidance_scale(self) -> float:
        return self.guidance_scale

    @_guidance_scale.setter
    def _guidance_scale(self, value: float) -> None:
        check_guidance(value, "pipe._guidance_scale")
        self.__dict__.setdefault("_guidance", Guidance(value)).scale = value

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale is not None and self.guidance_scale != 1.0

    @property
    def num_timesteps(self) -> int:
        """Steps of the current (or last) call, so a callback can tell which step is its last: the sampling steps
        (masked, flow) or the latent frames (autoregressive, whose callbacks come once per latent frame)."""
        return getattr(self, "_num_timesteps", None)

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` in a callback to stop sampling after that step: flow decodes the latents
        as they are, masked fills the tokens still masked with that step's most likely ids, autoregressive ends
        the video after the latent frames made so far (with a warning naming the count)."""
        return getattr(self, "_interrupt", False)

    def _start_sampling(self, guidance_scale: float, num_timesteps: int) -> None:
        self._num_timesteps, self._interrupt = num_timesteps, False
        self._new_guidance(guidance_scale)

    def _new_guidance(self, guidance_scale: float) -> Guidance:
        """A fresh guidance state at the call's scale (each video of a generator list starts from it), shared by the
        sampler and ``pipe._guidance_scale``."""
        self.__dict__["_guidance"] = Guidance(guidance_scale)
        return self._guidance

    # ------------------------------------------------------------------ the __call__ recipe
    def _generate(self, call: VideoCall):
        """What every pipeline's ``__call__`` runs on its call (:mod:`.call`, built once from its arguments):
        sequence parallelism around the whole call (the call's group, which the sampling hooks pass to the sampler),
        then the recipe (:meth:`_recipe`)."""
        check_sp_size(call.sp_size)
        if call.sp_size != 1 and not self.supports_sequence_parallel:
            raise UnsupportedError(f"sp_size={call.sp_size}: {type(self).__name__} cannot split its sampling over "
                                   f"processes ({self._sequence_parallel_refusal()}); call it with sp_size=1")
        with call_group(self, call.sp_size) as sp:
            self.__dict__["_sequence_parallel"] = sp
            try:
                return self._recipe(call)
            finally:
                self.__dict__.pop("_sequence_parallel", None)

    def enable_cache(self, config) -> None:
        """diffusers' cache hooks (``FirstBlockCacheConfig`` and the other configs of ``diffusers.hooks``) on the
        transformer: the diffusers-backed pipelines take them (:class:`~vidgen.pipelines.DiffusersVideoPipeline`);
        vidgen's own generators have none, their fast path is a few-step student."""
        raise UnsupportedError(f"enable_cache: {type(self).__name__} samples vidgen's "
                               f"{type(getattr(self, 'transformer', None)).__name__}, which has no diffusers cache "
                               f"hooks; for fewer model calls distil it into a few-step student "
                               f"(pipelines/distill.py, docs/faster-sampling.md)")

    def _sequence_parallel_refusal(self) -> str:
        """Why :attr:`supports_sequence_parallel` is False (named in the refusal)."""
        return "its generator does not sample whole sequences"

    def _recipe(self, call: VideoCall):
        """settings -> story -> checks -> prompts -> given frames -> the generator's :meth:`_sample` -> decode."""
        # 1. the sampling settings: the caller's, else the folder's (checked once)
        config, call = self._settings(call)
        nf, h, w = call.num_frames, call.height, call.width
        # 2. long videos, stories and streams: chunk by chunk (vidgen.pipelines.story, the block-causal stream)
        if self._is_story_call(call):
            return self._streamed_call(call, config)
        # 3. check every input once
        checked_batch = self.check_inputs(**call.given(self._checked_inputs()))
        grid = self.video_tokenizer.latent_grid(nf, h, w)
        self._start_sampling(config.guidance_scale, self._steps_of(config, grid))
        # 4. encode the prompts
        batch, cond, negative = self._encode_prompts(call, config, checked_batch)
        # 5. given latent frames from the conditioning frames
        generators = self._generators(call.generator, batch)
        given, given_mask = self._encode_conditioning(call.get("conditioning_frames"),
                                                      call.get("conditioning_latent_indices"), grid, batch, nf, h, w)
        run = SamplingRun(call, config, batch, grid, cond, negative, generators, given, given_mask)
        # 6. sample: the generator's hook (a diffusers folder's conditioned call builds its start there, per video)
        x = self._sample(run)
        # 7. decode
        return self._finish(self._output(run, x), call.return_dict)

    def _settings(self, call: VideoCall) -> tuple[SamplingConfig, VideoCall]:
        """:attr:`sampling_config` with the call's settings applied (``context_frames=None``: the folder's), and
        the call as the recipe goes on with it (its condition inputs checked first: :meth:`_check_conditions`)."""
        self._check_conditions(call)
        given = {k: v for k, v in call.settings.items() if k in self.sampling_config_class.settings()}
        if given.get("context_frames", UNSET) is None:
            given["context_frames"] = UNSET
        return self.sampling_config.replace(**given), call

    def _check_conditions(self, call: VideoCall) -> None:
        """The call's condition inputs (``image=``, ``last_image=``, ``video=``, ``strength=``;
        :mod:`.conditions`): vidgen's own generators have no such path and refuse them by name."""
        refuse_conditions(call, type(self).__name__, "vidgen's own generators take no image or video, except the "
                          "block-causal CausalVideoPipeline's first frame (image=); given latent "
                          "frames go in conditioning_frames=, and image-to-video / video-to-video run on a diffusers "
                          "folder of such a pipeline class, loaded with load_pipeline")

    def _encode_prompts(self, call: VideoCall, config: SamplingConfig, batch: int):
        """-> (batch size, cond, negative cond) for the call's prompts, class labels or embeddings (``batch``: the
        number of videos :meth:`check_inputs` counted)."""
        return self._conditioning(call.prompt, call.negative_prompt, call.get("class_labels"), call.prompt_embeds,
                                  call.negative_prompt_embeds, call.num_videos_per_prompt)

    def _streamed_call(self, call: VideoCall, config: SamplingConfig):
        """A call made in chunks (:meth:`_is_story_call`): the chunks of :meth:`stream`, collected."""
        return self._story_call(call.prompt, call.negative_prompt, call.num_frames, call.height, call.width,
                                call.num_videos_per_prompt, call.generator, config,
                                call.get("context_frames") is not None, call.output_type, call.return_dict,
                                call.get("conditioning_frames"), unsupported=call.changed(self.story_refuses))

    def _is_story_call(self, call: VideoCall) -> bool:
        """Whether the call is made in chunks: a prompt schedule or more latent frames than one window."""
        return self.is_story(call.prompt, call.negative_prompt, call.num_frames, call.height, call.width)

    def _checked_inputs(self) -> tuple:
        """The call's arguments :meth:`check_inputs` takes: the shared ones and the generator's own."""
        return CHECKED_INPUTS + ("latents",)

    def _steps_of(self, config: SamplingConfig, grid) -> int:
        """:attr:`num_timesteps` of a call (its callbacks' count): the sampling steps."""
        return config.num_inference_steps

    def _sample(self, run: SamplingRun) -> torch.Tensor:
        """The generator's hook: sample the latents / ids of ``run`` (each pipeline defines it)."""
        raise NotImplementedError

    def _output(self, run: SamplingRun, x: torch.Tensor):
        """What ``__call__`` returns for sampled ``x``: decoded (one video at a time with a generator list)."""
        c = run.call
        return self._decode(x, c.num_frames, c.height, c.width, c.output_type, c.get("decode_chunk_frames"),
                            run.per_video)

    def _callback(self, run: SamplingRun):
        """The sampler's per-step callback for the call's ``callback_on_step_end`` (None without one)."""
        return self._step_callback(run.call.callback_on_step_end, run.call.callback_on_step_end_tensor_inputs,
                                   self.callback_key)

    def _check_components(self, *names: str) -> None:
        """A pipeline built with only its text components (to run :meth:`encode_prompt`) cannot sample."""
        missing = [n for n in names if getattr(self, n, None) is None]
        if missing:
            raise InvalidInputError(f"{', '.join(missing)}: this {type(self).__name__} was built without "
                                    f"{'them' if len(missing) > 1 else 'it'} (a text-only pipeline runs encode_prompt "
                                    "only); load or pass every component to sample")

    @property
    def precision(self) -> str:
        """``"fp32"``, ``"bf16"`` or ``"fp16"``: the dtype the transformer computes in (its weights' dtype)."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.transformer.dtype, "fp32")

    # ------------------------------------------------------------------ components
    @property
    def video_tokenizer(self):
        """The registered video tokenizer, as vidgen's tokenizer interface: a diffusers video VAE registered as
        ``vae`` (saved as the diffusers class it is) is used through :class:`~vidgen.tokenizers.DiffusersVideoVAE`,
        wrapped once and again whenever the component is replaced."""
        return self._as_tokenizer(getattr(self, self.video_tokenizer_name, None))

    def _as_tokenizer(self, component):
        from vidgen.tokenizers import DiffusersVideoVAE, is_diffusers_video_vae
        if not is_diffusers_video_vae(component):
            return component
        cached = getattr(self, "_wrapped_tokenizer", None)
        if cached is None or cached.vae is not component:
            cached = self._wrapped_tokenizer = DiffusersVideoVAE(component)
        return cached

    def enable_vae_tiling(self, *args, **kwargs) -> None:
        """Decode large frames in overlapping, blended spatial tiles (the tokenizer's ``enable_tiling``)."""
        self.video_tokenizer.enable_tiling(*args, **kwargs)

    def disable_vae_tiling(self) -> None:
        self.video_tokenizer.disable_tiling()

    # ------------------------------------------------------------------ outputs
    def _step_callback(self, callback_on_step_end, tensor_inputs, key: str):
        """Adapt diffusers' ``callback_on_step_end(pipe, step, timestep, kwargs) -> dict`` to the samplers' per-step
        callback: the latents it returns and ``pipe._interrupt`` (``pipe._guidance_scale`` is the sampler's
        :class:`~vidgen.generators.sampling.Guidance`, read at every step)."""
        if callback_on_step_end is None:
            return None

        def callback(i, t, tensors):
            given = {k: tensors[key] for k in tensor_inputs if k == "latents"}
            out = callback_on_step_end(self, i, t, given)
            out = {} if out is None else out
            if not isinstance(out, dict):
                raise InvalidInputError(f"callback_on_step_end must return a dict (e.g. {{'latents': ...}}) or None, "
                                        f"got {type(out).__name__} at step {i}")
            latents = out.get("latents", tensors[key])
            if not isinstance(latents, torch.Tensor) or latents.shape != tensors[key].shape:
                got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
                raise InvalidInputError(f"callback_on_step_end returned latents of shape {got} at step {i}; they "
                                        f"must keep the shape they were given, {tuple(tensors[key].shape)}")
            return {**({key: latents} if "latents" in out else {}), "interrupt": self.interrupt}
        return callback

    def _decode(self, x: torch.Tensor, num_frames: int, height: int, width: int, output_type: str,
                decode_chunk_frames: Optional[int], per_video: bool = False):
        """``per_video``: decode one video at a time (with a generator list: batched convolutions round
        differently, and each video must not depend on the rest of the batch)."""
        if output_type == "latent":
            return x
        parts = x.split(1) if per_video else [x]
        video = torch.cat([self.transformer.decode_videos(self.video_tokenizer, part, num_frames, height, width,
                                                          chunk_frames=decode_chunk_frames) for part in parts])
        return to_output(video, output_type)

    def _finish(self, frames, return_dict: bool):
        self.maybe_free_model_hooks()
        return VideoPipelineOutput(frames=frames) if return_dict else (frames,)

    def progress(self, total: Optional[int] = None) -> Callable:
        return lambda it: self.progress_bar(it, total=total) if it is not None else self.progress_bar(total=total)
