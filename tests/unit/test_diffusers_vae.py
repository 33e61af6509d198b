"""``DiffusersVideoVAE``: diffusers' video VAEs as vidgen tokenizers (issue #37, part 1).

Tiny randomly initialised VAEs, configured as diffusers' own tests configure them
(``tests/models/autoencoders/test_models_autoencoder_*.py``), a few seconds each: exact frame counts for lengths
and sizes that break each VAE's native rule, encode/decode equal to the raw diffusers calls on the padded input,
latent normalisation equal to each family's diffusers pipeline, a flow generator training on the latents, save /
load through ``load_tokenizer``, and named errors for what cannot work.
"""
from __future__ import annotations

import argparse
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from diffusers import (AutoencoderKL, AutoencoderKLCogVideoX, AutoencoderKLCosmos, AutoencoderKLHunyuanVideo,
                       AutoencoderKLLTXVideo, AutoencoderKLMochi, AutoencoderKLWan)
from safetensors.torch import load_file, save_file

from vidgen.errors import ConfigError, InvalidInputError, MissingWeightsError, UnsupportedError
from vidgen.generators import FlowVideoTransformer, MaskedVideoTransformer
from vidgen.tokenizers import DiffusersVideoVAE, is_diffusers_video_vae, is_discrete, load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

_LTX = dict(latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4, upsample_factor=(1,) * 4,
            timestep_conditioning=False, patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False)
#: name -> (class, tiny config, (temporal, spatial) compression)
CONFIGS = {
    "cogvideox": (AutoencoderKLCogVideoX, dict(block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1,
                                               norm_num_groups=2, temporal_compression_ratio=4), (4, 8)),
    "wan": (AutoencoderKLWan, dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                   temperal_downsample=[False, True, True]), (4, 8)),
    # Wan 2.2's VAE: 2x2 patches and residual blocks -> 16x spatial compression
    "wan-2.2": (AutoencoderKLWan, dict(base_dim=16, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                       temperal_downsample=[False, True, True], is_residual=True, patch_size=2,
                                       in_channels=12, out_channels=12, latents_mean=[0.1, 0.2, -0.1, 0.0],
                                       latents_std=[1.5, 0.5, 1.0, 2.0]), (4, 16)),
    "ltx": (AutoencoderKLLTXVideo, _LTX, (4, 4)),
    # LTX-Video's real geometry: patch 4 and three scaling blocks -> 8k+1 frames, frames in multiples of 32
    "ltx-8x32": (AutoencoderKLLTXVideo, {**_LTX, "patch_size": 4, "spatio_temporal_scaling": (True, True, True, False),
                                         "decoder_spatio_temporal_scaling": (True, True, True, False)}, (8, 32)),
    "hunyuanvideo": (AutoencoderKLHunyuanVideo, dict(latent_channels=4, block_out_channels=(8, 8, 8, 8),
                                                     layers_per_block=1, norm_num_groups=4), (4, 8)),
    "mochi": (AutoencoderKLMochi, dict(encoder_block_out_channels=(32, 32, 32, 32),
                                       decoder_block_out_channels=(32, 32, 32, 32), latent_channels=12,
                                       layers_per_block=(1, 1, 1, 1, 1), add_attention_block=(False,) * 5), (6, 8)),
    "cosmos": (AutoencoderKLCosmos, dict(latent_channels=4, encoder_block_out_channels=(8, 8, 8, 8),
                                         decode_block_out_channels=(8, 8, 8, 8), attention_resolutions=(8,),
                                         resolution=64, num_layers=2, patch_size=4, spatial_compression_ratio=4,
                                         temporal_compression_ratio=4, latents_mean=None, latents_std=None), (4, 4)),
}
MAIN = ("cogvideox", "wan", "ltx")


def make(name: str, **overrides) -> DiffusersVideoVAE:
    cls, config, _ = CONFIGS[name]
    torch.manual_seed(0)
    vae = cls(**{**config, **overrides}).eval()
    if name.startswith("ltx"):  # non-trivial statistics (the buffers start at 0 / 1)
        vae.latents_mean.copy_(torch.linspace(-0.5, 0.5, vae.config.latent_channels))
        vae.latents_std.copy_(torch.linspace(0.5, 2.0, vae.config.latent_channels))
    return DiffusersVideoVAE(vae)


