"""Model families as adapter files (vidgen/families/): no family name outside them, the registry's lookups, and
HunyuanVideo, added as one family file, sampled as diffusers' own ``HunyuanVideoPipeline`` samples it (embedded
guidance, true CFG with a negative prompt, two text encoders) on tiny random components, with every vidgen feature it
cannot serve refused by name."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch

from vidgen.errors import ConfigError, UnsupportedError
from vidgen.families import (FAMILIES, PIPELINE_FAMILIES, family_named, pipeline_family, transformer_family,
                             vae_family)
from vidgen.pipelines import DiffusersVideoPipeline
from vidgen.pipelines.diffusers_tiny import TINY_SIZES, tiny_native_pipeline

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"wan", "cogvideo", "cogvideox", "ltx", "ltxvideo", "hunyuan", "hunyuanvideo", "mochi", "cosmos"}
HUNYUAN = "hunyuan_video"
TEMPLATE = {"template": "{}", "crop_start": 0}  # the tiny Llama has no chat template to crop
#: bf16 frames: diffusers' postprocessing rounds ``x / 2 + 0.5`` in bf16 (2**-8 at [0.5, 1))
BF16_FRAME_TOL = 2 ** -8


# ---------------------------------------------------------------------------------------------------- no names
def words(text: str) -> set[str]:
    """Lower-cased words of ``text``: split on non-alphanumerics and CamelCase boundaries, with every run of
    neighbouring CamelCase parts joined too (``CogVideoXPipeline`` -> cog, video, ..., cogvideo, cogvideox...)."""
    out = set()
    for token in re.split(r"[^A-Za-z0-9]+", text):
        parts = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", token)
        out |= {"".join(parts[i:j]).lower() for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)}
    return out


def family_literals(path: Path) -> list[str]:
    """``file:line: literal`` for each string constant of ``path`` (f-string parts included, docstrings not) that
    names a family."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str)}
    return [f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:80]!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and words(node.value) & NAMES]


def test_the_word_splitter_finds_family_names_in_class_names_and_prose():
    assert {"cogvideo", "cogvideox", "pipeline"} <= words("CogVideoXDPMScheduler CogVideoXPipeline")
    assert {"ltx", "ltxvideo", "wan", "hunyuanvideo"} <= words("LTXVideoTransformer3DModel AutoencoderKLWan "
                                                              "HunyuanVideoPipeline")
    assert not words("swan song, towards lite transformers") & NAMES


def test_no_string_literal_outside_vidgen_families_names_a_family():
    found = [hit for path in sorted((ROOT / "vidgen").rglob("*.py")) if "families" not in path.parts
             for hit in family_literals(path)]
    assert not found, "family names outside vidgen/families/ (move the code into the family):\n" + "\n".join(found)
    inside = [hit for path in sorted((ROOT / "vidgen" / "families").glob("*.py")) for hit in family_literals(path)]
    assert len(inside) > 20  # the check sees the literals where they belong: it cannot pass vacuously


# ---------------------------------------------------------------------------------------------------- registry
def test_each_family_module_holds_one_family_and_the_registry_finds_it():
    modules = sorted(p.stem for p in (ROOT / "vidgen" / "families").glob("*.py"))
    assert sorted(f.name for f in FAMILIES) == sorted(set(modules) - {"__init__", "base", "registry"})
    for family in PIPELINE_FAMILIES:
        assert family_named(family.name) is family and pipeline_family(family.pipeline) is family
        assert family.sampling_defaults and len(family.default_size) == 3 and family.cfg in ("separate", "batched")
        assert isinstance(getattr(diffusers, family.pipeline), type)
    subclass = type("MyWan", (diffusers.WanTransformer3DModel,), {})  # lookups walk the class's bases
    assert transformer_family(subclass.__new__(subclass)).name == "wan"
    assert vae_family(diffusers.AutoencoderKLCosmos.__new__(diffusers.AutoencoderKLCosmos)).pipeline is None
    assert transformer_family(torch.nn.Linear(2, 2)) is None and pipeline_family("StableDiffusionPipeline") is None


# ---------------------------------------------------------------------------------------------------- HunyuanVideo
def _hunyuan(dtype=torch.float32):
    native = tiny_native_pipeline(HUNYUAN).to(dtype)
    pipe = DiffusersVideoPipeline.from_native(native)
    pipe.set_progress_bar_config(disable=True)
    return native, pipe


