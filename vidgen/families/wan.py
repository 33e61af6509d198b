"""Wan 2.1 / 2.2 (``WanPipeline``): latents ``(B, C, t, h, w)`` as vidgen's, one pass per condition under guidance,
T5 states without a mask, Wan 2.2's second transformer (``transformer_2`` below ``boundary_ratio`` of the noise
scale, with ``guidance_scale_2``) and TI2V's per-token timesteps (``expand_timesteps``).

Conditioned classes: ``WanImageToVideoPipeline`` (``image=``, and ``last_image=`` for first-last-frame models): Wan
2.1's CLIP image embeddings where the transformer reads them (``image_dim``), the image's latents and a frame mask as
extra input channels, or, with ``expand_timesteps`` (Wan 2.2 TI2V), the first latent frame replaced by the image's
with timestep 0 on its tokens; ``WanVideoToVideoPipeline`` (``video=``, ``strength=``): the video's latents noised
to the first timestep of a truncated schedule."""
from __future__ import annotations

from typing import Optional

import torch

from vidgen.errors import ConfigError, InvalidInputError, UnsupportedError
from vidgen.families.base import (TINY_TEXT_DIM, ConditionedPipeline, Family, PreparedCondition, VaeSpec,
                                 WindowProcessor, patch_size_of, tiny_t5)


def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on interleaved (even, odd) channel pairs, x (B, S, H, D), cos / sin broadcastable."""
    even, odd = x[..., 0::2], x[..., 1::2]
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).flatten(-2).type_as(x)


class WanWindowProcessor(WindowProcessor):
    """``WanAttention`` self-attention with the window: q, k RMS-normed across heads, interleaved rotary."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections
        q, k, v = _get_qkv_projections(attn, hidden_states, hidden_states)
        q, k = attn.norm_q(q), attn.norm_k(k)
        q, k, v = (x.unflatten(2, (attn.heads, -1)) for x in (q, k, v))  # (B, N, heads, D)
        if rotary_emb is not None:
            q, k = _rotate_pairs(q, *rotary_emb), _rotate_pairs(k, *rotary_emb)
        out = self.state.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        out = out.flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))


