"""``AutoregressiveVideoPipeline``: text / class -> video with an :class:`AutoregressiveVideoTransformer` (KV cache)
on a ``CausalVQVAE``.

One step per token (prefill, then cached one-token decode). ``conditioning_frames`` continues a video from its first
frames. ``num_frames`` may exceed the model's trained length: the context slides over the last latent frames and
each finished latent frame is decoded at once through the tokenizer's stream decoder (memory flat in length).
Sampling settings left out of a call come from ``pipe.sampling_config`` (an
:class:`~vidgen.generators.AutoregressiveSamplingConfig`, the folder's ``sampling_config.json``).
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional, Sequence

import torch

from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.generators.autoregressive import (AutoregressiveSamplingConfig, AutoregressiveVideoTransformer, check_grid,
                                              iter_frames)
from vidgen.generators.sampling_config import UNSET
from vidgen.pipelines.base import VideoPipelineBase
from vidgen.pipelines.output import to_output
from vidgen.pipelines.story import is_schedule


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

    @torch.no_grad()
    def __call__(self, prompt=None, negative_prompt=None, class_labels=None, num_frames: int = 17, height: int = 64,
                 width: int = 64, num_inference_steps: Optional[int] = None, guidance_scale: float = UNSET,
                 num_videos_per_prompt: int = 1, generator=None, latents=None, prompt_embeds=None,
                 negative_prompt_embeds=None, conditioning_frames: Optional[torch.Tensor] = None,
                 output_type: str = "np", return_dict: bool = True, callback_on_step_end: Optional[Callable] = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
                 temperature: float = UNSET, top_k: Optional[int] = UNSET,
                 top_p: Optional[float] = UNSET, use_cache: bool = True,
                 context_frames: Optional[int] = None):
        """``callback_on_step_end(pipe, i, i, {"latents": ids so far})`` is called once per latent frame; returning
        ``{"latents": new_ids}`` replaces the ids so far and generation continues from them. A ``prompt`` dict
        ``{frame_index: prompt}``: made in chunks, each given the last ``context_frames`` latent frames before it
        with its prompt's prefix (:mod:`vidgen.pipelines.story`)."""
        # 1. the sampling settings: the caller's, else the folder's (checked once)
        config = self.sampling_config.replace(guidance_scale=guidance_scale, temperature=temperature, top_k=top_k,
                                              top_p=top_p,
                                              context_frames=UNSET if context_frames is None else context_frames)
        # 2. stories: chunk by chunk (vidgen.pipelines.story); one long prompt slides the context below
        if is_schedule(prompt) or is_schedule(negative_prompt):
            return self._story_call(
                prompt, negative_prompt, num_frames, height, width, num_videos_per_prompt, generator, config,
                context_frames is not None, output_type, return_dict,
                unsupported=dict(class_labels=class_labels, latents=latents, prompt_embeds=prompt_embeds,
                                 negative_prompt_embeds=negative_prompt_embeds, conditioning_frames=conditioning_frames,
                                 callback_on_step_end=callback_on_step_end,
                                 num_inference_steps=num_inference_steps, use_cache=None if use_cache else False))
        # 3. check every input once
        self.check_inputs(prompt=prompt, negative_prompt=negative_prompt, class_labels=class_labels,
                          prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
                          num_frames=num_frames, height=height, width=width,
                          num_videos_per_prompt=num_videos_per_prompt, generator=generator,
                          num_inference_steps=num_inference_steps, latents=latents, output_type=output_type,
                          callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs)
        grid = self.vqvae.latent_grid(num_frames, height, width)
        self._start_sampling(config.guidance_scale, grid[0])  # callbacks come once per latent frame
        # 4. encode the prompts
        batch, cond, negative = self._conditioning(prompt, negative_prompt, class_labels, prompt_embeds,
                                                   negative_prompt_embeds, num_videos_per_prompt)
        # 5. given ids from the conditioning frames
        generators = self._generators(generator, batch)
        given, frame_mask = self._encode_conditioning(conditioning_frames, None, grid, batch, num_frames, height, width)
        given = None if given is None else given[:, : int(frame_mask[0].sum())]
        # 6. sample latent frames one token at a time and decode each as it is finished (once, or once per video)
        rows = [(slice(0, batch), generators[0])] if len(generators) == 1 else \
            [(slice(i, i + 1), g) for i, g in enumerate(generators)]
        videos = []
        for part, g in rows:
            n = part.stop - part.start
            self._guidance_scale = config.guidance_scale  # each video starts from the call's scale
            frames = iter_frames(self.transformer, None if cond is None else cond.index(part), config, grid=grid,
                                 batch=n, negative=None if negative is None else negative.index(part), generator=g,
                                 given_ids=None if given is None else given[part], use_cache=use_cache)
            videos.append(self._stream(frames, grid, n, height, width, output_type, callback_on_step_end))
        out = torch.cat(videos)[:, :, :num_frames] if output_type != "latent" else torch.cat(videos)
        return self._finish(out if output_type == "latent" else to_output(out, output_type), return_dict)

    def _stream(self, frames, grid, n, height, width, output_type, callback) -> torch.Tensor:
        """Collect latent frames as they come and decode each at once (unless latents were asked for). A callback
        returning ``{"latents": ids}`` replaces the ids so far; generation continues from them."""
        stream = None if output_type == "latent" else self.vqvae.stream_decoder(height, width)
        ids, pixels = [], []
        bar = self.progress(grid[0])(None)
        frame = next(frames, None)
        while frame is not None:
            ids.append(frame)
            if stream is not None:
                pixels.append(stream.push(frame))
            bar.update(1)
            changed = (callback(self, len(ids) - 1, len(ids) - 1, {"latents": torch.cat(ids, 1)}) or {}) \
                if callback is not None else {}
            if self.interrupt:  # set by the callback: end the video here, and say so
                warnings.warn(f"interrupted after {len(ids)} of {grid[0]} latent frames: the video ends there, "
                              "shorter than num_frames", stacklevel=3)
                frames.close()
                break
            replaced = changed.get("latents")
            if replaced is not None:
                ids = list(replaced.split(1, dim=1))
                if stream is not None:  # re-decode the replaced past through a fresh stream
                    stream = self.vqvae.stream_decoder(height, width)
                    pixels = [stream.push(f) for f in ids]
            try:  # the callback may also have changed pipe._guidance_scale for the following tokens
                frame = frames.send({"latents": replaced, "guidance_scale": self._guidance_scale}) \
                    if callback is not None else next(frames)
            except StopIteration:
                frame = None
        bar.close()
        return torch.cat(ids, 1) if stream is None else torch.cat(pixels, 2)

    def _continue(self, rows, generator, cond, negative, given, new, hw, config):
        """The ``given`` latent frames are the context (prefilled after the prompt's prefix), the ``new`` ones
        sampled token by token with the KV cache."""
        k = 0 if given is None else given.shape[1]
        frames = iter_frames(self.transformer, cond, config, grid=(k + new, *hw), batch=rows, negative=negative,
                             generator=generator, given_ids=given, use_cache=True)
        return torch.cat(list(frames), 1)
