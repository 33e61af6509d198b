"""CogVideoX and CogVideoX 1.5 (``CogVideoXPipeline``): latents ``(B, t, C, h, w)``, v-prediction with its DDIM / DPM
schedulers (``eta=0`` and the generator; the DPM step carries the previous clean estimate), one batched pass over
``[negative; prompt]``, a rotary table built per grid, T5 called without its mask, the sampling state in the text
embeddings' dtype, and the transformer's fixed text length. CogVideoX 1.5 (``patch_size_t=2``) samples extra first
latent frames up to a multiple of its temporal patch and drops them before decoding.

Conditioned class: ``CogVideoXImageToVideoPipeline`` (``image=``): the image's latent (a posterior sample) on the
first sampled latent frame, zeros after it, concatenated on the channels of every model call."""
from __future__ import annotations

import torch

from vidgen.errors import ConfigError
from vidgen.families.base import (TINY_TEXT_DIM, ConditionedPipeline, Family, PreparedCondition, VaeSpec,
                                  WindowProcessor, patch_size_of, tiny_t5)


class CogVideoXWindowProcessor(WindowProcessor):
    """Joint text + video self-attention with the window: the text tokens are attention3d's prefix tokens."""

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        from diffusers.models.embeddings import apply_rotary_emb
        n_text = encoder_hidden_states.size(1)
        x = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        q, k, v = (proj(x).unflatten(2, (attn.heads, -1)).transpose(1, 2) for proj in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        if image_rotary_emb is not None:
            q = torch.cat([q[:, :, :n_text], apply_rotary_emb(q[:, :, n_text:], image_rotary_emb)], dim=2)
            k = torch.cat([k[:, :, :n_text], apply_rotary_emb(k[:, :, n_text:], image_rotary_emb)], dim=2)
        out = self.state.attend(q, k, v, prefix=n_text).transpose(1, 2).flatten(2, 3)
        out = attn.to_out[1](attn.to_out[0](out))
        return out[:, n_text:], out[:, :n_text]


def rotary_embedding(model, grid, device):
    """The rotary table of ``model`` for a latent grid (t, h, w), as the pipeline builds it (None without rotary
    embeddings)."""
    cfg = model.config
    if not cfg.use_rotary_positional_embeddings:
        return None
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid
    p, pt = cfg.patch_size, cfg.get("patch_size_t")
    gh, gw = grid[1] // p, grid[2] // p
    base_w, base_h = cfg.sample_width // p, cfg.sample_height // p
    if pt is None:
        crops = get_resize_crop_region_for_grid((gh, gw), base_w, base_h)
        return get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=crops, grid_size=(gh, gw),
                                       temporal_size=grid[0], device=device)
    return get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=None, grid_size=(gh, gw),
                                   temporal_size=(grid[0] + pt - 1) // pt, grid_type="slice",
                                   max_size=(base_h, base_w), device=device)