def video(b=1, t=6, h=16, w=16, seed=0):
    return torch.rand(b, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def pad_to_rule(x, frames: int, spatial: int):
    """The padding the adapter documents, written out: last frame repeated, edge pixels replicated."""
    t, h, w = x.shape[2:]
    target = 1 + -(-(t - 1) // frames) * frames
    x = torch.cat([x, x[:, :, -1:].expand(-1, -1, target - t, -1, -1)], 2)
    b = x.shape[0]
    flat = F.pad(x.reshape(b, -1, h, w), (0, -w % spatial, 0, -h % spatial), mode="replicate")
    return flat.reshape(b, 3, target, *flat.shape[-2:])


# ---------------------------------------------------------------------------------------------------- frame counts
SIZES = [("cogvideox", 6, 20, 28), ("cogvideox", 10, 16, 16), ("wan", 6, 20, 28), ("wan", 10, 16, 16),
         ("wan-2.2", 6, 20, 36),
         ("ltx", 12, 18, 14), ("ltx-8x32", 12, 40, 36), ("hunyuanvideo", 6, 20, 12), ("mochi", 10, 16, 16),
         ("cosmos", 6, 20, 28)]


@pytest.mark.parametrize("name,t,h,w", SIZES)
def test_exact_frames_and_raw_diffusers_equality(name, t, h, w):
    """Lengths / sizes off each native rule come back exactly, and equal the raw calls on the padded input."""
    tokenizer, (tc, sc) = make(name), CONFIGS[name][2]
    assert (tokenizer.temporal_compression_ratio, tokenizer.spatial_compression_ratio) == (tc, sc)
    frames = 2 * tc if name == "cogvideox" else tc  # CogVideoX decodes odd latent frame counts only
    x = video(2, t, h, w)
    with torch.no_grad():
        post = tokenizer.encode(x).latent_dist
        y = tokenizer.decode(post.mode(), t, h, w).sample
        raw = tokenizer.vae.encode(pad_to_rule(x, frames, sc)).latent_dist
        raw_y = tokenizer.vae.decode(raw.mode()).sample
    assert y.shape == x.shape
    grid = tokenizer.latent_grid(t, h, w)
    assert post.mean.shape == (2, tokenizer.latent_channels, *grid) and grid == raw.mode().shape[2:]
    assert torch.equal(post.mode(), raw.mode()) and torch.equal(post.mean, post.mode())
    assert raw_y.shape[2] == 1 + (grid[0] - 1) * tc >= t
    assert torch.equal(y, raw_y[:, :, :t, :h, :w])
    torch.testing.assert_close(tokenizer(x).sample, y, rtol=0, atol=1e-6)  # forward = encode + decode
    g = torch.Generator().manual_seed(3)
    assert torch.equal(post.sample(g), post.sample(torch.Generator().manual_seed(3)))


def test_native_rule_is_what_diffusers_needs():
    """Why the padding exists: raw Wan / LTX drop a frame of a 6-frame video; raw CogVideoX turns 2 latent frames
    into 8 (not 5); the adapter gives CogVideoX 1 + 2k latent frames and refuses an even count."""
    wan, ltx, cog = make("wan"), make("ltx"), make("cogvideox")
    with torch.no_grad():
        for tokenizer in (wan, ltx):
            assert tokenizer.vae.decode(tokenizer.vae.encode(video(t=6)).latent_dist.mode()).sample.shape[2] == 5
        assert cog.vae.decode(torch.zeros(1, 4, 2, 2, 2)).sample.shape[2] == 8
    assert cog.latent_grid(5, 16, 16) == (3, 2, 2) and cog.latent_grid(9, 16, 16) == (3, 2, 2)
    assert cog.latent_grid(10, 16, 16) == (5, 2, 2) and wan.latent_grid(10, 16, 16) == (4, 2, 2)
    with pytest.raises(InvalidInputError, match=r"z has 2 latent frames, but AutoencoderKLCogVideoX decodes 1 \+ 2k"):
        cog.decode(torch.zeros(1, 4, 2, 2, 2))
    with pytest.raises(InvalidInputError, match=r"num_frames=10 is out of range .* \(1\.\.9\)"):
        wan.decode(torch.zeros(1, 16, 3, 2, 2), num_frames=10)
    with pytest.warns(FutureWarning, match="latent_grid"):
        assert wan.latent_shape(6, 20, 28) == wan.latent_grid(6, 20, 28) == (3, 3, 4)


def test_ltx_timestep_conditioned_decoder_gets_its_pipelines_default_timestep():
    """LTX-Video 0.9.1+ decoders take a timestep: the adapter passes 0, the LTX pipeline's ``decode_timestep``
    default (with which the pipeline also adds no decode noise)."""
    tokenizer, x = make("ltx", timestep_conditioning=True), video(2, 6, 16, 16)
    with torch.no_grad():
        z = tokenizer.encode(x).latent_dist.mode()
        raw = tokenizer.vae.decode(z, torch.zeros(2)).sample
        assert torch.equal(tokenizer.decode(z, 6, 16, 16).sample, raw[:, :, :6])


# ---------------------------------------------------------------------------------------------------- normalisation
def _pipeline_formulas(tokenizer, z):
    """(normalize, denormalize) written as each diffusers pipeline writes them (pipelines/<family>/pipeline_*.py)."""
    vae, c = tokenizer.vae, z.shape[1]
    if isinstance(vae, AutoencoderKLWan):  # pipeline_wan.py / pipeline_wan_i2v.py
        mean = torch.tensor(vae.config.latents_mean).view(1, c, 1, 1, 1)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, c, 1, 1, 1)
        return (z - mean) * inv_std, z / inv_std + mean
    if isinstance(vae, AutoencoderKLLTXVideo):  # pipeline_ltx.py _normalize_latents / _denormalize_latents
        mean, std = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
        sf = vae.config.scaling_factor
        return (z - mean) * sf / std, z * std / sf + mean
    if isinstance(vae, AutoencoderKLMochi):  # pipeline_mochi.py
        mean = torch.tensor(vae.config.latents_mean).view(1, 12, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std).view(1, 12, 1, 1, 1)
        return (z - mean) * vae.config.scaling_factor / std, z * std / vae.config.scaling_factor + mean
    sf = vae.config.scaling_factor  # pipeline_cogvideox.py (vae_scaling_factor_image), pipeline_hunyuan_video.py
    return sf * z, 1 / sf * z


@pytest.mark.parametrize("name,overrides", [("cogvideox", {"scaling_factor": 0.7}), ("wan", {}), ("wan-2.2", {}),
                                            ("ltx", {}), ("hunyuanvideo", {}), ("mochi", {"scaling_factor": 1.5})])
def test_normalization_matches_the_diffusers_pipeline(name, overrides):
    tokenizer = make(name, **overrides)
    z = torch.randn(2, tokenizer.latent_channels, 3, 2, 2) * 3 + 1
    normalized, denormalized = _pipeline_formulas(tokenizer, z)
    torch.testing.assert_close(tokenizer.normalize_latents(z), normalized, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(tokenizer.denormalize_latents(z), denormalized, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(tokenizer.denormalize_latents(tokenizer.normalize_latents(z)), z, rtol=1e-5, atol=1e-5)
    assert not torch.equal(tokenizer.normalize_latents(z), z)  # every family here has non-trivial statistics
    bf16 = tokenizer.normalize_latents(z.bfloat16())
    assert bf16.dtype == torch.bfloat16  # statistics follow the latents' dtype, as the pipelines cast them


def test_per_frame_statistics_cosmos():
    """Cosmos stores one statistic per channel and latent frame; more latent frames than it covers is refused."""
    mean, std = torch.randn(4 * 3).tolist(), (torch.rand(4 * 3) + 0.5).tolist()
    tokenizer = make("cosmos", latents_mean=mean, latents_std=std)
    z = torch.randn(1, 4, 2, 2, 2)
    m, s = torch.tensor(mean).view(1, 4, 3, 1, 1)[:, :, :2], torch.tensor(std).view(1, 4, 3, 1, 1)[:, :, :2]
    torch.testing.assert_close(tokenizer.normalize_latents(z), (z - m) / s)  # pipeline_cosmos_video2world.py
    with pytest.raises(InvalidInputError, match="z has 4 latent frames, but the AutoencoderKLCosmos statistics "
                                                "cover 3"):
        tokenizer.normalize_latents(torch.randn(1, 4, 4, 2, 2))


# ---------------------------------------------------------------------------------------------------- generators
@pytest.mark.parametrize("name", MAIN)
def test_flow_generator_trains_on_its_latents(name):
    tokenizer = make(name)
    torch.manual_seed(0)
    model = FlowVideoTransformer.from_preset("tiny", **FlowVideoTransformer.tokenizer_kwargs(tokenizer),
                                                  max_grid=(4, 4, 4))
    x = video(2, 6, 16, 16)
    latents = model.encode_videos(tokenizer, x)
    assert latents.shape == (2, tokenizer.latent_channels, *tokenizer.latent_grid(6, 16, 16))
    with torch.no_grad():
        torch.testing.assert_close(latents, tokenizer.normalize_latents(tokenizer.encode(x).latent_dist.mode()))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(2):
        loss, _ = model.loss(latents, None, torch.Generator().manual_seed(step))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.decode_videos(tokenizer, latents, 6, 16, 16).shape == x.shape


def test_generator_training_on_a_diffusers_vae_folder(tmp_path):
    """``video_tokenizer=`` naming a diffusers VAE folder: load_tokenizer wraps it, the latents are cached, and the
    flow generator trains (the training loop needs nothing else)."""
    from vidgen.training import GeneratorTrainConfig, load_config, train_generator

    make("wan").save_pretrained(tmp_path / "vae")
    cfg = load_config(None, [
        f"run_dir={tmp_path / 'run'}", f"video_tokenizer={tmp_path / 'vae'}", "model.generator=flow",
        "model.preset=tiny", "model.overrides={max_grid: [4, 4, 4]}", "data.num_clips=4", "data.num_frames=10",
        "data.size=32", "data.batch=2", "data.conditioning=class", f"data.cache_dir={tmp_path / 'cache'}", "steps=2",
        "log_every=1", "sample_every=0", "ckpt_every=2", "optim.warmup_steps=0"], schema=GeneratorTrainConfig)
    metrics = train_generator(cfg)
    assert metrics["step"] == 2 and torch.isfinite(torch.tensor(metrics["loss"]))
    model = FlowVideoTransformer.from_pretrained(tmp_path / "run" / "final")
    assert model.config.in_channels == 16  # Wan's z_dim


def test_discrete_generators_and_unwrapped_vaes_get_named_errors():
    tokenizer = make("wan")
    assert not is_discrete(tokenizer)
    with pytest.raises(InvalidInputError, match=r"MaskedVideoTransformer works on token ids .* got DiffusersVideoVAE"):
        MaskedVideoTransformer.tokenizer_kwargs(tokenizer)
    with pytest.raises(InvalidInputError, match=r"wrapped as vidgen\.tokenizers\.DiffusersVideoVAE\(vae\), got "
                                                r"AutoencoderKLWan"):
        FlowVideoTransformer.tokenizer_kwargs(tokenizer.vae)
    with pytest.raises(UnsupportedError, match="streaming decode .* needs a vidgen causal tokenizer"):
        tokenizer.stream_decoder(16, 16)


# ---------------------------------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("name", MAIN)
def test_save_pretrained_is_a_plain_diffusers_folder_and_load_tokenizer_wraps_it(name, tmp_path):
    tokenizer, x = make(name), video(1, 6, 16, 16)
    tokenizer.save_pretrained(tmp_path)
    cls = CONFIGS[name][0]
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == cls.__name__
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, DiffusersVideoVAE) and type(loaded.vae) is cls and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x).sample, tokenizer(x).sample)
        z = torch.randn(1, tokenizer.latent_channels, 3, 2, 2)
        assert torch.equal(loaded.normalize_latents(z), tokenizer.normalize_latents(z))  # LTX: buffers saved
    plain = cls.from_pretrained(tmp_path)  # readable without vidgen
    assert torch.equal(plain.encode(pad_to_rule(x, *CONFIGS[name][2])).latent_dist.mode(),
                       loaded.encode(x).latent_dist.mode())


