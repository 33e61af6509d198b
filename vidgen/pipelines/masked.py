"""``MaskedVideoPipeline``: text / class -> video with a :class:`MaskedVideoTransformer` on a ``CausalVQVAE``.

Iterative parallel decoding with diffusers' ``AmusedScheduler`` (12 steps by default). ``conditioning_frames``
gives the first frames (prediction / image-to-video) or, with ``conditioning_latent_indices=[0, -1]`` and a
full-length video, the first and last latent frames (interpolation); given tokens are kept exactly.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from diffusers import AmusedScheduler

from vidgen.generators import MaskedVideoTransformer, generate_ids
from vidgen.pipelines.base import VideoPipelineBase, per_sample


class MaskedVideoPipeline(VideoPipelineBase):
    video_tokenizer_name = "vqvae"
    model_cpu_offload_seq = "text_encoder->transformer->vqvae"
    _callback_tensor_inputs = ("latents",)  # the token ids (B, t, h, w) are this pipeline's latents

    def __init__(self, vqvae, transformer: MaskedVideoTransformer, scheduler: AmusedScheduler, text_encoder=None,
                 tokenizer=None):
        super().__init__()
        transformer.check_tokenizer(vqvae)
        self.register_modules(vqvae=vqvae, transformer=transformer, scheduler=scheduler, text_encoder=text_encoder,
                              tokenizer=tokenizer)

    @torch.no_grad()
    def __call__(self, prompt=None, negative_prompt=None, class_labels=None, num_frames: int = 17, height: int = 64,
                 width: int = 64, num_inference_steps: int = 12, guidance_scale: float = 3.0,
                 num_videos_per_prompt: int = 1, generator=None, latents: Optional[torch.Tensor] = None,
                 prompt_embeds=None, negative_prompt_embeds=None, conditioning_frames: Optional[torch.Tensor] = None,
                 conditioning_latent_indices: Optional[Sequence[int]] = None, output_type: str = "np",
                 return_dict: bool = True, callback_on_step_end: Optional[Callable] = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",), top_k: Optional[int] = None,
                 temperature=(2.0, 0.0), frame_order: str = "joint", decode_chunk_frames: Optional[int] = None):
        """``latents``: optional starting ids (B, t, h, w); entries other than the mask id are kept as given.
        ``frame_order="progressive"``: one decoding schedule per latent frame, each frame decoded with the earlier
        ones fixed (see :func:`vidgen.generators.generate_ids`)."""
        self._check_call(num_frames, height, width, num_inference_steps, guidance_scale, output_type,
                         callback_on_step_end_tensor_inputs)
        batch, cond, negative = self._conditioning(prompt, negative_prompt, class_labels, prompt_embeds,
                                                   negative_prompt_embeds, num_videos_per_prompt)
        grid = self.vqvae.latent_grid(num_frames, height, width)
        generators = self._generators(generator, batch)
        given_ids, frame_mask = self._encode_conditioning(conditioning_frames, conditioning_latent_indices, grid,
                                                          batch, num_frames, height, width)
        given_mask = None if frame_mask is None else frame_mask[:, :, None, None].expand(batch, *grid)
        if latents is not None:
            self.transformer.check_ids(latents, "latents", allow_special=True)
            keep = latents != self.transformer.mask_token_id
            fill = torch.zeros_like(latents) if given_ids is None else given_ids  # any valid id where not given
            given_ids = torch.where(keep, latents, fill)
            given_mask = keep if given_mask is None else given_mask | keep
        callback = self._step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs, "ids")

        def sample(rows, g, cond, negative, given_ids, given_mask):
            return generate_ids(self.transformer, grid, rows, cond, negative, guidance_scale, num_inference_steps, g,
                                self.scheduler, temperature, top_k, given_ids, given_mask, callback,
                                self.progress(num_inference_steps), frame_order)

        ids = per_sample(sample, generators, batch, dict(cond=cond, negative=negative, given_ids=given_ids,
                                                         given_mask=given_mask))
        return self._finish(self._decode(ids, num_frames, height, width, output_type, decode_chunk_frames,
                                         len(generators) > 1),
                            return_dict)
