"""``FlowVideoPipeline``: text / class -> video with a latent :class:`DiffusionVideoTransformer` on a ``CausalVAE``.

Any diffusers scheduler matching the model's ``prediction_type`` (``FlowMatchEulerDiscreteScheduler`` for flow
matching; ``DDIMScheduler`` & co. for epsilon / v), swappable with ``pipe.scheduler = X.from_config(...)``.
``conditioning_frames`` gives the first latent frames (image-to-video, prediction) or chosen ones
(``conditioning_latent_indices=[0, -1]``: interpolation); given latents are kept exactly.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from vidgen.errors import InvalidInputError
from vidgen.generators import DiffusionVideoTransformer, check_scheduler, generate_latents
from vidgen.pipelines.base import VideoPipelineBase, per_sample


class FlowVideoPipeline(VideoPipelineBase):
    video_tokenizer_name = "vae"
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _callback_tensor_inputs = ("latents",)

    def __init__(self, vae, transformer: DiffusionVideoTransformer, scheduler, text_encoder=None, tokenizer=None):
        super().__init__()
        transformer.check_tokenizer(vae)
        check_scheduler(transformer, scheduler)
        self.register_modules(vae=vae, transformer=transformer, scheduler=scheduler, text_encoder=text_encoder,
                              tokenizer=tokenizer)

    @torch.no_grad()
    def __call__(self, prompt=None, negative_prompt=None, class_labels=None, num_frames: int = 17, height: int = 64,
                 width: int = 64, num_inference_steps: int = 25, guidance_scale: float = 4.0,
                 num_videos_per_prompt: int = 1, generator=None, latents: Optional[torch.Tensor] = None,
                 prompt_embeds=None, negative_prompt_embeds=None, conditioning_frames: Optional[torch.Tensor] = None,
                 conditioning_latent_indices: Optional[Sequence[int]] = None, output_type: str = "np",
                 return_dict: bool = True, callback_on_step_end: Optional[Callable] = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
                 decode_chunk_frames: Optional[int] = None):
        """``latents``: optional starting noise (B, C, t, h, w) in the scheduler's scale."""
        self._check_call(num_frames, height, width, num_inference_steps, guidance_scale, output_type,
                         callback_on_step_end_tensor_inputs)
        check_scheduler(self.transformer, self.scheduler)
        batch, cond, negative = self._conditioning(prompt, negative_prompt, class_labels, prompt_embeds,
                                                   negative_prompt_embeds, num_videos_per_prompt)
        grid = self.vae.latent_shape(num_frames, height, width)
        shape = (batch, self.transformer.config.in_channels, *grid)
        if latents is not None and tuple(latents.shape) != shape:
            raise InvalidInputError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        generators = self._generators(generator, batch)
        given, given_mask = self._encode_conditioning(conditioning_frames, conditioning_latent_indices, grid, batch,
                                                      num_frames, height, width)
        callback = self._step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs, "latents")

        def sample(rows, g, cond, negative, latents, given, given_mask):
            return generate_latents(self.transformer, self.scheduler, (rows, *shape[1:]), cond, negative,
                                    guidance_scale, num_inference_steps, g, latents, given, given_mask, callback,
                                    self.progress(num_inference_steps))

        x = per_sample(sample, generators, batch, dict(cond=cond, negative=negative, latents=latents, given=given,
                                                       given_mask=given_mask))
        return self._finish(self._decode(x, num_frames, height, width, output_type, decode_chunk_frames,
                                         len(generators) > 1), return_dict)
