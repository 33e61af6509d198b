"""Fine-tuning diffusers video models with vidgen's trainer on shards encoded with the model's own VAE and text
encoder: a LoRA saved in diffusers' format gives, through diffusers' ``load_lora_weights``, the frames vidgen gives
with the trained adapter; a full fine-tune saves a transformer folder diffusers loads; a resumed run is
bit-identical; LoRA target modules that are not in the model are refused by name."""
from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers.shards import write_captioned_clips
from vidgen.errors import ConfigError
from vidgen.families import family_named
from vidgen.pipelines import DiffusersVideoPipeline, load_pipeline
from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline
from vidgen.training import encode_dataset, load_config
from vidgen.training.finetune import FineTuneConfig, FineTuneModel, finetune
from vidgen.training.lora import add_lora

CAPTIONS = ["a red fox running", "a boat on a lake", "snow falling"]
TEXT_TOKENS = {"wan": 16, "ltx": 16, "cogvideox": 16}  # CogVideoX's tiny transformer reads exactly 16


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """family -> (pipeline folder, shard folder encoded with its VAE and text encoder)."""
    root = tmp_path_factory.mktemp("finetune")
    src = write_captioned_clips(root / "src", {f"{i}.mp4": (9, 32, 32, CAPTIONS[i % 3]) for i in range(4)})
    out = {}
    for family in ("wan", "ltx", "cogvideox"):
        folder = root / family
        tiny_native_pipeline(family).save_pretrained(folder)
        size = "x".join(map(str, family_named(family).tiny_size))
        encode_dataset(src, folder / "vae", root / f"shards-{family}", buckets=size, text_encoder=str(folder),
                       max_text_tokens=TEXT_TOKENS[family], num_workers=0, show_progress=False)
        out[family] = folder, root / f"shards-{family}"
    return out


def _config(models, family, run_dir, *extra) -> FineTuneConfig:
    folder, shards = models[family]
    return load_config(None, [f"pipeline={folder}", f"data.root={shards}", "data.batch=2",
                              f"data.max_text_tokens={TEXT_TOKENS[family]}", f"run_dir={run_dir}", "steps=3",
                              "log_every=1", "ckpt_every=3", "optim.warmup_steps=0", "optim.lr=5e-2",
                              "precision=fp32", "threads=1", *extra], schema=FineTuneConfig)


def _call(family, seed=0) -> dict:
    """The tiny family's size and call options, as the family gives them."""
    t, h, w = family_named(family).tiny_size
    return dict(num_frames=t, height=h, width=w, num_inference_steps=2, guidance_scale=4.0, output_type="np",
                generator=torch.Generator().manual_seed(seed), **family_named(family).tiny_call)


def _frames(pipe, family, seed=0):
    return pipe("a red fox running", **_call(family, seed)).frames


