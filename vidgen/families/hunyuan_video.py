"""HunyuanVideo (``HunyuanVideoPipeline``): latents ``(B, C, t, h, w)`` as vidgen's; two text encoders (Llama hidden
states of the third-last layer under a prompt template, with their mask, and CLIP's pooled embedding, vidgen's
``Conditioning.pooled``); *embedded* guidance (``guidance_scale`` x 1000 is an input of the guidance-distilled
transformer) and, apart from it, true classifier-free guidance (``true_cfg_scale``, one pass per condition, only
with a negative prompt); sigmas ``linspace(1, 0)`` on its flow-matching scheduler; the timestep in the dtype of the
sampling state (bf16 after the first bf16 step), as its pipeline passes it."""
from __future__ import annotations

import numpy as np
import torch

from vidgen.errors import InvalidInputError
from vidgen.families.base import Family, PromptEmbeddings, VaeSpec


class HunyuanVideoFamily(Family):
    def sampling_settings(self, config, options: dict) -> tuple:
        """``guidance_scale`` is the embedded guidance; ``true_cfg_scale`` (default 1: none) the CFG scale."""
        return (config.replace(guidance_scale=float(options.get("true_cfg_scale", 1.0))),
                {"guidance": config.guidance_scale})

    def forward(self, gen, latents, timestep, cond, guidance=None, **kwargs) -> torch.Tensor:
        if cond.pooled is None or cond.text_mask is None:
            raise InvalidInputError("cond: HunyuanVideo needs text states with their mask and CLIP's pooled embedding "
                                    "(Conditioning.text, .text_mask, .pooled), as its pipeline's encode_prompt gives")
        x, text = self.inputs(gen, latents, cond)
        scale = self.sampling_defaults["guidance_scale"] if guidance is None else guidance
        embedded = torch.tensor([scale] * x.shape[0], dtype=gen.dtype, device=gen.device) * 1000.0  # (B,)
        return gen.model(hidden_states=x, timestep=timestep.to(latents.dtype), encoder_hidden_states=text,
                         encoder_attention_mask=cond.text_mask.to(gen.device, gen.dtype),
                         pooled_projections=cond.pooled.to(gen.device, gen.dtype), guidance=embedded,
                         return_dict=False, **kwargs)[0]

    def timesteps(self, scheduler, steps: int, grid, device) -> torch.Tensor:
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import retrieve_timesteps
        return retrieve_timesteps(scheduler, steps, device, sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])[0]

    def encode_prompt(self, native, prompt, negative_prompt=None, *, guidance: bool, num_videos_per_prompt: int,
                      max_text_tokens: int, device, prompt_template=None, **options) -> tuple:
        """The negative prompt is encoded only when given (true CFG needs one, as in diffusers)."""
        kwargs = dict(num_videos_per_prompt=num_videos_per_prompt, device=device, max_sequence_length=max_text_tokens)
        if prompt_template is not None:
            kwargs["prompt_template"] = prompt_template

        def encode(text):
            states, pooled, mask = native.encode_prompt(prompt=text, **kwargs)
            return PromptEmbeddings(states, mask.bool(), pooled)

        return encode(prompt), (encode(negative_prompt) if guidance and negative_prompt is not None else None)

    def tiny_components(self, tokenizer, seed: int = 0) -> dict:
        """diffusers' own test sizes; the MiniLM tokenizer stands in for both hub tokenizers (each text encoder's
        vocabulary is its size); sample with ``prompt_template={"template": "{}", "crop_start": 0}``."""
        import diffusers as d
        from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel
        torch.manual_seed(seed)
        transformer = d.HunyuanVideoTransformer3DModel(
            in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
            num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
            text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4))
        torch.manual_seed(seed)
        vae = d.AutoencoderKLHunyuanVideo(
            in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
            up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
            act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
            temporal_compression_ratio=4, mid_block_add_attention=True)
        scheduler = d.FlowMatchEulerDiscreteScheduler(shift=7.0)
        common = dict(bos_token_id=0, eos_token_id=2, intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4,
                      num_hidden_layers=2, pad_token_id=1, vocab_size=tokenizer.vocab_size, hidden_act="gelu")
        torch.manual_seed(seed)
        text_encoder = LlamaModel(LlamaConfig(hidden_size=16, **common))
        torch.manual_seed(seed)
        text_encoder_2 = CLIPTextModel(CLIPTextConfig(hidden_size=8, projection_dim=32, **common))
        return dict(vae=vae.eval(), transformer=transformer.eval(), scheduler=scheduler,
                    text_encoder=text_encoder.eval(), tokenizer=tokenizer, text_encoder_2=text_encoder_2.eval(),
                    tokenizer_2=tokenizer)


FAMILY = HunyuanVideoFamily(
    name="hunyuan_video", pipeline="HunyuanVideoPipeline", transformer="HunyuanVideoTransformer3DModel",
    vae="AutoencoderKLHunyuanVideo", vae_spec=VaeSpec(stats="scale", width=lambda c: c.block_out_channels[0]),
    prediction_type="flow", cfg="separate", max_text_tokens=256, text_mask=True,
    sampling_defaults=dict(num_inference_steps=50, guidance_scale=6.0), default_size=(129, 720, 1280),
    tiny_size=(9, 32, 32), components=("text_encoder_2", "tokenizer_2"),
    text_components=("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"),
    call_options=("true_cfg_scale", "prompt_template"), prompt_options=("prompt_template",),
    refused={
        "window_attention": "its blocks attend video and text tokens jointly, the text after the video with its "
                            "padding masked out; attention3d's prefix tokens come first and are never masked",
        "caption encoding": "its captions are two encoders' outputs (Llama states under a prompt template, CLIP's "
                            "pooled embedding), which a shard's one text encoder does not give",
        "fine-tuning": "caption shards hold one text encoder's states, not its Llama states and CLIP pooled "
                       "embedding, and its guidance-distilled transformer takes an embedded guidance scale",
    },
)
