"""Image-to-video folders of LTX-Video, CogVideoX and HunyuanVideo (``LTXImageToVideoPipeline``,
``CogVideoXImageToVideoPipeline``, ``HunyuanVideoImageToVideoPipeline``) as vidgen pipelines: frames and latents equal
diffusers' own call with the same seed (fp32, tiny random models: each class draws the image's posterior sample or
its noise from the generator in its own order), the folder saved as its class, and each class's quirks (LTX ignores
the image when given latents, refused by name; HunyuanVideo blends its start with the image latent, drops the image's
frames and encodes the negative prompt with a black image)."""
from __future__ import annotations

import json

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.errors import InvalidInputError
from vidgen.families import transformer_family
from vidgen.pipelines import DiffusersVideoPipeline, load_pipeline
from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models

#: the tiny HunyuanVideo LLaVA's prompt template (an image slot of its 16 vision tokens)
HUNYUAN_TEMPLATE = {"template": "{}", "crop_start": 0, "image_emb_len": 16, "image_emb_start": 5, "image_emb_end": 21,
                    "double_return_token_id": 0}
#: (family, class, variant) -> the call's options beyond prompt / image / generator: sizes, guidance as the class
#: applies it
CASES = {
    ("ltx", "LTXImageToVideoPipeline", None): dict(
        num_frames=9, height=32, width=32, guidance_scale=3.0, max_sequence_length=16),
    ("cogvideox", "CogVideoXImageToVideoPipeline", None): dict(
        num_frames=9, height=16, width=16, guidance_scale=6.0, max_sequence_length=16),
    ("hunyuan_video", "HunyuanVideoImageToVideoPipeline", None): dict(
        num_frames=9, height=32, width=32, true_cfg_scale=2.0, max_sequence_length=32, prompt_template=HUNYUAN_TEMPLATE),
    ("hunyuan_video", "HunyuanVideoImageToVideoPipeline", "token_replace"): dict(
        num_frames=9, height=32, width=32, guidance_scale=3.0, true_cfg_scale=2.0, max_sequence_length=32,
        prompt_template=HUNYUAN_TEMPLATE),
}
IDS = ["ltx", "cogvideox", "hunyuan-latent-concat", "hunyuan-token-replace"]
STEPS = 3
#: fp32 frames against diffusers' (measured: latents within 3e-6, frames within 1e-5)
TOL = 1e-5


def tiny_image(seed: int = 0, size: int = 32) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(size, size, 3) * 255).astype("uint8"))


@pytest.fixture(scope="module")
def natives():
    return {}


def _native(natives, key):
    if key not in natives:
        family, pipeline_class, variant = key
        natives[key] = tiny_native_pipeline(family, pipeline_class=pipeline_class, variant=variant)
    return natives[key]


def _pair(natives, key):
    native = _native(natives, key)
    pipe = DiffusersVideoPipeline.from_native(native)
    pipe.set_progress_bar_config(disable=True)
    return native, pipe


def _call(pipe, key, output_type="np", seed=0, **extra):
    kw = {**CASES[key], "num_inference_steps": STEPS, "output_type": output_type, **extra}
    return pipe(prompt="a red fox", negative_prompt="blurry", image=tiny_image(),
                generator=torch.Generator().manual_seed(seed), **kw).frames


@pytest.mark.parametrize("key", CASES, ids=IDS)
def test_image_to_video_frames_equal_diffusers_own_call_with_the_same_seed(key, natives):
    native, pipe = _pair(natives, key)
    ours, ref = _call(pipe, key), _call(native, key)
    nf = CASES[key]["num_frames"] - (4 if key[2] is None and key[0] == "hunyuan_video" else 0)  # its image frames
    assert ours.shape == ref.shape == (1, nf, CASES[key]["height"], CASES[key]["width"], 3)
    assert np.abs(ours - ref).max() <= TOL, np.abs(ours - ref).max()
    # the sampled latents in the class's own layout (LTX packed; HunyuanVideo latent_concat without the image frame)
    family = transformer_family(native.transformer)
    ours_lat = family.pipeline_latents(_call(pipe, key, "latent"), native.transformer)
    ref_lat = _call(native, key, "latent")
    assert ours_lat.shape == ref_lat.shape and (ours_lat - ref_lat).abs().max() <= TOL


@pytest.mark.parametrize("key", [k for k in CASES if k[2] is None], ids=["ltx", "cogvideox", "hunyuan"])
def test_an_image_to_video_folder_saves_as_its_class_and_loads_back(key, natives, tmp_path):
    native, pipe = _pair(natives, key)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == key[1]
    assert all(name in index for name in ("transformer", "vae", "text_encoder", "scheduler"))
    again = load_pipeline(tmp_path, dtype="fp32")
    assert again.pipeline_class_name == key[1] and type(again.native()).__name__ == key[1]
    assert np.abs(_call(again, key, num_inference_steps=1) - _call(native, key, num_inference_steps=1)).max() <= TOL


def test_ltx_image_to_video_refuses_latents_by_name(natives):
    """diffusers' LTX image-to-video call takes given latents as the whole start and never reads the image."""
    _, pipe = _pair(natives, ("ltx", "LTXImageToVideoPipeline", None))
    lat = torch.zeros(1, 8, 3, 8, 8)
    with pytest.raises(InvalidInputError, match=r"latents: LTXImageToVideoPipeline ignores the image"):
        _call(pipe, ("ltx", "LTXImageToVideoPipeline", None), latents=lat)


