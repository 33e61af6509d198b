"""Wan 2.1 / 2.2 (``WanPipeline``): latents ``(B, C, t, h, w)`` as vidgen's, one pass per condition under guidance,
T5 states without a mask, Wan 2.2's second transformer (``transformer_2`` below ``boundary_ratio`` of the noise
scale, with ``guidance_scale_2``) and TI2V's per-token timesteps (``expand_timesteps``)."""
from __future__ import annotations

import torch

from vidgen.families.base import TINY_TEXT_DIM, Family, VaeSpec, WindowProcessor, patch_size_of, tiny_t5


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

    def forward(self, gen, latents, timestep, cond, expand_timesteps: bool = False, **kwargs) -> torch.Tensor:
        x, text = self.inputs(gen, latents, cond)
        if expand_timesteps:  # Wan 2.2 TI2V: one timestep per token
            b, _, t, h, w = x.shape
            pt, ph, pw = patch_size_of(gen.model)
            timestep = timestep[:, None].expand(b, (t // pt) * (h // ph) * (w // pw))
        return gen.model(hidden_states=x, timestep=timestep, encoder_hidden_states=text, return_dict=False,
                         **kwargs)[0]

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
)