class WanFamily(Family):
    def second_transformer_at(self, t, scheduler, pipeline_config) -> bool:
        """Wan 2.2: the low-noise transformer below ``boundary_ratio`` of the scheduler's timesteps."""
        ratio = (pipeline_config or {}).get("boundary_ratio")
        return ratio is not None and t < ratio * scheduler.config.num_train_timesteps

    def model_options(self, pipeline_config=None, vae=None) -> dict:
        return {"expand_timesteps": bool((pipeline_config or {}).get("expand_timesteps"))}

    def forward(self, gen, latents, timestep, cond, expand_timesteps: bool = False, condition=None,
                image_embeds=None, first_frame_mask=None, **kwargs) -> torch.Tensor:
        """``condition`` / ``image_embeds`` / ``first_frame_mask``: an image-to-video call's (prepare_condition)."""
        pt, ph, pw = patch_size_of(gen.model)
        if first_frame_mask is not None:  # Wan 2.2 TI2V image-to-video: frame 0 is the image's, at timestep 0
            m = first_frame_mask
            latents = (1 - m) * condition + m * latents
            timestep = (m[0, 0][:, ::ph, ::pw] * timestep[0]).flatten()[None].expand(latents.shape[0], -1)
        elif condition is not None:  # the image's latents and frame mask as extra input channels
            latents = torch.cat([latents, condition.to(latents.dtype)], dim=1)
        x, text = self.inputs(gen, latents, cond)
        if expand_timesteps and first_frame_mask is None:  # Wan 2.2 TI2V: one timestep per token
            b, _, t, h, w = x.shape
            timestep = timestep[:, None].expand(b, (t // pt) * (h // ph) * (w // pw))
        if image_embeds is not None:
            kwargs["encoder_hidden_states_image"] = image_embeds
        return gen.model(hidden_states=x, timestep=timestep, encoder_hidden_states=text, return_dict=False,
                         **kwargs)[0]

    def check_condition(self, native, call) -> None:
        """A Wan 2.1 transformer reads one image's CLIP tokens unless it is a first-last-frame model (its config's
        ``pos_embed_seq_len`` holds both images' tokens)."""
        config = native.transformer.config
        if call.last_image is not None and config.get("image_dim") is not None and not config.get("pos_embed_seq_len"):
            raise InvalidInputError("last_image: this Wan transformer reads one image's CLIP embeddings (its config "
                                    "has no pos_embed_seq_len); first-last-frame needs a first-last-frame model "
                                    "(e.g. Wan2.1-FLF2V), or call it with image= alone")

    def check_first_frame_training(self, native) -> None:
        """A first-last-frame transformer (``pos_embed_seq_len``) reads two images' CLIP tokens: first frames alone
        do not make its condition."""
        if native.transformer.config.get("pos_embed_seq_len"):
            raise UnsupportedError(f"pipeline: {type(native).__name__} with a first-last-frame transformer (its config "
                                   "has pos_embed_seq_len) reads a first and a last image; the shards hold first "
                                   "frames only, so fine-tuning it is not built; fine-tune an image-to-video model "
                                   "(e.g. Wan2.1-I2V) instead")

    def prepare_condition(self, native, call, *, grid, batch, generator, device, scheduler, steps,
                          latents=None) -> PreparedCondition:
        """As ``WanImageToVideoPipeline`` / ``WanVideoToVideoPipeline`` build their start, with their own methods."""
        if call.video is not None:
            return self._video_start(native, call, batch, generator, device, scheduler, steps, latents)
        nf, h, w = call.num_frames, call.height, call.width
        embeds = None
        if native.transformer.config.get("image_dim") is not None:  # Wan 2.1: CLIP image embeddings
            if native.image_encoder is None or native.image_processor is None:
                raise ConfigError("image_encoder: this transformer reads CLIP image embeddings (its config has "
                                  "image_dim), but the folder has no image_encoder / image_processor; load the "
                                  "complete WanImageToVideoPipeline folder")
            images = call.image if call.last_image is None else [call.image, call.last_image]
            embeds = native.encode_image(images, device).repeat(batch, 1, 1).to(native.transformer.dtype)
        image = native.video_processor.preprocess(call.image, height=h, width=w).to(device, torch.float32)
        last = None if call.last_image is None else native.video_processor.preprocess(
            call.last_image, height=h, width=w).to(device, torch.float32)
        out = native.prepare_latents(image, batch, native.vae.config.z_dim, h, w, nf, torch.float32, device,
                                     generator, latents, last)
        if native.config.get("expand_timesteps"):
            noise, condition, mask = out
            return PreparedCondition(noise, {"condition": condition, "first_frame_mask": mask},
                                     finish=lambda x: (1 - mask) * condition + mask * x)
        noise, condition = out
        return PreparedCondition(noise, {"condition": condition, "image_embeds": embeds})

    def _video_start(self, native, call, batch, generator, device, scheduler, steps, latents) -> PreparedCondition:
        from diffusers.pipelines.wan.pipeline_wan_video2video import retrieve_timesteps
        if latents is not None:
            raise InvalidInputError("latents: WanVideoToVideoPipeline starts from the noised video (video=); it takes "
                                    "one of video= and latents=, as diffusers' class does; leave latents out")
        timesteps, steps = retrieve_timesteps(scheduler, steps, device)
        timesteps, kept = native.get_timesteps(steps, timesteps, call.strength, device)
        if not len(timesteps):
            raise InvalidInputError(f"strength={call.strength}: with num_inference_steps={steps} no step is left "
                                    f"(int(steps * strength) = 0); raise strength or num_inference_steps")
        # the video's latents noised to the first timestep, before the sampler sets the scheduler's begin index
        video = native.video_processor.preprocess_video(call.video, height=call.height, width=call.width)
        channels = self.latent_channels(native.transformer)
        latents = native.prepare_latents(video.to(device, torch.float32), batch, channels, call.height, call.width,
                                         torch.float32, device, generator, None, timesteps[:1].repeat(batch))
        return PreparedCondition(latents, timesteps=timesteps, first_index=(steps - kept) * scheduler.order)

    def tiny_components(self, tokenizer, seed: int = 0) -> dict:
        import diffusers as d
        text_encoder = tiny_t5(tokenizer, seed)
        torch.manual_seed(seed)
        vae = d.AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                 temperal_downsample=[False, True, True])
        transformer = d.WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                              in_channels=16, out_channels=16, text_dim=TINY_TEXT_DIM, freq_dim=256,
                                              ffn_dim=32, num_layers=2, cross_attn_norm=True,
                                              qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
        scheduler = d.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
        return dict(vae=vae.eval(), transformer=transformer.eval(), scheduler=scheduler, text_encoder=text_encoder,
                    tokenizer=tokenizer)

    def tiny_conditioned_components(self, pipeline_class: str, tokenizer, seed: int = 0,
                                    variant: Optional[str] = None) -> dict:
        """Tiny ``WanImageToVideoPipeline`` components: ``variant`` None (Wan 2.1, CLIP image encoder),
        ``"first_last"`` (Wan 2.1 FLF2V), ``"two_transformers"`` (Wan 2.2 A14B: no CLIP, ``boundary_ratio``),
        ``"expand_timesteps"`` (Wan 2.2 TI2V); ``WanVideoToVideoPipeline``: the text-to-video ones."""
        import diffusers as d
        parts = self.tiny_components(tokenizer, seed)
        if pipeline_class == "WanVideoToVideoPipeline":
            return parts
        size = dict(parts["transformer"].config)
        size = {k: size[k] for k in ("patch_size", "num_attention_heads", "attention_head_dim", "out_channels",
                                     "text_dim", "freq_dim", "ffn_dim", "num_layers", "cross_attn_norm", "qk_norm",
                                     "rope_max_seq_len")}
        if variant == "expand_timesteps":
            return {**parts, "expand_timesteps": True}
        torch.manual_seed(seed)
        clip = variant in (None, "first_last")
        image = dict(image_dim=4, pos_embed_seq_len=10 if variant == "first_last" else None) if clip else {}
        parts["transformer"] = d.WanTransformer3DModel(in_channels=36, **image, **size).eval()
        if variant == "two_transformers":
            torch.manual_seed(seed + 1)
            parts["transformer_2"] = d.WanTransformer3DModel(in_channels=36, **size).eval()
            return {**parts, "boundary_ratio": 0.9}
        if clip:  # 8x8 CLIP images in 4x4 patches: 5 tokens (FLF: 2 x 5, pos_embed_seq_len)
            from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection
            torch.manual_seed(seed)
            parts["image_encoder"] = CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=8,
                intermediate_size=16, patch_size=4)).eval()
            parts["image_processor"] = CLIPImageProcessor(crop_size=8, size=8)
        return parts