def test_from_pretrained_dtype_and_its_diffusers_spelling_torch_dtype(tmp_path):
    make("wan").save_pretrained(tmp_path)
    assert DiffusersVideoVAE.from_pretrained(tmp_path, dtype=torch.bfloat16).dtype == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # diffusers' spelling, taken as it is
        assert DiffusersVideoVAE.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(InvalidInputError, match="dtype=torch.float32 and torch_dtype=torch.bfloat16 disagree"):
        DiffusersVideoVAE.from_pretrained(tmp_path, dtype=torch.float32, torch_dtype=torch.bfloat16)
    bf16 = load_tokenizer(tmp_path, dtype=torch.bfloat16)
    with pytest.raises(InvalidInputError, match=r"x has dtype torch\.float32 but the model computes in "
                                                r"torch\.bfloat16"):
        bf16.encode(video())
    assert bf16.encode(video().bfloat16()).latent_dist.mode().dtype == torch.bfloat16


def test_unsupported_models_and_folders_get_named_errors(tmp_path):
    image_vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4)
    with pytest.raises(InvalidInputError, match=r"vae: diffusers\.models\.autoencoders\.autoencoder_kl\.AutoencoderKL "
                                                r"is not a supported diffusers video VAE \(AutoencoderKLCogVideoX, "
                                                r"AutoencoderKLWan, .*an image VAE"):
        DiffusersVideoVAE(image_vae)
    with pytest.raises(InvalidInputError, match=r"torch\.nn\.modules\.linear\.Linear is not a supported diffusers"):
        DiffusersVideoVAE(torch.nn.Linear(2, 2))
    tokenizer = make("wan")
    with pytest.raises(InvalidInputError, match="already wrapped"):
        DiffusersVideoVAE(tokenizer)
    assert DiffusersVideoVAE.wrap(tokenizer) is tokenizer and DiffusersVideoVAE.wrap(tokenizer.vae).vae is tokenizer.vae
    assert DiffusersVideoVAE.unwrap(tokenizer) is tokenizer.vae and DiffusersVideoVAE.unwrap(image_vae) is image_vae
    assert is_diffusers_video_vae(tokenizer.vae) and not is_diffusers_video_vae(tokenizer)
    image_vae.save_pretrained(tmp_path / "image")
    with pytest.raises(ConfigError, match=r"image/config\.json: _class_name 'AutoencoderKL' is not a vidgen tokenizer "
                                          r"\(.*\) nor a supported diffusers video VAE"):
        load_tokenizer(tmp_path / "image")
    with pytest.raises(ConfigError, match=r"_class_name 'AutoencoderKL' is not a supported diffusers video VAE"):
        DiffusersVideoVAE.from_pretrained(tmp_path / "image")
    with pytest.raises(MissingWeightsError, match=r"nothing: no config\.json here; expected a local folder"):
        DiffusersVideoVAE.from_pretrained(tmp_path / "nothing")
    tokenizer.save_pretrained(tmp_path / "wan")
    config = json.loads((tmp_path / "wan" / "config.json").read_text())
    (tmp_path / "wan" / "config.json").write_text(json.dumps({**config, "z_dim": 8}))
    with pytest.raises(ConfigError, match=r"wan/config\.json does not match the weights in .*wan: "
                                          r"decoder\.conv_in\.weight expected shape"):
        load_tokenizer(tmp_path / "wan")
    tokenizer.save_pretrained(tmp_path / "cut")
    weights = load_file(tmp_path / "cut" / "diffusion_pytorch_model.safetensors")
    save_file({k: v for k, v in weights.items() if k != "decoder.conv_out.bias"},
              tmp_path / "cut" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(MissingWeightsError, match=r"cut: the weight file does not match .*config\.json: 1 tensor\(s\) "
                                                  r"of the model are missing \['decoder\.conv_out\.bias'\]"):
        load_tokenizer(tmp_path / "cut")  # diffusers would leave it random, with a warning


# ---------------------------------------------------------------------------------------------------- tiling, eval
def test_tiling_and_slicing_pass_through():
    wan, cog = make("wan"), make("cogvideox")
    wan.enable_tiling(tile_sample_size=16, tile_overlap=8)  # vidgen's aliases (vidgen eval recon)
    assert wan.vae.use_tiling and (wan.vae.tile_sample_min_height, wan.vae.tile_sample_stride_width) == (16, 8)
    x = video(2, 6, 32, 24)
    with torch.no_grad():
        assert wan(x).sample.shape == x.shape
    wan.enable_tiling(tile_sample_min_height=24, tile_sample_stride_height=16)  # diffusers' own keywords
    assert (wan.vae.tile_sample_min_height, wan.vae.tile_sample_stride_height) == (24, 16)
    with pytest.raises(InvalidInputError, match="pass either tile_sample_size / tile_overlap or "
                                                "tile_sample_min_height"):
        wan.enable_tiling(tile_sample_size=16, tile_sample_min_height=16)
    wan.disable_tiling()
    assert not wan.vae.use_tiling
    cog.enable_tiling(tile_sample_size=32, tile_overlap=8)  # CogVideoX: an overlap factor
    assert (cog.vae.tile_sample_min_width, cog.vae.tile_overlap_factor_height) == (32, 0.25)
    cog.disable_tiling()
    with torch.no_grad():
        ref = wan(x).sample
        wan.enable_slicing()
        assert wan.vae.use_slicing
        torch.testing.assert_close(wan(x).sample, ref, rtol=0, atol=1e-5)
        wan.disable_slicing()
    assert not wan.vae.use_slicing


def test_memory_check_refuses_impossible_requests():
    tokenizer = make("wan")
    assert 0 < tokenizer.estimate_memory(1, 17, 64, 64) < tokenizer.estimate_memory(4, 17, 64, 64)
    with pytest.raises(InvalidInputError, match=r"x: encoding 1 video\(s\) of 100000 frames of 40000x40000 would "
                                                r"need about [\d,.]+ GiB"):
        tokenizer.encode(torch.zeros(1, 1, 1, 1, 1).expand(1, 3, 100_000, 40_000, 40_000))
    with pytest.raises(InvalidInputError, match=r"z: decoding"):
        tokenizer.decode(torch.zeros(1, 1, 1, 1, 1).expand(1, 16, 1000, 10_000, 10_000))


def test_vidgen_eval_recon_runs_on_a_saved_diffusers_vae(tmp_path, monkeypatch):
    """``vidgen eval recon`` (and eval/recon_benchmark.py, the same ``run``) on a diffusers VAE folder."""
    import vidgen.metrics.perceptual as perceptual
    from vidgen.cli import eval_recon

    def no_perceptual(*args, **kwargs):  # its network is not what this test is about
        raise MissingWeightsError("skipped in this test")

    monkeypatch.setattr(perceptual, "load_perceptual", no_perceptual)
    make("wan").save_pretrained(tmp_path / "vae")
    parser = argparse.ArgumentParser()
    eval_recon.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "vae"), "--clips", "2", "--frames", "6", "--size", "24", "--batch", "2",
                              "--precision", "fp32", "--png-clips", "1", "--tiling-size", "32", "--tile", "16",
                              "--tile-overlap", "8", "--out", str(tmp_path / "out")])
    result = eval_recon.run(args)
    assert result["class"] == "DiffusersVideoVAE" and result["frames"] == 6
    assert result["max_abs_diff_chunked_vs_one_shot"] == 0.0  # chunk_frames is accepted and changes nothing
    assert result["tiling"]["size"] == 32 and (tmp_path / "out" / "results.json").is_file()


