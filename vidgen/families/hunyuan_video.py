"""HunyuanVideo (``HunyuanVideoPipeline``): latents ``(B, C, t, h, w)`` as vidgen's; two text encoders (Llama hidden
states of the third-last layer under a prompt template, with their mask, and CLIP's pooled embedding, vidgen's
``Conditioning.pooled``); *embedded* guidance (``guidance_scale`` x 1000 is an input of the guidance-distilled
transformer) and, apart from it, true classifier-free guidance (``true_cfg_scale``, one pass per condition, only
with a negative prompt); sigmas ``linspace(1, 0)`` on its flow-matching scheduler; the timestep in the dtype of the
sampling state (bf16 after the first bf16 step), as its pipeline passes it.

Conditioned class: ``HunyuanVideoImageToVideoPipeline`` (``image=``): a LLaVA text encoder reads the image with the
prompt (the negative prompt with a black image); the start is the noise blended with the image latent, which is
concatenated on the channels ("latent_concat", its frames dropped after sampling) or replaces latent frame 0
("token_replace")."""
from __future__ import annotations

import numpy as np
import torch

from vidgen.errors import InvalidInputError
from vidgen.families.base import ConditionedPipeline, Family, PreparedCondition, PromptEmbeddings, VaeSpec

#: the prompt template of the tiny image-to-video LLaVA (no chat template to crop; 16 image tokens after 5 text ones)
TINY_I2V_TEMPLATE = {"template": "{}", "crop_start": 0, "image_emb_len": 16, "image_emb_start": 5,
                     "image_emb_end": 21, "double_return_token_id": 0}
#: the image tokens' interleave of the image-to-video pipeline's prompt, by the transformer's image_condition_type
INTERLEAVE = {"latent_concat": 2, "token_replace": 4}