class CogVideoXFamily(Family):
    def pipeline_latents(self, latents, model=None):
        return latents.permute(0, 2, 1, 3, 4)  # (B, t, C, h, w)

    def from_pipeline_latents(self, latents, grid, model=None):
        return latents.permute(0, 2, 1, 3, 4)

    def max_text_tokens_of(self, model) -> int:
        return int(model.config.get("max_text_seq_length") or self.max_text_tokens)

    def noise(self, shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor
        b, c, t, h, w = shape
        return randn_tensor((b, t, c, h, w), generator=generator, device=device, dtype=dtype).permute(0, 2, 1, 3, 4)

    def forward(self, gen, latents, timestep, cond, condition=None, **kwargs) -> torch.Tensor:
        """``condition`` (B, C, t, h, w): the image-to-video pipeline's image latents, concatenated on the channels
        (repeated over the batched pass's [negative; prompt] halves)."""
        x, text = self.inputs(gen, latents, cond)
        if condition is not None:
            condition = condition.to(x.device, x.dtype)
            x = torch.cat([x, condition.repeat(x.shape[0] // condition.shape[0], 1, 1, 1, 1)], dim=1)
        ofs = None if gen.model.config.get("ofs_embed_dim") is None else x.new_full((1,), 2.0)
        rotary = rotary_embedding(gen.model, x.shape[2:], gen.device)
        out = gen.model(hidden_states=x.permute(0, 2, 1, 3, 4).contiguous(), encoder_hidden_states=text,  # (B,t,C,h,w)
                        timestep=timestep, ofs=ofs, image_rotary_emb=rotary, return_dict=False, **kwargs)[0]
        return out.permute(0, 2, 1, 3, 4)

    def prepare_condition(self, native, call, *, grid, batch, generator, device, scheduler, steps,
                          latents=None) -> PreparedCondition:
        """``CogVideoXImageToVideoPipeline``'s start: the image encoded (a posterior *sample*, drawn from
        ``generator`` first, even with ``latents`` given), scaled, at the first of the sampled latent frames (those
        of :meth:`latent_padding` included) with zeros after it; then the noise (or ``latents``) times the
        scheduler's ``init_noise_sigma``, in the prompt embeddings' dtype."""
        encoder = native.text_encoder if native.text_encoder is not None else native.transformer
        dtype = encoder.dtype
        frames = (grid[0] - 1) * native.vae_scale_factor_temporal + 1  # with the padding frames, as its __call__
        pixels = native.video_processor.preprocess(call.image, height=call.height, width=call.width)
        if pixels.shape[0] == 1 and batch > 1:  # one image for several videos (diffusers' class would fail)
            pixels = pixels.repeat(batch, 1, 1, 1)
        given = None if latents is None else self.pipeline_latents(latents).to(device, dtype)
        start, condition = native.prepare_latents(pixels.to(device, dtype), batch,
                                                  native.transformer.config.in_channels // 2, frames, call.height,
                                                  call.width, dtype, device, generator, given)
        return PreparedCondition(start.permute(0, 2, 1, 3, 4), {"condition": condition.permute(0, 2, 1, 3, 4)})

    def state_dtype(self, cond) -> torch.dtype:
        return cond.text.dtype if cond is not None else torch.float32

    def step(self, scheduler, prediction, timesteps, i, latents, generator=None, carry=None) -> tuple:
        dtype = latents.dtype
        if type(scheduler).__name__ == "CogVideoXDPMScheduler":  # carries the previous clean estimate
            prev_t = timesteps[i - 1] if i > 0 else None
            latents, carry = scheduler.step(prediction, carry, timesteps[i], prev_t, latents, eta=0.0,
                                            generator=generator, return_dict=False)
        else:
            latents = scheduler.step(prediction, timesteps[i], latents, eta=0.0, generator=generator,
                                     return_dict=False)[0]
        return latents.to(dtype), carry

    def latent_padding(self, grid, patch_size) -> int:
        pt = patch_size[0]
        return (pt - grid[0] % pt) % pt

    def caption_condition(self, hidden, mask, max_text_tokens: int) -> tuple:
        """Captions taken as encoded, at the transformer's text length (its pipeline pads T5's input, unmasked)."""
        if hidden.shape[1] != max_text_tokens:
            raise ConfigError(f"captions of {hidden.shape[1]} tokens, but CogVideoX reads {max_text_tokens}: encode "
                              f"with --max-text-tokens {max_text_tokens}")
        return hidden, None

    def token_grid(self, model, args, kwargs):
        x = kwargs.get("hidden_states", args[0] if args else None)  # (B, t, C, h, w)
        return tuple(int(g) // p for g, p in zip((x.shape[1], x.shape[3], x.shape[4]), patch_size_of(model)))

    def tiny_components(self, tokenizer, seed: int = 0) -> dict:
        import diffusers as d
        text_encoder = tiny_t5(tokenizer, seed)
        torch.manual_seed(seed)
        vae = d.AutoencoderKLCogVideoX(in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
                                       up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
                                       latent_channels=4, layers_per_block=1, norm_num_groups=2,
                                       temporal_compression_ratio=4)
        transformer = d.CogVideoXTransformer3DModel(num_attention_heads=4, attention_head_dim=8, in_channels=4,
                                                    out_channels=4, time_embed_dim=2, text_embed_dim=TINY_TEXT_DIM,
                                                    num_layers=2, sample_width=2, sample_height=2, sample_frames=9,
                                                    patch_size=2, temporal_compression_ratio=4,
                                                    max_text_seq_length=16)
        scheduler = d.CogVideoXDDIMScheduler(prediction_type="v_prediction")  # as the released models
        return dict(vae=vae.eval(), transformer=transformer.eval(), scheduler=scheduler, text_encoder=text_encoder,
                    tokenizer=tokenizer)

    def tiny_conditioned_components(self, pipeline_class: str, tokenizer, seed: int = 0, variant=None) -> dict:
        """``CogVideoXImageToVideoPipeline``: the transformer reads the image latents' channels too (8 = 2 x 4)."""
        import diffusers as d
        parts = self.tiny_components(tokenizer, seed)
        config = {k: v for k, v in parts["transformer"].config.items() if not k.startswith("_")}
        torch.manual_seed(seed)
        parts["transformer"] = d.CogVideoXTransformer3DModel(**{**config, "in_channels": 8}).eval()
        return parts


FAMILY = CogVideoXFamily(
    name="cogvideox", pipeline="CogVideoXPipeline", transformer="CogVideoXTransformer3DModel",
    vae="AutoencoderKLCogVideoX",
    # decodes an even number of latent frames without its causal first frame (2 latents -> 8 frames, not 5), so it
    # is given 1 + 2k latent frames (8k + 1 pixel frames, as its pipeline's 49); frame batches of 8
    vae_spec=VaeSpec(
        stats="scale", width=lambda c: c.block_out_channels[0],
        temporal=lambda v: int(v.config.temporal_compression_ratio),
        spatial=lambda v: 2 ** (len(v.config.block_out_channels) - 1),
        latent_step=2, pass_frames=lambda v, tc: 2 * v.num_sample_frames_batch_size),
    prediction_type="v_prediction", cfg="batched", max_text_tokens=226, text_encoder_masked=False,
    sampling_defaults=dict(num_inference_steps=50, guidance_scale=6.0), default_size=(49, 480, 720),
    tiny_size=(9, 16, 16), tiny_call={"max_sequence_length": 16}, window_processor=CogVideoXWindowProcessor,
    conditioned={"CogVideoXImageToVideoPipeline": ConditionedPipeline(inputs=("image",))},
)