def _kwargs(**extra) -> dict:
    t, h, w = TINY_SIZES[HUNYUAN]
    return {**dict(num_frames=t, height=h, width=w, num_inference_steps=3, guidance_scale=4.5, true_cfg_scale=3.0,
                   negative_prompt="blurry, dark", prompt_template=TEMPLATE, max_sequence_length=16), **extra}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_hunyuan_video_equals_diffusers_own_pipeline_call(dtype):
    """Same prompt, negative prompt, latents and steps: embedded guidance and true CFG as diffusers applies them."""
    native, pipe = _hunyuan(dtype)
    kw = _kwargs()
    grid = pipe.video_tokenizer.latent_grid(kw["num_frames"], kw["height"], kw["width"])
    lat = torch.randn(1, pipe.flow_generator.in_channels, *grid, generator=torch.Generator().manual_seed(0))
    lat = lat.to(dtype).float()  # representable in both dtypes
    ours = pipe("a red fox", latents=lat, output_type="np", **kw).frames
    ref = native("a red fox", latents=lat.clone(), output_type="np", **kw).frames
    assert ours.shape == ref.shape == (1, kw["num_frames"], kw["height"], kw["width"], 3)
    err = np.abs(ours - ref).max()
    print(f"HunyuanVideo {dtype}: frames max abs diff {err:.3g}")
    assert err <= (1e-5 if dtype == torch.float32 else BF16_FRAME_TOL), err
    ours_lat = pipe("a red fox", latents=lat, output_type="latent", **kw).frames
    ref_lat = native("a red fox", latents=lat.clone(), output_type="latent", **kw).frames
    diff = (ours_lat.float() - ref_lat.float()).abs().max().item()
    print(f"HunyuanVideo {dtype}: latents max abs diff {diff:.3g}")
    assert diff <= (1e-5 if dtype == torch.float32 else 0.0), diff  # bf16: bit-identical
    if dtype == torch.float32:  # both guidances took effect
        for change in (dict(true_cfg_scale=1.0), dict(guidance_scale=1.0), dict(negative_prompt=None)):
            other = pipe("a red fox", latents=lat, output_type="latent", **{**kw, **change}).frames
            assert (other - ours_lat).abs().max() > 1e-4, change


def test_hunyuan_video_seeded_noise_and_folders(tmp_path):
    from vidgen.pipelines import load_pipeline
    native, pipe = _hunyuan()
    kw = _kwargs(num_inference_steps=2, output_type="np")
    ours = pipe("a boat", generator=torch.Generator().manual_seed(3), **kw).frames
    ref = native("a boat", generator=torch.Generator().manual_seed(3), **kw).frames
    assert np.abs(ours - ref).max() <= 1e-5
    pipe.save_pretrained(tmp_path)
    again = load_pipeline(tmp_path, dtype="fp32")
    assert type(again.text_encoder_2).__name__ == "CLIPTextModel" and again.family.name == HUNYUAN
    assert np.abs(again("a boat", generator=torch.Generator().manual_seed(3), **kw).frames - ours).max() <= 1e-5


@pytest.mark.parametrize("call, match", [
    (dict(frame_rate=24.0), "frame_rate: not available for the HunyuanVideoPipeline family"),
    (dict(guidance_scale_2=2.0), "guidance_scale_2: not available for the HunyuanVideoPipeline family"),
    (dict(decode_timestep=0.05), "decode_timestep: not available for the HunyuanVideoPipeline family"),
    (dict(conditioning_frames=torch.zeros(3, 1, 32, 32)), "conditioning_frames: not available"),
], ids=["frame_rate", "guidance_scale_2", "decode_timestep", "conditioning_frames"])
def test_what_hunyuan_video_cannot_serve_is_refused_by_name_before_any_work(call, match, monkeypatch):
    native, pipe = _hunyuan()
    monkeypatch.setattr(type(pipe), "encode_prompt", lambda *a, **k: pytest.fail("work began before the refusal"))
    with pytest.raises(UnsupportedError, match=match):
        pipe("a fox", **{**_kwargs(), **call})


def test_hunyuan_video_window_attention_and_fine_tuning_are_refused_by_name(tmp_path):
    from vidgen.adapters.window import window_attention
    from vidgen.text import load_text_encoder
    from vidgen.training.finetune import _load_native
    native, pipe = _hunyuan()
    with pytest.raises(UnsupportedError, match=r"window_attention: not available for the HunyuanVideoPipeline family "
                                               r"\(its blocks attend video and text tokens jointly"):
        window_attention(pipe.transformer, window=(1, 3, 3))
    native.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedError, match="fine-tuning: not available for the HunyuanVideoPipeline family"):
        _load_native(tmp_path)
    with pytest.raises(UnsupportedError, match="caption encoding: not available for the HunyuanVideoPipeline family"):
        load_text_encoder(str(tmp_path))


def test_other_families_refuse_hunyuan_options_and_components_by_name():
    wan = DiffusersVideoPipeline.from_native(tiny_native_pipeline("wan"))
    t, h, w = TINY_SIZES["wan"]
    with pytest.raises(UnsupportedError, match=r"prompt_template, true_cfg_scale: not available for the WanPipeline"):
        wan("a fox", num_frames=t, height=h, width=w, true_cfg_scale=2.0, prompt_template=TEMPLATE)
    parts = {k: v for k, v in wan.components.items() if v is not None}
    with pytest.raises(ConfigError, match="text_encoder_2: the WanPipeline family has no such component"):
        DiffusersVideoPipeline(**parts, text_encoder_2=wan.text_encoder)
