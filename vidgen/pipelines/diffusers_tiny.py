"""Tiny random diffusers video pipelines (Wan, CogVideoX, LTX-Video), built offline the way diffusers' own pipeline
tests size them: a few layers of a few channels, random weights, a small T5 encoder, and the offline MiniLM tokenizer
standing in for T5's. For tests, ``--quick`` benchmarks and examples; never for results.

    native = tiny_native_pipeline("wan")          # a diffusers WanPipeline
    native.save_pretrained("tiny-wan")            # a folder load_pipeline() and WanPipeline both read
"""
from __future__ import annotations

import torch

from vidgen.errors import InvalidInputError

TINY_FAMILIES = ("wan", "cogvideox", "ltx")
#: a (num_frames, height, width) each tiny family samples quickly and decodes exactly
TINY_SIZES = {"wan": (9, 32, 32), "cogvideox": (9, 16, 16), "ltx": (9, 32, 32)}
TEXT_DIM = 32


def _text_encoder(seed: int):
    """A 2-layer T5 encoder over the MiniLM tokenizer's vocabulary, and that tokenizer (both offline)."""
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from vidgen.text import default_text_encoder_path
    tokenizer = AutoTokenizer.from_pretrained(str(default_text_encoder_path()))
    torch.manual_seed(seed)
    config = T5Config(vocab_size=tokenizer.vocab_size, d_model=TEXT_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, decoder_start_token_id=0)
    return T5EncoderModel(config).eval(), tokenizer


def tiny_components(family: str, seed: int = 0) -> dict:
    """The components of a tiny ``family`` pipeline (``"wan"``, ``"cogvideox"``, ``"ltx"``), seeded (the global
    random state is left as it was)."""
    if family not in TINY_FAMILIES:
        raise InvalidInputError(f"family must be one of {TINY_FAMILIES}, got {family!r}")
    with torch.random.fork_rng():
        return _components(family, seed)


def _components(family: str, seed: int) -> dict:
    import diffusers as d
    text_encoder, tokenizer = _text_encoder(seed)
    torch.manual_seed(seed)
    if family == "wan":
        vae = d.AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                 temperal_downsample=[False, True, True])
        transformer = d.WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                              in_channels=16, out_channels=16, text_dim=TEXT_DIM, freq_dim=256,
                                              ffn_dim=32, num_layers=2, cross_attn_norm=True,
                                              qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
        scheduler = d.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                              flow_shift=3.0)
    elif family == "cogvideox":
        vae = d.AutoencoderKLCogVideoX(in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
                                       up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
                                       latent_channels=4, layers_per_block=1, norm_num_groups=2,
                                       temporal_compression_ratio=4)
        transformer = d.CogVideoXTransformer3DModel(num_attention_heads=4, attention_head_dim=8, in_channels=4,
                                                    out_channels=4, time_embed_dim=2, text_embed_dim=TEXT_DIM,
                                                    num_layers=2, sample_width=2, sample_height=2, sample_frames=9,
                                                    patch_size=2, temporal_compression_ratio=4,
                                                    max_text_seq_length=16)
        scheduler = d.CogVideoXDDIMScheduler(prediction_type="v_prediction")  # as the released models
    else:
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
                                                   cross_attention_dim=32, num_layers=2,
                                                   caption_channels=TEXT_DIM)
        scheduler = d.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=16,
                                                      max_image_seq_len=256)
    return dict(vae=vae.eval(), transformer=transformer.eval(), scheduler=scheduler, text_encoder=text_encoder,
                tokenizer=tokenizer)


def tiny_native_pipeline(family: str, seed: int = 0):
    """A tiny diffusers ``WanPipeline`` / ``CogVideoXPipeline`` / ``LTXPipeline`` with random weights."""
    import diffusers

    from vidgen.generators.diffusers_transformer import transformer_family
    parts = tiny_components(family, seed)
    pipe = getattr(diffusers, transformer_family(parts["transformer"]).pipeline)(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe
