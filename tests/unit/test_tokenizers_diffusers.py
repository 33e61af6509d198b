"""CausalVAE / CausalVQVAE as diffusers components: the features diffusers' generic model tests exercise.

diffusers' ``ModelTesterMixin`` / ``AutoencoderTesterMixin`` live in its repository's tests, not in the wheel, so
these are equivalents: save/load, dtypes, determinism, layerwise casting, gradient checkpointing, slicing,
tiling with diffusers' keywords, device maps / accelerate offload, the config entries pipelines read, the
posterior's ``DiagonalGaussianDistribution`` interface, and torch.compile tracing the input checks.
"""
import json
import math

import pytest
import torch
from diffusers.models.autoencoders.vae import AutoencoderMixin

import vidgen.tokenizers.base as codec_base
from vidgen.errors import InvalidInputError
from vidgen.tokenizers import CausalVAE, CausalVQVAE, DiagonalGaussian
from vidgen.tokenizers.layers import ResBlock
from vidgen.tokenizers.tiling import tiled_apply

torch.set_num_threads(1)
KINDS = ["vae", "fsq"]


def make(kind: str, perturb: bool = True):
    """Tiny model with non-trivial weights everywhere (residual branches are zero-initialised)."""
    torch.manual_seed(0)
    model = CausalVAE.from_preset("tiny") if kind == "vae" else CausalVQVAE.from_preset("tiny", quantizer=kind)
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def clone(model):
    copy = type(model).from_config(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.train(model.training)


def video(b=2, t=5, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def run(model, x, **kw):
    with torch.no_grad():
        return model(x, **kw).sample


# ----------------------------------------------------------------------------------- save / load, dtypes
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_and_determinism(kind, tmp_path):
    model, x = make(kind), video()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "temporal_compression_ratio" not in saved and "latents_mean" not in saved  # derived: never saved
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert torch.equal(run(loaded, x), run(model, x))
    assert torch.equal(run(model, x), run(model, x))  # determinism


@pytest.mark.parametrize("kind", KINDS)
def test_dtype_conversion(kind, tmp_path):
    model, x = make(kind), video(b=1)
    model.save_pretrained(tmp_path)
    ref = run(model, x)
    for dtype in (torch.bfloat16, torch.float16):
        loaded = type(model).from_pretrained(tmp_path, torch_dtype=dtype).eval()
        assert loaded.dtype == dtype
        with pytest.raises(InvalidInputError, match="computes in"):
            loaded.encode(x)  # strict: the input must be in the compute dtype
        try:
            out = run(loaded, x.to(dtype))
        except RuntimeError as e:  # a CPU kernel without this dtype
            if dtype == torch.float16 and "not implemented" in str(e).lower():
                pytest.skip(f"float16 forward unsupported on this CPU build: {e}")
            raise
        assert out.dtype == dtype  # low precision (and FSQ levels flipping): a loose closeness bound
        assert torch.nn.functional.cosine_similarity(out.float().flatten(), ref.flatten(), dim=0) > 0.95


# ----------------------------------------------------------------------------------- layerwise casting
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("storage,compute", [(torch.float8_e4m3fn, torch.float32), (torch.bfloat16, torch.float32),
                                             (torch.float8_e4m3fn, torch.bfloat16)])
def test_layerwise_casting_forward(kind, storage, compute):
    model, x = make(kind), video()
    ref = run(model, x)
    cast = clone(model).to(compute)
    cast.enable_layerwise_casting(storage_dtype=storage, compute_dtype=compute)
    assert cast.encoder.stem.weight.dtype == storage and cast.decoder.head.weight.dtype == storage
    assert cast.encoder.blocks[0].norm1.weight.dtype == compute  # norms are skipped by diffusers' default patterns
    assert cast.dtype == cast.model_dtype == compute
    out = run(cast, x.to(compute))
    assert out.dtype == compute and cast.encoder.stem.weight.dtype == storage
    cos = torch.nn.functional.cosine_similarity(out.float().flatten(), ref.flatten(), dim=0)
    assert cos > 0.95, cos
    with pytest.raises(InvalidInputError, match="computes in"):
        cast.encode(x.to(storage))  # still strict: storage-dtype input is not the compute dtype


# ----------------------------------------------------------------------------------- gradient checkpointing
def _grads(model, loss_fn):
    model.zero_grad()
    loss = loss_fn(model)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _forward_loss(model):
    return (model(video(t=9)).sample - 0.1).pow(2).mean()


def _chunked_loss(model):  # the causal cache path: chunked encode and decode, then a loss on the output
    x = video(t=9)
    z = model.encode(x, chunk_frames=2).latent_dist.mode() if isinstance(model, CausalVAE) else \
        model.encode(x, chunk_frames=2).codes
    return (model.decode(z, chunk_frames=1).sample - 0.1).pow(2).mean()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loss_fn", [_forward_loss, _chunked_loss], ids=["forward", "chunked"])
def test_gradient_checkpointing_gives_identical_gradients(kind, loss_fn):
    model = make(kind).train()
    loss, grads = _grads(model, loss_fn)
    ckpt = clone(model)
    ckpt.enable_gradient_checkpointing()
    assert ckpt.is_gradient_checkpointing and ckpt.training
    assert {type(m).__name__ for m in ckpt.modules() if getattr(m, "gradient_checkpointing", False)} == \
        {"CausalEncoder", "CausalDecoder"}
    calls = []
    block = next(m for m in ckpt.decoder.modules() if isinstance(m, ResBlock))
    block.register_forward_pre_hook(lambda *a: calls.append(1))
    loss2, grads2 = _grads(ckpt, loss_fn)
    assert len(calls) == 2 * (3 if loss_fn is _chunked_loss else 1)  # recomputed in backward: checkpointing is on
    torch.testing.assert_close(loss2, loss, rtol=0, atol=1e-6)
    assert grads.keys() == grads2.keys() and len(grads) > 10
    for name in grads:
        torch.testing.assert_close(grads2[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)
    ckpt.disable_gradient_checkpointing()
    assert not ckpt.is_gradient_checkpointing


def test_gradient_checkpointing_off_without_grad():
    model = make("vae").train()
    model.enable_gradient_checkpointing()
    calls = []
    block = next(m for m in model.decoder.modules() if isinstance(m, ResBlock))
    block.register_forward_pre_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(video())
    assert len(calls) == 1


# ----------------------------------------------------------------------------------- device map / offload
@pytest.mark.parametrize("kind", KINDS)
def test_device_map_and_accelerate_offload(kind, tmp_path):
    from accelerate import cpu_offload

    model, x = make(kind), video()
    ref = run(model, x)
    assert set(model._get_no_split_modules("auto")) == {"ResBlock", "Downsample", "Upsample"}
    model.save_pretrained(tmp_path / "model")
    loaded = type(model).from_pretrained(tmp_path / "model", device_map="cpu").eval()
    assert torch.equal(run(loaded, x), ref)
    # part on the CPU, the rest offloaded to disk (loaded module by module during forward)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    offloaded = type(model).from_pretrained(tmp_path / "model", device_map="auto", max_memory={"cpu": size // 2},
                                            offload_folder=tmp_path / "offload").eval()
    assert "disk" in set(offloaded.hf_device_map.values())
    assert torch.equal(run(offloaded, x), ref)
    hooked = type(model).from_pretrained(tmp_path / "model").eval()
    cpu_offload(hooked, execution_device=torch.device("cpu"))
    assert hooked.encoder.stem.weight.device.type == "meta"
    assert torch.equal(run(hooked, x), ref)


# ----------------------------------------------------------------------------------- slicing and tiling
@pytest.mark.parametrize("kind", KINDS)
def test_slicing_gives_identical_results(kind):
    """Per-sample processing: equal up to float rounding (kernels block differently for batch 1)."""
    model, x = make(kind), video(b=3, t=6, h=16, w=24)
    assert isinstance(model, AutoencoderMixin) and model.use_slicing is False
    ref_out, ref_feat = run(model, x), model.encode_features(x, chunk_frames=3)
    z = torch.randn(3, model.decoder_channels, 2, 2, 3)
    ref_dec = model.decode_latents(z)
    model.enable_slicing()
    assert model.use_slicing
    calls = []
    model.encoder.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    torch.testing.assert_close(run(model, x), ref_out, rtol=0, atol=1e-5)
    assert calls == [1, 1, 1]  # one sample at a time
    torch.testing.assert_close(model.encode_features(x, chunk_frames=3), ref_feat, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.decode_latents(z), ref_dec, rtol=0, atol=1e-5)
    model.disable_slicing()
    assert not model.use_slicing and torch.equal(run(model, x), ref_out)


def test_tiling_with_diffusers_keywords_and_vidgen_aliases():
    vae, x = make("vae"), video(b=1, t=5, h=96, w=112)
    assert vae.use_tiling is False
    ref = run(vae, x)
    vae.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=72, tile_sample_stride_height=32,
                      tile_sample_stride_width=40)
    assert vae.use_tiling and (vae.tile_sample_min_height, vae.tile_sample_min_width) == (64, 72)
    assert (vae.tile_sample_stride_height, vae.tile_sample_stride_width) == (32, 40)
    tiled = run(vae, x)  # forward: tiled encode and decode
    assert tiled.shape == ref.shape and not torch.equal(tiled, ref)
    assert (tiled - ref).abs().mean() < 0.1 * ref.std()  # random weights, small tiles: a loose bound
    vae.enable_tiling(64, 64, 48, 48)  # diffusers' positional order
    square = run(vae, x)
    vae.disable_tiling()
    vae.enable_tiling(tile_sample_size=64, tile_overlap=16)  # vidgen's aliases: the same tiles
    assert torch.equal(run(vae, x), square)
    vae.enable_tiling(tile_sample_size=80)  # a new size keeps the current overlap (16)
    assert (vae.tile_sample_stride_height, vae.tile_sample_stride_width) == (64, 64)
    vae.disable_tiling()
    assert not vae.use_tiling and torch.equal(run(vae, x), ref)
    for bad in (dict(tile_sample_min_height=20), dict(tile_sample_stride_width=96),
                dict(tile_sample_size=24, tile_sample_min_width=24), dict(tile_overlap=8, tile_sample_stride_height=8)):
        with pytest.raises(InvalidInputError):
            vae.enable_tiling(**bad)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_honours_tiling(kind, monkeypatch):
    model, x = make(kind), video(b=2, t=5, h=40, w=32)
    calls = []
    monkeypatch.setattr(codec_base, "tiled_apply", lambda *a, **k: calls.append(1) or tiled_apply(*a, **k))
    model.enable_tiling(tile_sample_min_height=24, tile_sample_min_width=24, tile_sample_stride_height=16,
                        tile_sample_stride_width=16)
    model.enable_slicing()
    out = run(model, x)
    assert out.shape == x.shape and len(calls) == 4  # encode + decode, for each of the 2 samples
    if kind == "vae":
        with torch.no_grad():
            z = model.encode(x).latent_dist.mode()
            torch.testing.assert_close(out, model.decode(z, 5, 40, 32).sample, rtol=0, atol=0)


def test_tiled_apply_non_square_is_exact_for_pointwise_maps():
    x = torch.randn(1, 2, 3, 13, 21)

    def up(v):
        return v.repeat_interleave(8, -1).repeat_interleave(8, -2) * 2
    out = torch.empty(1, 2, 3, 104, 168)
    torch.testing.assert_close(tiled_apply(up, x, tile=(6, 9), overlap=(2, 4), scale=8, out=out), up(x))


# ----------------------------------------------------------------------------------- config and posterior
def test_config_entries_pipelines_read(tmp_path, monkeypatch):
    import diffusers.configuration_utils as cu

    vae = make("vae")
    assert vae.temporal_compression_ratio == vae.config.temporal_compression_ratio == 4
    assert vae.spatial_compression_ratio == vae.config.spatial_compression_ratio == 8
    assert vae.config.latents_mean == [0.0] * 4 and vae.config.latents_std == [1.0] * 4
    vae.register_to_config(scaling_factor=2.0, shift_factor=0.25)  # what the training script does
    assert vae.latents_mean == [0.25] * 4 and vae.latents_std == [0.5] * 4
    z = torch.randn(1, 4, 2, 2, 2)
    mean, std = (torch.tensor(v).view(1, 4, 1, 1, 1) for v in (vae.latents_mean, vae.latents_std))
    torch.testing.assert_close((z - mean) / std, vae.normalize_latents(z))
    warnings = []
    monkeypatch.setattr(cu.logger, "warning", lambda msg, *a, **k: warnings.append(msg))
    copy = CausalVAE.from_config(vae.config)  # derived entries are dropped, not warned about nor re-registered
    assert warnings == [] and "latents_mean" not in copy._internal_dict
    assert copy.config.scaling_factor == 2.0 and copy.config.latents_std == [0.5] * 4  # updated keys are no defaults
    tok = make("fsq")
    assert tok.config.temporal_compression_ratio == 4 and "latents_mean" not in tok.config
    # a config written before these entries existed (or one that carries them) loads unchanged
    vae.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "latents_mean": [9.0] * 4}))
    loaded = CausalVAE.from_pretrained(tmp_path)
    assert loaded.config.scaling_factor == 2.0 and loaded.latents_mean == [0.25] * 4


