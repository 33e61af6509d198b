"""Diffusers video pipeline folders (Wan, CogVideoX, LTX-Video) as vidgen flow pipelines: loading, saving for
diffusers, parity with diffusers' own pipeline call in fp32 and bf16, frame counts, callbacks, the command line and
the features refused by name. Tiny random models built as diffusers' own tests size them."""
from __future__ import annotations

import json

import diffusers
import numpy as np
import pytest
import torch

from vidgen.errors import ConfigError, UnsupportedError
from vidgen.families import family_named, transformer_family
from vidgen.adapters import DiffusersVideoTransformer
from vidgen.pipelines import DiffusersVideoPipeline, FlowVideoPipeline, VideoPipelineBase, load_pipeline
from vidgen.pipelines.diffusers_tiny import TINY_FAMILIES, TINY_SIZES, tiny_native_pipeline

#: bf16 frames: diffusers' postprocessing rounds ``x / 2 + 0.5`` in bf16 (one ulp at [0.5, 1) is 2**-8); vidgen's
#: latents are bit-identical to diffusers' in bf16, so the frames differ by that rounding only
BF16_FRAME_TOL = 2 ** -8
STEPS = 3
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """family -> a saved tiny diffusers pipeline folder."""
    out = {}
    for family in TINY_FAMILIES:
        path = tmp_path_factory.mktemp(f"tiny-{family}")
        tiny_native_pipeline(family).save_pretrained(path)
        out[family] = path
    return out


def _call_kwargs(family: str) -> dict:
    t, h, w = TINY_SIZES[family]
    return dict(num_frames=t, height=h, width=w, num_inference_steps=STEPS, guidance_scale=4.0, output_type="np",
                **family_named(family).tiny_call)


def _native_layout(native, lat: torch.Tensor, dtype) -> torch.Tensor:
    """vidgen's (B, C, t, h, w) starting noise in the layout (and dtype) the family's diffusers pipeline takes: the
    family says which (``Family.pipeline_latents``); the values are representable in both dtypes."""
    return transformer_family(native.transformer).pipeline_latents(lat, native.transformer).to(dtype)


