"""``AutoregressiveVideoPipeline``: text / class -> video with an :class:`AutoregressiveVideoTransformer` (KV cache)
on a ``CausalVQVAE``.

One step per token (prefill, then cached one-token decode). ``conditioning_frames`` continues a video from its first
frames. ``num_frames`` may exceed the model's trained length: the context slides over the last latent frames and
each finished latent frame is decoded at once through the tokenizer's stream decoder (memory flat in length).
Sampling settings left out of a call come from ``pipe.sampling_config`` (an
:class:`~vidgen.generators.AutoregressiveSamplingConfig`, the folder's ``sampling_config.json``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.generators.autoregressive import (AutoregressiveSamplingConfig, AutoregressiveVideoTransformer, check_grid,
                                              iter_frames)
from vidgen.generators.sampling_config import UNSET
from vidgen.pipelines.base import VideoPipelineBase
from vidgen.pipelines.call import ConditionedCall, sampling_entry
from vidgen.pipelines.output import to_output
from vidgen.pipelines.streaming import ChunkLoop
from vidgen.pipelines.story import is_schedule



@dataclass(frozen=True)
class AutoregressiveCall(ConditionedCall):
    """The autoregressive pipeline's call: ``num_inference_steps`` is checked to be None (one step per token), and
    ``use_cache`` picks the KV-cached decode."""

    num_inference_steps: Optional[int] = None
    use_cache: bool = True

class AutoregressiveVideoPipeline(VideoPipelineBase):
    video_tokenizer_name = "vqvae"
    # One token per row and step: on the CPU bf16 made the shipped pipeline slower (eval/bench_pipelines.py,
    # docs/results/bench_pipelines.json): its GEMMs have 2 rows (one video and its CFG twin per call) and the
    # one-query SDPA is slower in bf16. dtype="bf16" still gives bf16.
    bf16_pays_on_cpu = False
    model_cpu_offload_seq = "text_encoder->transformer->vqvae"
    _callback_tensor_inputs = ("latents",)  # the ids generated so far
    sampling_config_class = AutoregressiveSamplingConfig
    sampling_components = ()  # no scheduler: one step per token
    story_refuses = ("class_labels", "latents", "prompt_embeds", "negative_prompt_embeds", "callback_on_step_end",
                     "num_inference_steps", "use_cache")
    supports_sequence_parallel = False

    def enable_model_cpu_offload(self, *args, **kwargs):
        """Refused: this pipeline decodes each frame as soon as its tokens exist, so model offload would move the
        transformer off and on the device at every frame, and its KV-cached decoder calls bypass the offload hook."""
        raise UnsupportedError("AutoregressiveVideoPipeline: model offload is not supported (decoding is interleaved "
                               "with sampling frame by frame, so the transformer cannot leave the device between "
                               "calls); move the whole pipeline instead, pipe.to('cuda'): the shipped one holds 12 MB "
                               "of weights")

    enable_sequential_cpu_offload = enable_model_cpu_offload

    def _chunk_context(self, config, prompt, negative_prompt, given: bool) -> int:
        """A prompt schedule, or ``context_frames`` passed: ``config.context_frames``. One long prompt otherwise: the
        full sliding context (``window - 1`` latent frames), as :meth:`__call__` slides it frame by frame, so
        ``stream`` and ``__call__`` agree."""
        story = is_schedule(prompt) or is_schedule(negative_prompt)
        return config.context_frames if story or given else self.window - 1

    def __init__(self, vqvae, transformer: AutoregressiveVideoTransformer, text_encoder=None, tokenizer=None):
        super().__init__()
        if transformer is not None and vqvae is not None:  # a text-only pipeline (None components) is allowed
            transformer.check_tokenizer(vqvae)
        self.register_modules(vqvae=vqvae, transformer=transformer, text_encoder=text_encoder, tokenizer=tokenizer)

    def check_inputs(self, *, num_inference_steps=None, latents=None, **inputs) -> int:
        """The shared checks and the latent grid against the transformer (any number of latent frames: the context
        slides); ``num_inference_steps`` and ``latents`` have no meaning here and must be None. Returns the number of
        videos."""
        if num_inference_steps is not None:
            raise InvalidInputError("num_inference_steps: autoregressive sampling takes one step per token; pass None")
        if latents is not None:
            raise InvalidInputError("latents: not used by the autoregressive pipeline (continue a video with "
                                    "conditioning_frames)")
        batch = super().check_inputs(**inputs)
        check_grid(self.transformer, self.vqvae.latent_grid(inputs["num_frames"], inputs["height"], inputs["width"]))
        return batch

    @sampling_entry
    def __call__(self, prompt=None, negative_prompt=None, class_labels=None, num_frames: int = 17, height: int = 64,
                 width: int = 64, num_inference_steps: Optional[int] = None, guidance_scale: float = UNSET,
                 num_videos_per_prompt: int = 1, generator=None, latents=None, prompt_embeds=None,
                 negative_prompt_embeds=None, conditioning_frames: Optional[torch.Tensor] = None,
                 output_type: str = "np", return_dict: bool = True, callback_on_step_end: Optional[Callable] = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
                 temperature: float = UNSET, top_k: Optional[int] = UNSET,
                 top_p: Optional[float] = UNSET, use_cache: bool = True,
                 context_frames: Optional[int] = None, image=None, last_image=None, video=None, strength=None,
                 sp_size: int = 1):
        """``callback_on_step_end(pipe, i, i, {"latents": ids so far})`` is called once per latent frame; returning
        ``{"latents": new_ids}`` replaces the ids so far and generation continues from them. A ``prompt`` dict
        ``{frame_index: prompt}``: made in chunks, each given the last ``context_frames`` latent frames before it
        with its prompt's prefix (:mod:`vidgen.pipelines.story`). ``sp_size`` other than 1 is refused: this
        generator samples one token per step against a KV cache."""
        return self._generate(AutoregressiveCall(
            prompt=prompt, negative_prompt=negative_prompt, class_labels=class_labels, num_frames=num_frames,
            height=height, width=width, num_inference_steps=num_inference_steps,
            num_videos_per_prompt=num_videos_per_prompt, generator=generator, latents=latents,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            conditioning_frames=conditioning_frames, output_type=output_type, return_dict=return_dict,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, use_cache=use_cache,
            image=image, last_image=last_image, video=video, strength=strength,
            sp_size=sp_size, settings=dict(guidance_scale=guidance_scale, temperature=temperature, top_k=top_k,
                                           top_p=top_p, context_frames=context_frames)))

    def _is_story_call(self, call) -> bool:
        """Only a prompt schedule is made in chunks: one long prompt slides the context in :meth:`_sample`."""
        return is_schedule(call.prompt) or is_schedule(call.negative_prompt)

    def _checked_inputs(self) -> tuple:
        return super()._checked_inputs() + ("num_inference_steps",)

    def _steps_of(self, config, grid) -> int:
        return grid[0]  # callbacks come once per latent frame

    def _sequence_parallel_refusal(self) -> str:
        return "it samples one token per step against a KV cache"

    def _sample(self, run):
        """Latent frames one token at a time, each decoded as soon as it is finished (once, or once per video with a
        list of generators): pixels (B, 3, T', H, W), or the ids with ``output_type="latent"``."""
        c, batch, cond, negative = run.call, run.batch, run.cond, run.negative
        given = None if run.given is None else run.given[:, : int(run.given_mask[0].sum())]
        parts = [(slice(0, batch), run.generators[0])] if not run.per_video else \
            [(slice(k, k + 1), g) for k, g in enumerate(run.generators)]
        videos = []
        for part, g in parts:
            n = part.stop - part.start
            frames = iter_frames(self.transformer, None if cond is None else cond.index(part), run.config,
                                 grid=run.grid, batch=n, negative=None if negative is None else negative.index(part),
                                 generator=g, given_ids=None if given is None else given[part],
                                 use_cache=c.use_cache, guidance=self._new_guidance(run.config.guidance_scale))
            videos.append(self._stream(frames, run.grid, n, c.height, c.width, c.output_type,
                                       c.callback_on_step_end))
        return torch.cat(videos)

    def _output(self, run, x):
        if run.call.output_type == "latent":
            return x
        return to_output(x[:, :, :run.call.num_frames], run.call.output_type)

    def _stream(self, frames, grid, n, height, width, output_type, callback) -> torch.Tensor:
        """Collect latent frames as they come and decode each at once (unless latents were asked for). A callback
        returning ``{"latents": ids}`` replaces the ids so far; generation continues from them."""
        stream = None if output_type == "latent" else self.vqvae.stream_decoder(height, width)
        ids, pixels = [], []
        loop = ChunkLoop(self, grid[0], "latent frames")  # progress and interrupt (vidgen.pipelines.streaming)
        frame = next(frames, None)
        while frame is not None:
            ids.append(frame)
            if stream is not None:
                pixels.append(stream.push(frame))
            changed = (callback(self, len(ids) - 1, len(ids) - 1, {"latents": torch.cat(ids, 1)}) or {}) \
                if callback is not None else {}
            if loop.advance(1):  # interrupted by the callback: the video ends here
                frames.close()
                break
            replaced = changed.get("latents")
            if replaced is not None:
                ids = list(replaced.split(1, dim=1))
                if stream is not None:  # re-decode the replaced past through a fresh stream
                    stream = self.vqvae.stream_decoder(height, width)
                    pixels = [stream.push(f) for f in ids]
            try:  # (a change of pipe._guidance_scale reaches the sampler through its Guidance)
                frame = frames.send({"latents": replaced}) \
                    if callback is not None else next(frames)
            except StopIteration:
                frame = None
        loop.close()
        return torch.cat(ids, 1) if stream is None else torch.cat(pixels, 2)

    def _continue(self, rows, generator, cond, negative, given, new, hw, config):
        """The ``given`` latent frames are the context (prefilled after the prompt's prefix), the ``new`` ones
        sampled token by token with the KV cache."""
        k = 0 if given is None else given.shape[1]
        frames = iter_frames(self.transformer, cond, config, grid=(k + new, *hw), batch=rows, negative=negative,
                             generator=generator, given_ids=given, use_cache=True)
        return torch.cat(list(frames), 1)