@pytest.mark.parametrize("kind", KINDS)
def test_decode_accepts_and_ignores_generator(kind):
    model = make(kind)
    z = torch.randn(1, model.decoder_channels, 2, 2, 2)
    with torch.no_grad():
        plain = model.decode(z).sample
        seeded = model.decode(z, return_dict=False, generator=torch.Generator().manual_seed(1))[0]
    assert torch.equal(plain, seeded)


def test_posterior_matches_diffusers_distribution_interface():
    moments = torch.randn(2, 8, 3, 2, 2)
    post = DiagonalGaussian(moments)
    assert post.parameters is moments and post.deterministic is False
    torch.testing.assert_close(post.var, post.std ** 2)
    sample = post.sample(torch.Generator().manual_seed(0))
    normal = torch.distributions.Normal(post.mean, post.std)
    torch.testing.assert_close(post.nll(sample), -normal.log_prob(sample).flatten(1).sum(1))
    torch.testing.assert_close(post.nll(sample, dims=(1, 2, 3, 4)), post.nll(sample))
    torch.testing.assert_close(post.kl(DiagonalGaussian(torch.zeros_like(moments))), post.kl())
    det = DiagonalGaussian(moments, deterministic=True)
    assert torch.equal(det.std, torch.zeros_like(det.mean)) and torch.equal(det.var, det.std)
    assert torch.equal(det.sample(), det.mean)
    assert torch.equal(det.kl(), torch.zeros(2)) and torch.equal(det.nll(sample), torch.zeros(2))
    assert math.isclose(post.nll(post.mean)[0].item(),
                        0.5 * (math.log(2 * math.pi) * post.mean[0].numel() + post.logvar[0].sum().item()), rel_tol=1e-5)


# ----------------------------------------------------------------------------------- torch.compile
@pytest.mark.slow  # a torch.compile trace: about 10 s on 2 cores
def test_input_checks_trace_without_graph_breaks():
    """Value checks (finite, in [-1, 1]) are skipped while compiling; shape / dtype checks stay (static)."""
    vae, x = make("vae"), video()
    compiled = torch.compile(vae, backend="eager", fullgraph=True)  # fullgraph: any graph break raises
    with torch.no_grad():
        torch.testing.assert_close(compiled(x).sample, run(vae, x), rtol=0, atol=1e-6)
        assert compiled(torch.full_like(x, float("nan"))).sample.isnan().any()  # documented: no value check
        with pytest.raises(InvalidInputError, match="computes in"):  # the dtype check still runs when compiled
            torch.compile(vae, backend="eager")(x.double())
    with pytest.raises(InvalidInputError, match="NaN"):  # eager calls always check values
        vae.encode(torch.full_like(x, float("nan")))