@pytest.mark.parametrize("key", [("cogvideox", "CogVideoXImageToVideoPipeline", None),
                                 ("hunyuan_video", "HunyuanVideoImageToVideoPipeline", None)],
                         ids=["cogvideox", "hunyuan"])
def test_given_latents_start_as_in_diffusers(key, natives):
    """CogVideoX still encodes the image (its posterior sample drawn from the generator) and HunyuanVideo still blends
    given latents with the image latent, as their classes do."""
    native, pipe = _pair(natives, key)
    kw = CASES[key]
    grid = pipe.video_tokenizer.latent_grid(kw["num_frames"], kw["height"], kw["width"])
    lat = torch.randn(1, 4, *grid, generator=torch.Generator().manual_seed(5))
    family = transformer_family(native.transformer)
    ours = _call(pipe, key, latents=lat)
    ref = _call(native, key, latents=family.pipeline_latents(lat, native.transformer))
    assert np.abs(ours - ref).max() <= TOL


def test_hunyuan_image_to_video_needs_a_template_with_the_vision_towers_image_slot(natives):
    key = ("hunyuan_video", "HunyuanVideoImageToVideoPipeline", None)
    _, pipe = _pair(natives, key)
    with pytest.raises(InvalidInputError, match=r"prompt_template: an image slot of image_emb_len=576 tokens.*"
                                                r"gives 16 image tokens"):
        _call(pipe, key, prompt_template={"template": "{}", "crop_start": 0})  # a text-to-video template


@pytest.mark.parametrize("key", [k for k in CASES if k[2] is None], ids=["ltx", "cogvideox", "hunyuan"])
def test_one_image_for_several_videos(key, natives):
    """LTX's class broadcasts the one image latent over the videos (compared); CogVideoX's and HunyuanVideo's fail
    there, vidgen gives each video the image (CogVideoX draws one posterior sample per video)."""
    native, pipe = _pair(natives, key)
    ours = _call(pipe, key, "latent", num_videos_per_prompt=2, num_inference_steps=1)
    assert ours.shape[0] == 2 and not torch.equal(ours[0], ours[1])
    if key[0] == "ltx":
        ref = _call(native, key, "latent", num_videos_per_prompt=2, num_inference_steps=1)
        assert (transformer_family(native.transformer).pipeline_latents(ours, native.transformer) - ref).abs().max() <= TOL


def test_cogvideox15_image_to_video_pads_its_latent_frames_and_inverts_the_image_scale_as_diffusers():
    """CogVideoX 1.5 image-to-video: the latent frames padded to the temporal patch (the image on the first, padded
    one), the ofs embedding, and a VAE with ``invert_scale_latents`` (the image latent divided by the scale)."""
    from vidgen.pipelines.diffusers_tiny import tiny_components
    parts = tiny_components("cogvideox")
    vae = {k: v for k, v in parts["vae"].config.items() if not k.startswith("_")}
    with torch.random.fork_rng():
        torch.manual_seed(2)
        parts["transformer"] = diffusers.CogVideoXTransformer3DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4, time_embed_dim=2,
            text_embed_dim=32, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
            patch_size_t=2, temporal_compression_ratio=4, max_text_seq_length=16, ofs_embed_dim=2,
            use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False, patch_bias=False).eval()
        torch.manual_seed(3)
        parts["vae"] = diffusers.AutoencoderKLCogVideoX(**{**vae, "invert_scale_latents": True}).eval()
    native = diffusers.CogVideoXImageToVideoPipeline(**parts)
    native.set_progress_bar_config(disable=True)
    pipe = DiffusersVideoPipeline.from_native(native)
    kw = dict(prompt="a fox", image=tiny_image(), num_frames=9, height=32, width=32, num_inference_steps=3,
              guidance_scale=4.0, max_sequence_length=16, output_type="np")  # 3 latent frames, sampled as 4
    ours = pipe(generator=torch.Generator().manual_seed(0), **kw).frames
    ref = native(generator=torch.Generator().manual_seed(0), **kw).frames
    assert ours.shape == ref.shape == (1, 9, 32, 32, 3) and np.abs(ours - ref).max() <= TOL


@pytest.mark.bf16
@pytest.mark.parametrize("key", CASES, ids=IDS)
def test_image_to_video_in_bf16_equals_diffusers(key):
    """bf16: the same operations on the same dtypes (latents equal; HunyuanVideo's token_replace keeps the image's
    float32 latent on frame 0, as its pipeline's cat promotes it); frames within diffusers' bf16 postprocessing
    rounding (2**-8 at [0.5, 1))."""
    native = tiny_native_pipeline(key[0], pipeline_class=key[1], variant=key[2]).to(torch.bfloat16)
    pipe = DiffusersVideoPipeline.from_native(native)
    pipe.set_progress_bar_config(disable=True)
    ours, ref = _call(pipe, key), _call(native, key)
    assert np.abs(ours.astype(np.float32) - ref.astype(np.float32)).max() <= 2 ** -8
    ours_lat = transformer_family(native.transformer).pipeline_latents(_call(pipe, key, "latent"), native.transformer)
    assert torch.equal(ours_lat.float(), _call(native, key, "latent").float())