def _checkpoint(run_dir):
    return load_file(str(sorted((run_dir / "checkpoints").glob("step_*"))[-1] / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("family", ["wan", "cogvideox", "ltx"])
def test_a_lora_loads_in_diffusers_and_gives_vidgens_frames(family, models, tmp_path):
    folder, _ = models[family]
    metrics = finetune(_config(models, family, tmp_path / "run", "lora.rank=4", "lora.alpha=8"))
    assert metrics["step"] == 3 and np.isfinite(metrics["loss"])
    final = tmp_path / "run" / "final"
    assert (final / "pytorch_lora_weights.safetensors").is_file()
    # vidgen: the base folder plus the trained adapter from the last checkpoint
    ours = load_pipeline(folder, dtype="fp32")
    ours.set_progress_bar_config(disable=True)
    base = _frames(ours, family)
    model = FineTuneModel(ours.flow_generator, lora=True)
    add_lora(ours.transformer, 4, 8)
    model.load_state_dict(_checkpoint(tmp_path / "run"))
    tuned = _frames(ours, family)
    assert np.abs(tuned - base).max() > 1e-4  # the adapter was trained
    # diffusers: its own pipeline class, the base folder, load_lora_weights
    native = getattr(diffusers, ours.family.pipeline).from_pretrained(folder)
    native.set_progress_bar_config(disable=True)
    native.load_lora_weights(final)
    assert np.abs(_frames(DiffusersVideoPipeline.from_native(native), family) - tuned).max() <= 1e-5
    assert np.abs(native("a red fox running", **_call(family)).frames - tuned).max() <= 1e-5
    fresh = load_pipeline(folder, dtype="fp32")
    fresh.set_progress_bar_config(disable=True)
    fresh.load_lora_weights(final)  # the same loader from the vidgen pipeline
    assert np.abs(_frames(fresh, family) - tuned).max() <= 1e-5


def test_a_full_fine_tune_saves_a_transformer_folder_diffusers_loads(models, tmp_path):
    folder, _ = models["ltx"]
    finetune(_config(models, "ltx", tmp_path / "run", "gradient_checkpointing=true"))
    trained = diffusers.LTXVideoTransformer3DModel.from_pretrained(tmp_path / "run" / "final" / "transformer")
    state = _checkpoint(tmp_path / "run")
    assert all(torch.equal(v, state[f"generator.model.{k}"]) for k, v in trained.state_dict().items())
    native = diffusers.LTXPipeline.from_pretrained(folder, transformer=trained)
    native.set_progress_bar_config(disable=True)
    base = load_pipeline(folder, dtype="fp32")
    assert any(not torch.equal(v, base.transformer.state_dict()[k]) for k, v in trained.state_dict().items())
    assert np.abs(_frames(DiffusersVideoPipeline.from_native(native), "ltx") - _frames(base, "ltx")).max() > 1e-4


def test_a_resumed_run_is_bit_identical(models, tmp_path):
    same = ("lora.rank=2", "ckpt_every=2", "optim.schedule_steps=4")  # one LR schedule for the three calls
    finetune(_config(models, "wan", tmp_path / "a", "steps=4", *same))
    finetune(_config(models, "wan", tmp_path / "b", "steps=2", *same))
    finetune(_config(models, "wan", tmp_path / "b", "steps=4", *same))  # resumes at 2
    a, b = _checkpoint(tmp_path / "a"), _checkpoint(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_target_modules_that_are_missing_are_refused_by_name(models):
    pipe = load_pipeline(models["wan"][0], dtype="fp32")
    with pytest.raises(ConfigError, match=r"to_qkv_missing.*not modules of WanTransformer3DModel"):
        add_lora(pipe.transformer, 4, target_modules=["to_q", "to_qkv_missing"])
    assert not any("lora" in n for n, _ in pipe.transformer.named_parameters())  # nothing was added


def test_a_lora_in_the_original_wan_layout_loads_as_diffusers_loads_it(tmp_path):
    """A LoRA file in the original Wan key layout (``diffusion_model.blocks.N.self_attn.q.lora_down.weight`` with an
    ``alpha``, as LightX2V / CausVid LoRAs are published), written here: vidgen's ``load_lora_weights`` converts it
    as diffusers' own ``WanPipeline`` does, and samples the frames diffusers samples with it."""
    from safetensors.torch import save_file
    tiny_native_pipeline("wan").save_pretrained(tmp_path / "wan")
    ours = load_pipeline(tmp_path / "wan", dtype="fp32")
    ours.set_progress_bar_config(disable=True)
    base = _frames(ours, "wan")
    g, rank, state = torch.Generator().manual_seed(0), 4, {}
    for i, block in enumerate(ours.transformer.blocks):
        for short, layer in (("q", block.attn1.to_q), ("k", block.attn1.to_k), ("v", block.attn1.to_v),
                             ("o", block.attn1.to_out[0])):
            key = f"diffusion_model.blocks.{i}.self_attn.{short}"
            state[f"{key}.lora_down.weight"] = torch.randn(rank, layer.in_features, generator=g) * 0.3
            state[f"{key}.lora_up.weight"] = torch.randn(layer.out_features, rank, generator=g) * 0.3
            state[f"{key}.alpha"] = torch.tensor(float(rank * 2))
    save_file(state, str(tmp_path / "lora.safetensors"))
    ours.load_lora_weights(str(tmp_path / "lora.safetensors"))
    tuned = _frames(ours, "wan")
    assert np.abs(tuned - base).max() > 1e-3  # the adapter changes the video
    native = diffusers.WanPipeline.from_pretrained(tmp_path / "wan")
    native.set_progress_bar_config(disable=True)
    native.load_lora_weights(str(tmp_path / "lora.safetensors"))
    kw = dict(num_frames=9, height=32, width=32, num_inference_steps=2, guidance_scale=4.0, output_type="np",
              generator=torch.Generator().manual_seed(0))
    assert np.abs(native("a red fox running", **kw).frames - tuned).max() <= 1e-5
