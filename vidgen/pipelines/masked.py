"""``MaskedVideoPipeline``: text / class -> video with a :class:`MaskedVideoTransformer` on a ``CausalVQVAE``.

Iterative parallel decoding with diffusers' ``AmusedScheduler``. ``conditioning_frames`` gives the first frames
(prediction / image-to-video) or, with ``conditioning_latent_indices=[0, -1]`` and a full-length video, the first
and last latent frames (interpolation); given tokens are kept exactly. Sampling settings left out of a call come
from ``pipe.sampling_config`` (the folder's ``sampling_config.json``), else from :attr:`sampling_defaults`.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from diffusers import AmusedScheduler

from vidgen.errors import InvalidInputError
from vidgen.generators import MaskedVideoTransformer
from vidgen.generators.masked import OPTION_CHECKS, check_generate_ids, generate_ids_unchecked
from vidgen.pipelines.base import VideoPipelineBase
from vidgen.pipelines.output import per_sample
from vidgen.pipelines.sampling_config import SAMPLING_DEFAULT


class MaskedVideoPipeline(VideoPipelineBase):
    video_tokenizer_name = "vqvae"
    model_cpu_offload_seq = "text_encoder->transformer->vqvae"
    _callback_tensor_inputs = ("latents",)  # the token ids (B, t, h, w) are this pipeline's latents
    sampling_defaults = {"num_inference_steps": 12, "guidance_scale": 3.0, "temperature": (2.0, 0.0), "top_k": None,
                         "top_p": None, "greedy_steps": 0}
    option_checks = OPTION_CHECKS
    # stories, the class default (a folder's sampling_config.json carries the value measured on its own model): on
    # the stage-2 model 2 latent frames of context kept 25 % of a tuning story's segments on prompt, as 3 did, against
    # 12.5 % with 1, and 2 is faster than 3 (experiments/sweep_context.py, experiments/results/sweep_context.json)
    context_frames = 2

    def __init__(self, vqvae, transformer: MaskedVideoTransformer, scheduler: AmusedScheduler, text_encoder=None,
                 text_tokenizer=None):
        super().__init__()
        if transformer is not None and vqvae is not None:  # a text-only pipeline (None components) is allowed
            transformer.check_tokenizer(vqvae)
        self.register_modules(vqvae=vqvae, transformer=transformer, scheduler=scheduler, text_encoder=text_encoder,
                              text_tokenizer=text_tokenizer)

    def check_inputs(self, *, latents=None, **inputs) -> int:
        """The shared checks, the sampler's (:func:`~vidgen.generators.masked.check_generate_ids`) and ``latents``
        (ids (B, t, h, w); the mask id marks tokens to generate). Returns the number of videos."""
        options = self.resolve_settings(**{k: inputs.pop(k, SAMPLING_DEFAULT) for k in self.sampling_defaults})
        batch = super().check_inputs(**inputs)
        grid = self.vqvae.latent_grid(inputs["num_frames"], inputs["height"], inputs["width"])
        check_generate_ids(self.transformer, grid=grid, batch=batch, scheduler=self.scheduler, **options)
        if latents is not None:
            self.transformer.check_ids(latents, "latents", allow_special=True)
            if tuple(latents.shape) != (batch, *grid):
                raise InvalidInputError(f"latents must have shape {(batch, *grid)}, got {tuple(latents.shape)}")
        return batch

    @torch.no_grad()
    def __call__(self, prompt=None, negative_prompt=None, class_labels=None, num_frames: int = 17, height: int = 64,
                 width: int = 64, num_inference_steps: int = SAMPLING_DEFAULT, guidance_scale: float = SAMPLING_DEFAULT,
                 num_videos_per_prompt: int = 1, generator=None, latents: Optional[torch.Tensor] = None,
                 prompt_embeds=None, negative_prompt_embeds=None, conditioning_frames: Optional[torch.Tensor] = None,
                 conditioning_latent_indices: Optional[Sequence[int]] = None, output_type: str = "np",
                 return_dict: bool = True, callback_on_step_end: Optional[Callable] = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
                 top_k: Optional[int] = SAMPLING_DEFAULT, top_p: Optional[float] = SAMPLING_DEFAULT,
                 temperature=SAMPLING_DEFAULT,
                 greedy_steps: int = SAMPLING_DEFAULT, decode_chunk_frames: Optional[int] = None,
                 context_frames: Optional[int] = None):
        """``latents``: optional starting ids (B, t, h, w); entries other than the mask id are kept as given.
        ``temperature``: the re-masking temperature, a number or an annealed (start, end) pair. ``top_k`` / ``top_p``
        (nucleus) filter the ids drawn; the last ``greedy_steps`` steps draw the most likely ones. A ``prompt`` dict
        ``{frame_index: prompt}`` or more frames than one window: made in chunks, each given the last
        ``context_frames`` latent frames before it (:mod:`vidgen.pipelines.story`)."""
        # 0. long videos and stories: chunk by chunk (vidgen.pipelines.story)
        if self.is_story(prompt, negative_prompt, num_frames, height, width):
            return self._story_call(
                prompt, negative_prompt, num_frames, height, width, num_videos_per_prompt, generator, context_frames,
                output_type, return_dict, settings=dict(num_inference_steps=num_inference_steps,
                                                        guidance_scale=guidance_scale, temperature=temperature,
                                                        top_k=top_k, top_p=top_p, greedy_steps=greedy_steps),
                unsupported=dict(class_labels=class_labels, latents=latents, prompt_embeds=prompt_embeds,
                                 negative_prompt_embeds=negative_prompt_embeds, conditioning_frames=conditioning_frames,
                                 conditioning_latent_indices=conditioning_latent_indices,
                                 callback_on_step_end=callback_on_step_end))
        # 1. settings the caller left out come from sampling_config; check every input once
        s = self.resolve_settings(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                  temperature=temperature, top_k=top_k, top_p=top_p, greedy_steps=greedy_steps)
        self.check_inputs(prompt=prompt, negative_prompt=negative_prompt, class_labels=class_labels,
                          prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
                          num_frames=num_frames, height=height, width=width,
                          num_videos_per_prompt=num_videos_per_prompt, generator=generator, latents=latents,
                          output_type=output_type, decode_chunk_frames=decode_chunk_frames,
                          callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, **s)
        self._start_sampling(s["guidance_scale"], s["num_inference_steps"])
        # 2. encode the prompts
        batch, cond, negative = self._conditioning(prompt, negative_prompt, class_labels, prompt_embeds,
                                                   negative_prompt_embeds, num_videos_per_prompt)
        # 3. given tokens: conditioning frames and the caller's latents
        grid = self.vqvae.latent_grid(num_frames, height, width)
        generators = self._generators(generator, batch)
        given_ids, frame_mask = self._encode_conditioning(conditioning_frames, conditioning_latent_indices, grid,
                                                          batch, num_frames, height, width)
        given_mask = None if frame_mask is None else frame_mask[:, :, None, None].expand(batch, *grid)
        if latents is not None:
            keep = latents != self.transformer.mask_token_id
            fill = torch.zeros_like(latents) if given_ids is None else given_ids  # any valid id where not given
            given_ids = torch.where(keep, latents, fill)
            given_mask = keep if given_mask is None else given_mask | keep
        callback = self._step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs, "ids")

        # 4. sample the ids (once, or once per video with a list of generators); the sampler reads
        # pipe._guidance_scale at every step, so a callback may change it
        def sample(rows, g, cond, negative, given_ids, given_mask):
            self._guidance_scale = s["guidance_scale"]  # each video starts from the call's scale
            return generate_ids_unchecked(self.transformer, cond, grid=grid, batch=rows, negative=negative,
                                          generator=g, scheduler=self.scheduler, given_ids=given_ids,
                                          given_mask=given_mask, callback=callback,
                                          progress=self.progress(s["num_inference_steps"]),
                                          **{**s, "guidance_scale": self._live_guidance})

        ids = per_sample(sample, generators, batch, dict(cond=cond, negative=negative, given_ids=given_ids,
                                                         given_mask=given_mask))
        # 5. decode
        return self._finish(self._decode(ids, num_frames, height, width, output_type, decode_chunk_frames,
                                         len(generators) > 1),
                            return_dict)

    def _continue(self, rows, generator, cond, negative, given, new, hw, settings):
        """Frame prediction: the ids of the ``given`` latent frames are kept exactly, the ``new`` ones sampled."""
        k = 0 if given is None else given.shape[1]
        grid = (k + new, *hw)
        given_ids = given_mask = None
        if k:
            given_ids = torch.cat([given, given.new_zeros(rows, new, *hw)], 1)
            given_mask = torch.zeros(rows, *grid, dtype=torch.bool, device=given.device)
            given_mask[:, :k] = True
        ids = generate_ids_unchecked(self.transformer, cond, grid=grid, batch=rows, negative=negative,
                                     generator=generator, scheduler=self.scheduler, given_ids=given_ids,
                                     given_mask=given_mask, **settings)
        return ids
