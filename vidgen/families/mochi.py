"""Mochi 1 (``MochiPipeline``): latents ``(B, C, t, h, w)`` as vidgen's, per-channel latent statistics in the VAE's
config; noise drawn in fp32 then cast to the text embeddings' dtype (the sampling state's); its linear-quadratic sigma
schedule (``linear_quadratic_schedule(steps, 0.025)``) on a flow-matching scheduler that, as the released model's,
inverts the sigmas (``invert_sigmas``: the transformer takes ``1000 (1 - sigma)`` and predicts ``x0 - noise``); one
batched pass over ``[negative; prompt]`` with the guidance and the scheduler step in fp32; T5 states with their mask,
which the transformer reads (it keeps each sample's unmasked text tokens)."""
from __future__ import annotations

import numpy as np
import torch

from vidgen.errors import InvalidInputError
from vidgen.families.base import TINY_TEXT_DIM, Family, VaeSpec, encode_prompt_with_masks, tiny_t5

#: the noise level below which its schedule runs linearly (the pipeline's ``threshold_noise``)
THRESHOLD_NOISE = 0.025


def inverts_sigmas(scheduler) -> bool:
    """Whether ``scheduler`` walks inverted sigmas (the released Mochi scheduler's ``invert_sigmas``)."""
    return bool(getattr(scheduler, "config", {}).get("invert_sigmas", False))


class MochiFamily(Family):
    def noise(self, shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        """Drawn in fp32 and cast, as ``MochiPipeline.prepare_latents``."""
        from diffusers.utils.torch_utils import randn_tensor
        return randn_tensor(tuple(shape), generator=generator, device=device, dtype=torch.float32).to(dtype)

    def forward(self, gen, latents, timestep, cond, **kwargs) -> torch.Tensor:
        if cond.text_mask is None:
            raise InvalidInputError("cond: Mochi needs its text states' mask (Conditioning.text_mask), as its "
                                    "pipeline's encode_prompt gives; its transformer keeps the unmasked tokens only")
        x, text = self.inputs(gen, latents, cond)
        return gen.model(hidden_states=x, encoder_hidden_states=text, timestep=timestep.to(latents.dtype),
                         encoder_attention_mask=cond.text_mask.to(gen.device), return_dict=False, **kwargs)[0]

    def timesteps(self, scheduler, steps: int, grid, device) -> torch.Tensor:
        """The pipeline's linear-quadratic sigmas (from 1 down to about 0); the scheduler inverts them if it is
        configured to."""
        from diffusers.pipelines.mochi.pipeline_mochi import linear_quadratic_schedule, retrieve_timesteps
        if steps < 2:  # its linear half and quadratic half need a step each (diffusers divides by zero at 1)
            raise InvalidInputError(f"num_inference_steps: Mochi's linear-quadratic schedule needs at least 2 "
                                    f"steps, got {steps}")
        sigmas = np.array(linear_quadratic_schedule(steps, THRESHOLD_NOISE))
        return retrieve_timesteps(scheduler, steps, device, None, sigmas)[0]

    def state_dtype(self, cond) -> torch.dtype:
        return cond.text.dtype if cond is not None else torch.float32

    def step(self, scheduler, prediction, timesteps, i, latents, generator=None, carry=None) -> tuple:
        """The step in fp32, the state cast back to its dtype."""
        out = scheduler.step(prediction.float(), timesteps[i], latents.float(), return_dict=False)[0]
        return out.to(latents.dtype), None

    def training_timestep(self, sigma, scheduler=None) -> torch.Tensor:
        """``N (1 - sigma)`` under an inverting scheduler (the released model's), else ``N sigma``
        (``N = num_train_timesteps``)."""
        n = float(self._scheduler(scheduler).config.get("num_train_timesteps", 1000))
        return n * (1 - sigma) if inverts_sigmas(scheduler) else n * sigma

    def velocity_sign(self, scheduler=None) -> float:
        """``x0 - noise`` (-1) under an inverting scheduler: its steps walk the inverted sigmas upwards."""
        return -1.0 if inverts_sigmas(self._scheduler(scheduler)) else 1.0

    def _scheduler(self, scheduler):
        if scheduler is None:
            raise InvalidInputError("noise_scheduler: training Mochi needs the pipeline's scheduler (its "
                                    "invert_sigmas sets the timestep the transformer takes); pass "
                                    "DiffusersVideoTransformer(model, noise_scheduler=pipe.scheduler)")
        return scheduler

    encode_prompt = encode_prompt_with_masks

    def tiny_components(self, tokenizer, seed: int = 0) -> dict:
        """diffusers' own test sizes (12 latent channels, 8x spatial and 6x temporal compression), rotary
        frequencies drawn (diffusers' are zeros) so the positions matter, and the released model's inverting
        scheduler."""
        import diffusers as d
        text_encoder = tiny_t5(tokenizer, seed)
        torch.manual_seed(seed)
        transformer = d.MochiTransformer3DModel(
            patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
            in_channels=12, qk_norm="rms_norm", text_embed_dim=TINY_TEXT_DIM, time_embed_dim=4,
            activation_fn="swiglu", max_sequence_length=16)
        with torch.no_grad():
            transformer.pos_frequencies.normal_(0.0, 0.5)
        torch.manual_seed(seed)
        vae = d.AutoencoderKLMochi(latent_channels=12, out_channels=3, encoder_block_out_channels=(32, 32, 32, 32),
                                   decoder_block_out_channels=(32, 32, 32, 32), layers_per_block=(1, 1, 1, 1, 1))
        scheduler = d.FlowMatchEulerDiscreteScheduler(invert_sigmas=True)
        return dict(vae=vae.eval(), transformer=transformer.eval(), scheduler=scheduler, text_encoder=text_encoder,
                    tokenizer=tokenizer)


FAMILY = MochiFamily(
    name="mochi", pipeline="MochiPipeline", transformer="MochiTransformer3DModel", vae="AutoencoderKLMochi",
    vae_spec=VaeSpec(stats="config",
                     width=lambda c: max(c.encoder_block_out_channels[0], c.decoder_block_out_channels[0])),
    prediction_type="flow", cfg="batched", max_text_tokens=256, text_mask=True,
    sampling_defaults=dict(num_inference_steps=64, guidance_scale=4.5), default_size=(19, 480, 848),
    tiny_size=(7, 16, 32),
    refused={
        "window_attention": "its blocks attend video and text tokens jointly, each sample's unmasked text after the "
                            "video; attention3d's prefix tokens come first",
        "distillation": "its transformer takes the timestep 1000 (1 - sigma) of its inverted sigmas and predicts "
                        "x0 - noise, while distillation's teacher, critic and student calls use 1000 sigma and "
                        "noise - x0",
    },
)