FAMILY = WanFamily(
    name="wan", pipeline="WanPipeline", transformer="WanTransformer3DModel", vae="AutoencoderKLWan",
    # the compressions follow the layers (temperal_downsample, dim_mult, patch_size), not scale_factor_*; one latent
    # frame (plus a 2-frame causal cache) at a time; its pipelines divide by 1 / std
    vae_spec=VaeSpec(
        stats="config",
        width=lambda c: max(c.base_dim, c.decoder_base_dim or 0) * c.dim_mult[0] / (c.patch_size or 1) ** 2,
        channels=lambda c: c.z_dim, temporal=lambda v: 2 ** sum(v.config.temperal_downsample),
        spatial=lambda v: 2 ** (len(v.config.dim_mult) - 1) * (v.config.patch_size or 1),
        pass_frames=lambda v, tc: tc + 2, reciprocal_std=True),
    prediction_type="flow", cfg="separate", max_text_tokens=512,
    sampling_defaults=dict(num_inference_steps=50, guidance_scale=5.0), default_size=(81, 480, 832),
    tiny_size=(9, 32, 32),
    components=("transformer_2",), config_keys=("boundary_ratio", "expand_timesteps"),
    call_options=("guidance_scale_2",), window_processor=WanWindowProcessor,
    conditioned={
        "WanImageToVideoPipeline": ConditionedPipeline(
            inputs=("image", "last_image"), components=("transformer_2", "image_encoder", "image_processor"),
            trains=True),
        "WanVideoToVideoPipeline": ConditionedPipeline(
            inputs=("video", "strength"), components=(), config_keys=(), call_options=(),
            input_defaults={"strength": 0.8}, frames_from_input=True),
    },
)