# ---------------------------------------------------------------------------------------------------- pipelines
@pytest.mark.parametrize("name", MAIN)
def test_flow_pipeline_with_a_diffusers_vae_saves_loads_and_generates_bit_identically(name, tmp_path):
    """A FlowVideoPipeline whose ``vae`` is a diffusers video VAE: model_index.json names the diffusers class, the
    folder loads offline through load_pipeline, and the same seed gives the same frames, exactly num_frames of them
    (no 4k+1 / 8k+1 rule leaks out)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from vidgen.pipelines import FlowVideoPipeline, load_pipeline
    from vidgen.testing import perturb_weights
    tokenizer = make(name)
    torch.manual_seed(0)
    model = FlowVideoTransformer.from_preset("tiny", **FlowVideoTransformer.tokenizer_kwargs(tokenizer),
                                                  max_grid=(4, 4, 4), num_classes=3)
    perturb_weights(model)  # live weights: the zero-initialised head would make every sample the same
    pipe = FlowVideoPipeline(tokenizer.vae, model, FlowMatchEulerDiscreteScheduler())
    assert pipe.video_tokenizer.vae is tokenizer.vae and isinstance(pipe.video_tokenizer, DiffusersVideoVAE)
    kw = dict(class_labels=[1], num_frames=7, height=16, width=16, num_inference_steps=2, output_type="pt")
    frames = pipe(generator=torch.Generator().manual_seed(0), **kw).frames
    assert frames.shape == (1, 7, 3, 16, 16)
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", type(tokenizer.vae).__name__]
    loaded = load_pipeline(tmp_path / "pipe", dtype="fp32")
    assert isinstance(loaded.video_tokenizer, DiffusersVideoVAE)
    assert torch.equal(loaded(generator=torch.Generator().manual_seed(0), **kw).frames, frames)
    with pytest.raises(UnsupportedError, match="stream"):  # stories need a causal stream decoder: before sampling
        loaded.stream({0: "a", 4: "b"}, num_frames=30, height=16, width=16)