def check_image_template(native, template) -> None:
    """The image-to-video prompt template (``template``, else the class's default) has an image slot of as many
    tokens as the LLaVA text encoder's vision tower gives (LLaVA fails with a bare count mismatch otherwise)."""
    if template is None:
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_image2video import DEFAULT_PROMPT_TEMPLATE
        template = DEFAULT_PROMPT_TEMPLATE
    vision = getattr(native.text_encoder.config, "vision_config", None)
    if vision is None:
        raise InvalidInputError(f"text_encoder: {type(native.text_encoder).__name__} reads no image; "
                                "HunyuanVideoImageToVideoPipeline needs its LLaVA text encoder")
    tokens = (vision.image_size // vision.patch_size) ** 2
    tokens += getattr(native.text_encoder.config, "vision_feature_select_strategy", "default") == "full"
    length = template.get("image_emb_len", 576)
    slot = template.get("image_emb_end", 581) - template.get("image_emb_start", 5)
    if length != tokens or slot != tokens:
        raise InvalidInputError(f"prompt_template: an image slot of image_emb_len={length} tokens (image_emb_start.."
                                f"image_emb_end: {slot}), but the text encoder's vision tower gives {tokens} image "
                                f"tokens; give an image-to-video template with image_emb_len={tokens}, "
                                f"image_emb_end = image_emb_start + {tokens}")


class HunyuanVideoFamily(Family):
    def sampling_settings(self, config, options: dict) -> tuple:
        """``guidance_scale`` is the embedded guidance; ``true_cfg_scale`` (default 1: none) the CFG scale."""
        return (config.replace(guidance_scale=float(options.get("true_cfg_scale", 1.0))),
                {"guidance": config.guidance_scale})

    def forward(self, gen, latents, timestep, cond, guidance=None, condition=None, first_latent=None,
                **kwargs) -> torch.Tensor:
        """Image-to-video: ``condition`` (B, C + 1, t, h, w) the image latent and its mask, concatenated on the
        channels ("latent_concat"), or ``first_latent`` (B, C, 1, h, w) put in place of frame 0 ("token_replace")."""
        if cond.pooled is None or cond.text_mask is None:
            raise InvalidInputError("cond: HunyuanVideo needs text states with their mask and CLIP's pooled embedding "
                                    "(Conditioning.text, .text_mask, .pooled), as its pipeline's encode_prompt gives")
        x, text = self.inputs(gen, latents, cond)
        if condition is not None:
            x = torch.cat([x, condition.to(x.device, x.dtype)], dim=1)
        if first_latent is not None:
            x = torch.cat([first_latent.to(x.device, x.dtype), x[:, :, 1:]], dim=2)
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
                      max_text_tokens: int, device, prompt_template=None, image=None, image_embed_interleave=None,
                      **options) -> tuple:
        """The negative prompt is encoded only when given (true CFG needs one, as in diffusers). With ``image`` (the
        image-to-video pipeline, LLaVA's states): the prompt with the image and ``image_embed_interleave`` (default
        by the transformer's condition type), the negative prompt with a black image (of any size: the image
        processor makes the same pixels of it) and the default interleave, as ``HunyuanVideoImageToVideoPipeline``
        encodes them."""
        kwargs = dict(num_videos_per_prompt=num_videos_per_prompt, device=device, max_sequence_length=max_text_tokens)
        if prompt_template is not None:
            kwargs["prompt_template"] = prompt_template

        def encode(text, **extra):
            states, pooled, mask = native.encode_prompt(prompt=text, **kwargs, **extra)
            return PromptEmbeddings(states, mask.bool(), pooled)

        if image is None and type(native).__name__ in self.conditioned:
            raise InvalidInputError(f"image: {type(native).__name__} encodes the prompt with the image (its LLaVA "
                                    "text encoder reads both); pass image=")
        if image is None:
            return encode(prompt), (encode(negative_prompt) if guidance and negative_prompt is not None else None)
        from PIL import Image
        check_image_template(native, prompt_template)
        kind = native.transformer.config.get("image_condition_type")
        interleave = image_embed_interleave or INTERLEAVE.get(kind, 1)
        negative = None
        if guidance and negative_prompt is not None:
            negative = encode(negative_prompt, image=Image.new("RGB", (64, 64), 0))
        return encode(prompt, image=image, image_embed_interleave=interleave), negative

    def check_condition(self, native, call) -> None:
        """The prompt template's image slot against the LLaVA text encoder's vision tower, before any work
        (:func:`check_image_template`)."""
        if call.prompt_embeds is None:
            check_image_template(native, call.family_options.get("prompt_template"))

    def prepare_condition(self, native, call, *, grid, batch, generator, device, scheduler, steps,
                          latents=None) -> PreparedCondition:
        """``HunyuanVideoImageToVideoPipeline``'s start: the noise (or ``latents``) blended with the image latent
        (the posterior mode, no draw) as ``noise * 0.999 + image * (1 - 0.999)`` in float32 tensors, as its
        pipeline computes it. "latent_concat": the image latent on frame 0 and its frame mask concatenated on the
        channels (the first frames dropped after sampling: :meth:`dropped_frames`); "token_replace": frame 0
        replaced by the image latent in every model call and after every step."""
        kind = native.transformer.config.image_condition_type
        channels = native.transformer.config.in_channels
        channels = (channels - 1) // 2 if kind == "latent_concat" else channels
        pixels = native.video_processor.preprocess(call.image, call.height, call.width).to(device, native.vae.dtype)
        start, z = native.prepare_latents(pixels, batch, channels, call.height, call.width, call.num_frames,
                                          torch.float32, device, generator, latents, kind)
        z = z.expand(start.shape[0], -1, -1, -1, -1).clone()  # one image for several videos (as its start)
        if kind == "token_replace":
            return PreparedCondition(start, {"first_latent": z},
                                     clamp=lambda x: torch.cat([z, x[:, :, 1:]], 2))  # promoted, as its cat
        z[:, :, 1:] = 0
        mask = z.new_ones(z.shape[0], 1, *z.shape[2:])
        mask[:, :, 1:] = 0
        return PreparedCondition(start, {"condition": torch.cat([z, mask], 1)})

    def dropped_frames(self, model, pipeline_class: str) -> tuple:
        """``(latent frames, pixel frames)`` the class drops from the start of its output: the image-to-video
        class's "latent_concat" models drop the image's frame (``output_type="latent"``: the first latent frame;
        decoded: the first 4 pixel frames, as its pipeline cuts them)."""
        if pipeline_class in self.conditioned and model.config.get("image_condition_type") == "latent_concat":
            return 1, 4
        return 0, 0

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

    def tiny_conditioned_components(self, pipeline_class: str, tokenizer, seed: int = 0, variant=None) -> dict:
        """Tiny ``HunyuanVideoImageToVideoPipeline`` components: a LLaVA text encoder (the tiny Llama with a CLIP
        vision tower of 16 image tokens: sample with :data:`TINY_I2V_TEMPLATE`), a CLIP image processor, and a
        "latent_concat" transformer (``variant="token_replace"``: the v2 kind)."""
        import diffusers as d
        from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                                  LlavaForConditionalGeneration)
        parts = self.tiny_components(tokenizer, seed)
        kind = variant or "latent_concat"
        config = {k: v for k, v in parts["transformer"].config.items() if not k.startswith("_")}
        llama = {k: v for k, v in parts["text_encoder"].config.to_dict().items()
                 if k in ("bos_token_id", "eos_token_id", "intermediate_size", "layer_norm_eps", "num_attention_heads",
                          "num_hidden_layers", "vocab_size", "hidden_act", "hidden_size")}
        torch.manual_seed(seed)
        parts["text_encoder"] = LlavaForConditionalGeneration(LlavaConfig(
            vision_config=CLIPVisionConfig(hidden_size=8, intermediate_size=37, projection_dim=32, num_attention_heads=4,
                                           num_hidden_layers=2, image_size=32, patch_size=8),  # 16 image tokens
            text_config=LlamaConfig(**llama, pad_token_id=tokenizer.pad_token_id), pad_token_id=tokenizer.pad_token_id,
            image_token_index=1)).eval()  # an id the tiny prompts never produce
        torch.manual_seed(seed)
        parts["transformer"] = d.HunyuanVideoTransformer3DModel(**{
            **config, "in_channels": 2 * 4 + 1 if kind == "latent_concat" else 4, "image_condition_type": kind,
            "guidance_embeds": kind != "latent_concat"}).eval()
        parts["image_processor"] = CLIPImageProcessor(
            crop_size=32, size=32, do_center_crop=True, do_normalize=True, do_resize=True, resample=3,
            image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
        return parts


FAMILY = HunyuanVideoFamily(
    name="hunyuan_video", pipeline="HunyuanVideoPipeline", transformer="HunyuanVideoTransformer3DModel",
    vae="AutoencoderKLHunyuanVideo", vae_spec=VaeSpec(stats="scale", width=lambda c: c.block_out_channels[0]),
    prediction_type="flow", cfg="separate", max_text_tokens=256, text_mask=True,
    sampling_defaults=dict(num_inference_steps=50, guidance_scale=6.0), default_size=(129, 720, 1280),
    tiny_size=(9, 32, 32), components=("text_encoder_2", "tokenizer_2"),
    text_components=("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"),
    call_options=("true_cfg_scale", "prompt_template"), prompt_options=("prompt_template",),
    conditioned={"HunyuanVideoImageToVideoPipeline": ConditionedPipeline(
        inputs=("image",), components=("text_encoder_2", "tokenizer_2", "image_processor"),
        sampling_defaults=dict(num_inference_steps=50, guidance_scale=1.0))},
    refused={
        "window_attention": "its blocks attend video and text tokens jointly, the text after the video with its "
                            "padding masked out; attention3d's prefix tokens come first and are never masked",
        "caption encoding": "its captions are two encoders' outputs (Llama states under a prompt template, CLIP's "
                            "pooled embedding), which a shard's one text encoder does not give",
        "fine-tuning": "caption shards hold one text encoder's states, not its Llama states and CLIP pooled "
                       "embedding, and its guidance-distilled transformer takes an embedded guidance scale",
    },
)
