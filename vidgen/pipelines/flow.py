"""``FlowVideoPipeline``: text / class -> video with a latent :class:`FlowVideoTransformer` on a ``CausalVAE``.

Any diffusers scheduler matching the model's ``prediction_type`` (``FlowMatchEulerDiscreteScheduler`` for flow
matching; ``DDIMScheduler`` & co. for epsilon / v), swappable with ``pipe.scheduler = X.from_config(...)``.
``conditioning_frames`` gives the first latent frames (image-to-video, prediction) or chosen ones
(``conditioning_latent_indices=[0, -1]``: interpolation); given latents are kept exactly. Sampling settings left out
of a call come from ``pipe.sampling_config`` (a :class:`~vidgen.generators.FlowSamplingConfig`, the folder's
``sampling_config.json``).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from vidgen.generators.flow import (FlowSamplingConfig, FlowVideoTransformer, check_latents_input, check_scheduler,
                                    generate_latents)
from vidgen.errors import InvalidInputError
from vidgen.generators.flow_sampler import student_settings
from vidgen.generators.sampling_config import UNSET
from vidgen.pipelines.base import VideoPipelineBase
from vidgen.pipelines.call import ConditionedCall, sampling_entry
from vidgen.pipelines.output import per_sample
from vidgen.tokenizers import DiffusersVideoVAE, is_diffusers_video_vae


class FlowVideoPipeline(VideoPipelineBase):
    video_tokenizer_name = "vae"
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _callback_tensor_inputs = ("latents",)
    sampling_config_class = FlowSamplingConfig
    frame_axis = 2  # latents (B, C, t, h, w)

    def __init__(self, vae, transformer: FlowVideoTransformer, scheduler, text_encoder=None, tokenizer=None):
        """``vae``: a vidgen ``CausalVAE``, or a diffusers video VAE (raw or in a
        :class:`~vidgen.tokenizers.DiffusersVideoVAE`): the raw diffusers model is what gets registered and saved
        (``model_index.json`` names its diffusers class), the pipeline samples through the adapter."""
        super().__init__()
        if is_diffusers_video_vae(vae) or isinstance(vae, DiffusersVideoVAE):
            vae = DiffusersVideoVAE.unwrap(vae)
        if transformer is not None and vae is not None:  # a text-only pipeline (None components) is allowed
            transformer.check_tokenizer(self._as_tokenizer(vae))
        if transformer is not None and scheduler is not None:
            check_scheduler(transformer, scheduler)
        self.register_modules(vae=vae, transformer=transformer, scheduler=scheduler, text_encoder=text_encoder,
                              tokenizer=tokenizer)

    def with_student(self, student: FlowVideoTransformer) -> "FlowVideoPipeline":
        """This pipeline with ``student``, a distilled transformer (:mod:`vidgen.distillation.losses`), in place
        of its transformer: the student's scheduler, and sampling settings at its largest step count, guidance 1."""
        spec = getattr(student.config, "distillation", None)
        if spec is None:
            raise InvalidInputError("student: not a distilled FlowVideoTransformer (its config has no distillation); "
                                    "pipelines/distill.py makes one")
        pipe = type(self)(self.vae, student, student.default_scheduler(), self.text_encoder, self.tokenizer)
        pipe.sampling_config = self.sampling_config.replace(**student_settings(spec))
        return pipe

    def check_inputs(self, *, latents=None, **inputs) -> int:
        """The shared checks, the scheduler and the latent grid against the transformer, and ``latents`` as starting
        noise. Returns the number of videos."""
        batch = super().check_inputs(**inputs)
        grid = self.video_tokenizer.latent_grid(inputs["num_frames"], inputs["height"], inputs["width"])
        check_scheduler(self.transformer, self.scheduler)
        self.transformer.backbone.check_grid(self.transformer.patch.grid(grid))
        if latents is not None:
            check_latents_input(self.transformer, latents, (batch, self.transformer.config.in_channels, *grid))
        return batch

    @sampling_entry
    def __call__(self, prompt=None, negative_prompt=None, class_labels=None, num_frames: int = 17, height: int = 64,
                 width: int = 64, num_inference_steps: int = UNSET, guidance_scale: float = UNSET,
                 num_videos_per_prompt: int = 1, generator=None, latents: Optional[torch.Tensor] = None,
                 prompt_embeds=None, negative_prompt_embeds=None, conditioning_frames: Optional[torch.Tensor] = None,
                 conditioning_latent_indices: Optional[Sequence[int]] = None, output_type: str = "np",
                 return_dict: bool = True, callback_on_step_end: Optional[Callable] = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
                 decode_chunk_frames: Optional[int] = None, context_frames: Optional[int] = None,
                 guidance_interval: Optional[tuple] = UNSET, image=None, last_image=None, video=None, strength=None,
                 sp_size: int = 1):
        """``latents``: optional starting noise (B, C, t, h, w) in the scheduler's scale. ``guidance_interval``
        ``(low, high)``: guidance only at noise levels in ``(low, high]``. A ``prompt`` dict
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
            settings=dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          guidance_interval=guidance_interval, context_frames=context_frames)))

    def _sample(self, run):
        """Flow matching from noise to latents (B, C, t, h, w): once, or once per video with a list of generators;
        given latent frames are kept exactly."""
        callback, config = self._callback(run), run.config

        def sample(rows, g, cond, negative, latents, given, given_mask):
            return generate_latents(self.transformer, cond, config, scheduler=self.scheduler, grid=run.grid,
                                    batch=rows, negative=negative, generator=g, latents=latents, given_latents=given,
                                    given_mask=given_mask, callback=callback, guidance=self._new_guidance(
                                        config.guidance_scale), progress=self.progress(config.num_inference_steps),
                                    sp=self._sequence_parallel)

        return per_sample(sample, run.generators, run.batch, dict(cond=run.cond, negative=run.negative,
                                                                  latents=run.call.latents, given=run.given,
                                                                  given_mask=run.given_mask))

    def _decoder_input(self, x):
        tok = self.video_tokenizer
        return tok.denormalize_latents(x.to(tok.dtype))

    def _continue(self, rows, generator, cond, negative, given, new, hw, config):
        """Conditioning latents (VDT): the ``given`` latent frames are kept exactly, the ``new`` ones sampled."""
        k = 0 if given is None else given.shape[2]
        given_latents = given_mask = None
        if k:
            given_latents = torch.cat([given, given.new_zeros(rows, given.shape[1], new, *hw)], 2)
            given_mask = torch.zeros(rows, k + new, dtype=torch.bool, device=given.device)
            given_mask[:, :k] = True
        return generate_latents(self.transformer, cond, config, scheduler=self.scheduler, grid=(k + new, *hw),
                                batch=rows, negative=negative, generator=generator, given_latents=given_latents,
                                given_mask=given_mask, sp=self._sequence_parallel)
