"""LTX-Video (``LTXPipeline``): tokens packed ``(B, t*h*w, C)``, the grid, frame rate and rotary scale passed to the
model, sigmas shifted by the latent grid's size, one batched pass over ``[negative; prompt]``, the text mask read by
the transformer, and the 0.9.1+ decoders conditioned on a decode timestep (``decode_timestep`` /
``decode_noise_scale``).

Conditioned class: ``LTXImageToVideoPipeline`` (``image=``): the T2V transformer as it is; the image's latent (a
posterior sample) is latent frame 0 of the start, its tokens at timestep 0 and kept through every step."""
from __future__ import annotations

import numpy as np
import torch

from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.families.base import (TINY_TEXT_DIM, ConditionedPipeline, Family, PreparedCondition, VaeSpec,
                                  WindowProcessor, encode_prompt_with_masks, pack_latents, patch_size_of, tiny_t5,
                                  unpack_latents)

#: the pipeline's default frame rate (the rotary time scale is latent frames per second)
FRAME_RATE = 25.0


class LTXWindowProcessor(WindowProcessor):
    """``LTXAttention`` self-attention with the window: q, k RMS-normed, rotary on the packed tokens."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        from diffusers.models.transformers.transformer_ltx import apply_rotary_emb
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        q, k = attn.norm_q(q), attn.norm_k(k)
        if image_rotary_emb is not None:
            q, k = apply_rotary_emb(q, image_rotary_emb), apply_rotary_emb(k, image_rotary_emb)
        q, k, v = (x.unflatten(2, (attn.heads, -1)).transpose(1, 2) for x in (q, k, v))  # (B, heads, N, D)
        out = self.state.attend(q, k, v).transpose(1, 2).flatten(2, 3).to(q.dtype)
        return attn.to_out[1](attn.to_out[0](out))


class LTXFamily(Family):
    def pipeline_latents(self, latents, model=None):
        pt, ps, _ = patch_size_of(model) if model is not None else (1, 1, 1)
        return pack_latents(latents, ps, pt)  # (B, tokens, C * pt * ps * ps)

    def from_pipeline_latents(self, latents, grid, model=None):
        pt, ps, _ = patch_size_of(model) if model is not None else (1, 1, 1)
        return unpack_latents(latents, grid, ps, pt)

    def check_options(self, options: dict, vae=None) -> None:
        super().check_options(options, vae)
        decode = sorted({"decode_timestep", "decode_noise_scale"} & set(options))
        if decode and vae is not None and not self.decodes_with_timestep(vae):
            raise UnsupportedError(f"{' / '.join(decode)}: this {type(vae).__name__} has no timestep conditioning "
                                   "(LTX-Video 0.9.1+ decoders have it)")

    def model_options(self, pipeline_config=None, vae=None) -> dict:
        ratios = (8, 32) if vae is None else (vae.temporal_compression_ratio, vae.spatial_compression_ratio)
        return {"vae_ratios": ratios}

    def sampling_settings(self, config, options: dict) -> tuple:
        return config, ({"frame_rate": options["frame_rate"]} if "frame_rate" in options else {})

    def forward(self, gen, latents, timestep, cond, vae_ratios=(8, 32), frame_rate: float = FRAME_RATE,
                token_mask=None, **kwargs) -> torch.Tensor:
        """``token_mask`` (1, tokens): 1 on the image-to-video pipeline's given first frame, whose tokens are at
        timestep 0 (diffusers' ``t * (1 - conditioning_mask)``, one timestep per token)."""
        x, text = self.inputs(gen, latents, cond)
        if token_mask is not None:
            timestep = timestep[:, None] * (1 - token_mask[:1].to(timestep.device))  # (B, tokens)
        mask = cond.text_mask.to(gen.device) if cond.text_mask is not None else None
        _, _, t, h, w = x.shape
        pt, ps, _ = patch_size_of(gen.model)
        tc, sc = vae_ratios
        out = gen.model(hidden_states=pack_latents(x, ps, pt).contiguous(), encoder_hidden_states=text,  # (B, N, C)
                        timestep=timestep, encoder_attention_mask=mask, num_frames=t // pt, height=h // ps,
                        width=w // ps, rope_interpolation_scale=(tc / frame_rate, sc, sc), return_dict=False,
                        **kwargs)[0]
        return unpack_latents(out, (t, h, w), ps, pt)

    def check_condition(self, native, call, latents=None) -> None:
        """``latents=``: ``LTXImageToVideoPipeline`` takes them as the whole start and never reads the image."""
        if (call.latents if latents is None else latents) is not None:
            raise InvalidInputError("latents: LTXImageToVideoPipeline ignores the image when it is given latents "
                                    "(they are the whole start, frame 0 included); pass a generator instead")

    def prepare_condition(self, native, call, *, grid, batch, generator, device, scheduler, steps,
                          latents=None) -> PreparedCondition:
        """``LTXImageToVideoPipeline``'s start: the image encoded (a posterior *sample*, drawn from ``generator``
        first), then the noise; frame 0 is the image latent, its tokens at timestep 0 (``token_mask``) and kept
        through every step (``clamp``: diffusers steps frames 1: only; the Euler step is elementwise, so a full step
        with frame 0 restored is the same numbers)."""
        self.check_condition(native, call, latents)
        encoder = native.text_encoder if native.text_encoder is not None else native.transformer
        dtype = encoder.dtype  # the image is cast to the prompt embeddings' dtype
        pixels = native.video_processor.preprocess(call.image, height=call.height, width=call.width)
        packed, mask = native.prepare_latents(pixels.to(device, dtype), batch, native.transformer.config.in_channels,
                                              call.height, call.width, call.num_frames, torch.float32, device,
                                              generator, None)
        start = self.from_pipeline_latents(packed, grid, native.transformer)
        first = start[:, :, :1].clone()
        return PreparedCondition(start, {"token_mask": mask},
                                 clamp=lambda x: torch.cat([first, x[:, :, 1:]], 2))

    def timesteps(self, scheduler, steps: int, grid, device) -> torch.Tensor:
        """Sigmas ``linspace(1, 1/steps)`` shifted by ``mu`` from the latent grid's size, as the pipeline."""
        from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift, retrieve_timesteps
        cfg = scheduler.config
        mu = calculate_shift(int(np.prod(grid)), cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                             cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
        return retrieve_timesteps(scheduler, steps, device, None, sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)[0]

    def decodes_with_timestep(self, vae) -> bool:
        return bool(vae.config.get("timestep_conditioning"))

    def decode(self, tokenizer, latents, num_frames, height, width, generator, options):
        """A timestep-conditioned decode (``decode_timestep``, ``decode_noise_scale``): the denormalized latents mixed
        with noise drawn from ``generator`` (``decode_noise_scale``, default ``decode_timestep``), decoded at
        ``decode_timestep``, as the pipeline does."""
        timestep, scale = options.get("decode_timestep") or 0.0, options.get("decode_noise_scale")
        if not timestep and not scale:
            return None
        from diffusers.utils.torch_utils import randn_tensor
        z = tokenizer.denormalize_latents(latents.to(tokenizer.dtype))
        scale = timestep if scale is None else scale
        noise = randn_tensor(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        z = (1 - scale) * z + scale * noise
        t = torch.full((z.shape[0],), float(timestep), device=z.device, dtype=z.dtype)
        return tokenizer.decode(z, num_frames, height, width, timestep=t).sample

    encode_prompt = encode_prompt_with_masks

    def token_grid(self, model, args, kwargs):
        return tuple(int(kwargs[k]) for k in ("num_frames", "height", "width")) if "num_frames" in kwargs else None

    def tiny_components(self, tokenizer, seed: int = 0) -> dict:
        import diffusers as d
        text_encoder = tiny_t5(tokenizer, seed)
        torch.manual_seed(seed)
        vae = d.AutoencoderKLLTXVideo(in_channels=3, out_channels=3, latent_channels=8,
                                      block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                                      layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
                                      spatio_temporal_scaling=(True, True, False, False),
                                      decoder_spatio_temporal_scaling=(True, True, False, False),
                                      decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4,
                                      upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1,
                                      patch_size_t=1, encoder_causal=True, decoder_causal=False)
        transformer = d.LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                                   num_attention_heads=4, attention_head_dim=8,
                                                   cross_attention_dim=32, num_layers=2, caption_channels=TINY_TEXT_DIM)
        scheduler = d.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=16,
                                                      max_image_seq_len=256)
        return dict(vae=vae.eval(), transformer=transformer.eval(), scheduler=scheduler, text_encoder=text_encoder,
                    tokenizer=tokenizer)

    def tiny_conditioned_components(self, pipeline_class: str, tokenizer, seed: int = 0, variant=None) -> dict:
        """``LTXImageToVideoPipeline`` takes the text-to-video components as they are."""
        return self.tiny_components(tokenizer, seed)


FAMILY = LTXFamily(
    name="ltx", pipeline="LTXPipeline", transformer="LTXVideoTransformer3DModel", vae="AutoencoderKLLTXVideo",
    vae_spec=VaeSpec(
        stats="buffers",
        width=lambda c: max(c.block_out_channels[0], c.decoder_block_out_channels[0]) / c.patch_size ** 2),
    prediction_type="flow", cfg="batched", max_text_tokens=128, text_mask=True,
    sampling_defaults=dict(num_inference_steps=50, guidance_scale=3.0), default_size=(161, 512, 704),
    tiny_size=(9, 32, 32), call_options=("frame_rate", "decode_timestep", "decode_noise_scale"),
    window_processor=LTXWindowProcessor,
    conditioned={"LTXImageToVideoPipeline": ConditionedPipeline(inputs=("image",))},
    refused={"context_parallel": "its attention processor views the text mask per head (B, heads, 1, S) before "
                                 "attending, while Ulysses gives each rank heads / P of them: the first "
                                 "cross-attention fails on a size mismatch (diffusers 0.42)"},
)