def _from_native_layout(native, x: torch.Tensor, grid) -> torch.Tensor:
    return transformer_family(native.transformer).from_pipeline_latents(x, grid, native.transformer)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_a_diffusers_folder_loads_as_a_vidgen_pipeline_and_saves_for_diffusers(family, folders, tmp_path):
    pipe = load_pipeline(folders[family], dtype="fp32")
    # a sibling of vidgen's own flow pipeline on the shared base and recipe, not a subclass of it
    assert isinstance(pipe, DiffusersVideoPipeline) and isinstance(pipe, VideoPipelineBase)
    assert not isinstance(pipe, FlowVideoPipeline)
    assert isinstance(pipe.flow_generator, DiffusersVideoTransformer)
    assert type(pipe.vae).__module__.startswith("diffusers") and pipe.text_encoder is not None
    assert pipe.sampling_config.num_inference_steps == pipe.family.sampling_defaults["num_inference_steps"]
    pipe.sampling_config = {"num_inference_steps": 2, "guidance_scale": 3.0}
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == pipe.family.pipeline
    native = getattr(diffusers, index["_class_name"]).from_pretrained(tmp_path)  # diffusers' own class reads it
    for name in ("transformer", "vae"):
        a, b = getattr(native, name).state_dict(), getattr(pipe, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    again = load_pipeline(tmp_path, dtype="fp32")
    assert again.sampling_config.num_inference_steps == 2 and again.sampling_config.guidance_scale == 3.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_frames_equal_diffusers_own_pipeline_call(family, dtype):
    """Same prompt, latents, scheduler and steps, guidance as the family applies it: diffusers' frames."""
    native = tiny_native_pipeline(family).to(dtype)
    pipe = DiffusersVideoPipeline.from_native(native)
    pipe.set_progress_bar_config(disable=True)
    kw = _call_kwargs(family)
    grid = pipe.video_tokenizer.latent_grid(kw["num_frames"], kw["height"], kw["width"])
    lat = torch.randn(1, pipe.flow_generator.in_channels, *grid, generator=torch.Generator().manual_seed(0))
    lat = lat.to(dtype).float()  # representable in both dtypes
    ours = pipe("a red fox", latents=lat, **kw).frames
    ref = native("a red fox", latents=_native_layout(native, lat, dtype), **kw).frames
    assert ours.shape == ref.shape == (1, kw["num_frames"], kw["height"], kw["width"], 3)
    err = np.abs(ours - ref).max()
    assert err <= (1e-5 if dtype == torch.float32 else BF16_FRAME_TOL), err
    kw["output_type"] = "latent"
    ours_lat = pipe("a red fox", latents=lat, **kw).frames
    ref_lat = _from_native_layout(native, native("a red fox", latents=_native_layout(native, lat, dtype),
                                                 **kw).frames, grid)
    tol = 1e-5 if dtype == torch.float32 else 0.0  # bf16: the same operations on the same dtypes
    assert (ours_lat.float() - ref_lat.float()).abs().max() <= tol


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_seeded_noise_is_diffusers_noise_and_frame_counts_are_exact(family, folders):
    pipe = load_pipeline(folders[family], dtype="fp32")
    native = pipe.native()
    kw = {**_call_kwargs(family), "num_inference_steps": 2}
    ours = pipe("a boat", generator=torch.Generator().manual_seed(3), **kw).frames
    ref = native("a boat", generator=torch.Generator().manual_seed(3), **kw).frames
    assert np.abs(ours - ref).max() <= 1e-5
    t, h, w = TINY_SIZES[family]
    odd = pipe("a boat", **{**kw, "num_frames": t - 2, "height": h - 2, "output_type": "pt"}).frames
    assert tuple(odd.shape) == (1, t - 2, 3, h - 2, w)  # any frame count and size, exactly


def test_callbacks_see_every_step_and_can_stop(folders):
    pipe = load_pipeline(folders["wan"], dtype="fp32")
    seen = []

    def callback(p, i, t, tensors):
        seen.append((i, tuple(tensors["latents"].shape)))
        if i == 1:
            p._interrupt = True
        return {}

    pipe("a boat", **{**_call_kwargs("wan"), "num_inference_steps": 4}, callback_on_step_end=callback)
    assert [i for i, _ in seen] == [0, 1] and seen[0][1][1] == 16


@pytest.mark.parametrize("call", [
    dict(prompt={0: "a", 8: "b"}), dict(class_labels=[1]), dict(conditioning_frames=torch.zeros(3, 1, 32, 32)),
    dict(context_frames=2), dict(guidance_interval=(0.2, 0.8))], ids=["story", "class", "frames", "context",
                                                                       "interval"])
def test_features_the_family_cannot_serve_are_refused_by_name(call, folders):
    pipe = load_pipeline(folders["wan"], dtype="fp32")
    name = "stories" if "prompt" in call else next(iter(call))
    with pytest.raises(UnsupportedError, match=name):
        pipe(**{"prompt": "a", **call, **_call_kwargs("wan")})
    with pytest.raises(UnsupportedError, match="stories"):
        next(iter(pipe.stream("a", num_frames=9)))


def test_the_folder_is_a_tokenizer_for_vidgen_eval_and_data(folders):
    from vidgen.tokenizers import DiffusersVideoVAE, load_tokenizer
    tok = load_tokenizer(folders["ltx"])  # vidgen eval recon FOLDER, vidgen data encode --tokenizer FOLDER
    assert isinstance(tok, DiffusersVideoVAE) and type(tok.vae).__name__ == "AutoencoderKLLTXVideo"


def test_a_folder_of_another_pipeline_is_refused_by_name(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ConfigError, match="StableDiffusionPipeline.*not a supported video pipeline"):
        load_pipeline(tmp_path)


def test_vidgen_generate_takes_a_diffusers_folder(folders, tmp_path, capsys):
    from vidgen.cli import main
    out = tmp_path / "fox.mp4"
    assert main(["generate", "a fox", "--pipeline", str(folders["ltx"]), "--num-frames", "9", "--height", "32",
                 "--width", "32", "--steps", "2", "--precision", "fp32", "--seed", "0", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and "video:" in capsys.readouterr().out
    assert main(["generate", "--story", "a; b", "--frames-per-prompt", "9", "--pipeline", str(folders["ltx"]),
                 "--height", "32", "--width", "32", "--out", str(tmp_path / "s.mp4")]) != 0
    assert "stories and long videos" in capsys.readouterr().err and not (tmp_path / "s.mp4").exists()


def test_wan22_samples_its_second_transformer_below_the_boundary_as_diffusers_does(tmp_path):
    from vidgen.pipelines.diffusers_tiny import tiny_components
    parts = tiny_components("wan")
    with torch.random.fork_rng():
        torch.manual_seed(1)
        low_noise = diffusers.WanTransformer3DModel(**parts["transformer"].config)
    native = diffusers.WanPipeline(**parts, transformer_2=low_noise, boundary_ratio=0.5)
    native.set_progress_bar_config(disable=True)
    pipe = DiffusersVideoPipeline.from_native(native)
    kw = {**_call_kwargs("wan"), "num_inference_steps": 4, "guidance_scale_2": 2.0}
    ours = pipe("a fox", generator=torch.Generator().manual_seed(0), **kw).frames
    assert np.abs(ours - native("a fox", generator=torch.Generator().manual_seed(0), **kw).frames).max() <= 1e-5
    pipe.save_pretrained(tmp_path)
    again = load_pipeline(tmp_path, dtype="fp32")
    assert again.transformer_2 is not None and again.config.boundary_ratio == 0.5


def test_cogvideox15_pads_latent_frames_to_its_temporal_patch_as_diffusers_does():
    from vidgen.pipelines.diffusers_tiny import tiny_components
    parts = tiny_components("cogvideox")
    with torch.random.fork_rng():
        torch.manual_seed(2)
        parts["transformer"] = diffusers.CogVideoXTransformer3DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=2,
            text_embed_dim=32, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
            patch_size_t=2, temporal_compression_ratio=4, max_text_seq_length=16,
            use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False, patch_bias=False)
    native = diffusers.CogVideoXPipeline(**parts)
    native.set_progress_bar_config(disable=True)
    pipe = DiffusersVideoPipeline.from_native(native)
    kw = dict(num_frames=9, height=32, width=32, num_inference_steps=3, guidance_scale=4.0, output_type="np",
              max_sequence_length=16)  # 3 latent frames, sampled as 4 (patch_size_t=2), the first dropped
    ours = pipe("a fox", generator=torch.Generator().manual_seed(0), **kw).frames
    ref = native("a fox", generator=torch.Generator().manual_seed(0), **kw).frames
    assert ours.shape == (1, 9, 32, 32, 3) and np.abs(ours - ref).max() <= 1e-5


def test_ltx_timestep_conditioned_decoding_matches_diffusers():
    from vidgen.pipelines.diffusers_tiny import tiny_components
    parts = tiny_components("ltx")
    config = {k: v for k, v in parts["vae"].config.items() if not k.startswith("_")}
    with torch.random.fork_rng():
        torch.manual_seed(3)
        parts["vae"] = diffusers.AutoencoderKLLTXVideo(**{**config, "timestep_conditioning": True}).eval()
    native = diffusers.LTXPipeline(**parts)
    native.set_progress_bar_config(disable=True)
    pipe = DiffusersVideoPipeline.from_native(native)
    frames = []
    for extra in ({}, {"decode_timestep": 0.05, "decode_noise_scale": 0.025}):
        kw = {**_call_kwargs("ltx"), **extra}
        ours = pipe("a fox", generator=torch.Generator().manual_seed(0), **kw).frames
        assert np.abs(ours - native("a fox", generator=torch.Generator().manual_seed(0), **kw).frames).max() <= 1e-5
        frames.append(ours)
    assert np.abs(frames[0] - frames[1]).max() > 1e-4  # the decode timestep and noise took effect
    with pytest.raises(UnsupportedError, match="decode_timestep"):
        tiny = DiffusersVideoPipeline.from_native(tiny_native_pipeline("wan"))
        tiny("a fox", **{**_call_kwargs("wan"), "decode_timestep": 0.05})
