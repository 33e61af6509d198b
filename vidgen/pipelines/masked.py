"""``MaskedVideoPipeline``: text / class -> video with a :class:`MaskedVideoTransformer` on a ``CausalVQVAE``.

Iterative parallel decoding with diffusers' ``AmusedScheduler``. ``conditioning_frames`` gives the first frames
(prediction / image-to-video) or, with ``conditioning_latent_indices=[0, -1]`` and a full-length video, the first
and last latent frames (interpolation); given tokens are kept exactly. Sampling settings left out of a call come
from ``pipe.sampling_config`` (a :class:`~vidgen.generators.MaskedSamplingConfig`, the folder's
``sampling_config.json``).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from diffusers import AmusedScheduler

from vidgen.errors import InvalidInputError
from vidgen.generators.masked import MaskedSamplingConfig, MaskedVideoTransformer, check_scheduler, generate_ids
from vidgen.generators.sampling_config import UNSET
from vidgen.pipelines.base import VideoPipelineBase
from vidgen.pipelines.call import ConditionedCall, sampling_entry
from vidgen.pipelines.output import per_sample


class MaskedVideoPipeline(VideoPipelineBase):
    video_tokenizer_name = "vqvae"
    model_cpu_offload_seq = "text_encoder->transformer->vqvae"
    _callback_tensor_inputs = ("latents",)  # the token ids (B, t, h, w) are this pipeline's latents
    sampling_config_class = MaskedSamplingConfig
    callback_key = "ids"

    def __init__(self, vqvae, transformer: MaskedVideoTransformer, scheduler: AmusedScheduler, text_encoder=None,
                 tokenizer=None):
        super().__init__()
        if transformer is not None and vqvae is not None:  # a text-only pipeline (None components) is allowed
            transformer.check_tokenizer(vqvae)
        self.register_modules(vqvae=vqvae, transformer=transformer, scheduler=scheduler, text_encoder=text_encoder,
                              tokenizer=tokenizer)

    def check_inputs(self, *, latents=None, **inputs) -> int:
        """The shared checks, the latent grid and the scheduler against the transformer, and ``latents`` (ids
        (B, t, h, w); the mask id marks tokens to generate). Returns the number of videos."""
        batch = super().check_inputs(**inputs)
        grid = self.vqvae.latent_grid(inputs["num_frames"], inputs["height"], inputs["width"])
        self.transformer.backbone.check_grid(self.transformer.patch.grid(grid))
        check_scheduler(self.transformer, self.scheduler)
        if latents is not None:
            self.transformer.check_ids(latents, "latents", allow_special=True)
            if tuple(latents.shape) != (batch, *grid):
                raise InvalidInputError(f"latents must have shape {(batch, *grid)}, got {tuple(latents.shape)}")
        return batch

    @sampling_entry
    def __call__(self, prompt=None, negative_prompt=None, class_labels=None, num_frames: int = 17, height: int = 64,
                 width: int = 64, num_inference_steps: int = UNSET, guidance_scale: float = UNSET,
                 num_videos_per_prompt: int = 1, generator=None, latents: Optional[torch.Tensor] = None,
                 prompt_embeds=None, negative_prompt_embeds=None, conditioning_frames: Optional[torch.Tensor] = None,
                 conditioning_latent_indices: Optional[Sequence[int]] = None, output_type: str = "np",
                 return_dict: bool = True, callback_on_step_end: Optional[Callable] = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
                 top_k: Optional[int] = UNSET, top_p: Optional[float] = UNSET, temperature=UNSET,
                 greedy_steps: int = UNSET, decode_chunk_frames: Optional[int] = None,
                 context_frames: Optional[int] = None, image=None, last_image=None, video=None, strength=None,
                 sp_size: int = 1):
        """``latents``: optional starting ids (B, t, h, w); entries other than the mask id are kept as given.
        ``temperature``: the re-masking temperature, a number or an annealed (start, end) pair. ``top_k`` / ``top_p``
        (nucleus) filter the ids drawn; the last ``greedy_steps`` steps draw the most likely ones. A ``prompt`` dict
        ``{frame_index: prompt}`` or more frames than one window: made in chunks, each given the last
        ``context_frames`` latent frames before it (:mod:`vidgen.pipelines.story`). Settings left out come from
        :attr:`sampling_config`. ``sp_size``: each clip's tokens split over that many processes of a distributed
        launch, every rank returning the same frames (:mod:`vidgen.pipelines.sequence_parallel`)."""
        return self._generate(ConditionedCall(
            prompt=prompt, negative_prompt=negative_prompt, class_labels=class_labels, num_frames=num_frames,
            height=height, width=width, num_videos_per_prompt=num_videos_per_prompt, generator=generator,
            latents=latents, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            conditioning_frames=conditioning_frames, conditioning_latent_indices=conditioning_latent_indices,
            output_type=output_type, return_dict=return_dict, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            decode_chunk_frames=decode_chunk_frames, image=image, last_image=last_image, video=video,
            strength=strength, sp_size=sp_size,
            settings=dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, top_k=top_k,
                          top_p=top_p, temperature=temperature, greedy_steps=greedy_steps,
                          context_frames=context_frames)))

    def _sample(self, run):
        """Iterative parallel decoding of ids (B, t, h, w): once, or once per video with a list of generators; the
        ids of the conditioning frames and the caller's ``latents`` other than the mask id are kept exactly."""
        batch, grid, config, latents = run.batch, run.grid, run.config, run.call.latents
        given_ids = run.given
        given_mask = None if run.given_mask is None else run.given_mask[:, :, None, None].expand(batch, *grid)
        if latents is not None:
            keep = latents != self.transformer.mask_token_id
            fill = torch.zeros_like(latents) if given_ids is None else given_ids  # any valid id where not given
            given_ids = torch.where(keep, latents, fill)
            given_mask = keep if given_mask is None else given_mask | keep
        callback = self._callback(run)

        def sample(rows, g, cond, negative, given_ids, given_mask):
            return generate_ids(self.transformer, cond, config, grid=grid, batch=rows, negative=negative, generator=g,
                                scheduler=self.scheduler, given_ids=given_ids, given_mask=given_mask,
                                callback=callback, guidance=self._new_guidance(config.guidance_scale),
                                progress=self.progress(config.num_inference_steps), sp=self._sequence_parallel)

        return per_sample(sample, run.generators, batch, dict(cond=run.cond, negative=run.negative,
                                                              given_ids=given_ids, given_mask=given_mask))

    def _continue(self, rows, generator, cond, negative, given, new, hw, config):
        """Frame prediction: the ids of the ``given`` latent frames are kept exactly, the ``new`` ones sampled."""
        k = 0 if given is None else given.shape[1]
        grid = (k + new, *hw)
        given_ids = given_mask = None
        if k:
            given_ids = torch.cat([given, given.new_zeros(rows, new, *hw)], 1)
            given_mask = torch.zeros(rows, *grid, dtype=torch.bool, device=given.device)
            given_mask[:, :k] = True
        return generate_ids(self.transformer, cond, config, grid=grid, batch=rows, negative=negative,
                            generator=generator, scheduler=self.scheduler, given_ids=given_ids, given_mask=given_mask,
                            sp=self._sequence_parallel)
