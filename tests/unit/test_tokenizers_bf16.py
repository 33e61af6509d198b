"""Every tokenizer in bf16: under ``torch.autocast("cpu", torch.bfloat16)`` with fp32 weights ("amp") and with bf16
weights ("bf16"), on tiny presets with *live* weights (seeded noise on every parameter: the residual branches are
zero-initialised, so an unperturbed codec is close to an identity and would pass vacuously).

Every path keeps the given frames / shapes exactly and agrees with the fp32 model within the tolerance table below.
Errors are relative Frobenius norms, ``||y - y_fp32|| / ||y_fp32||``. Measured on the tiny presets (9x32x40 videos,
1 thread, this CPU: AVX512-BF16, torch 2.14), amp and bf16 weights alike, worst over the five tokenizers: encoder
outputs 0.8-1.6 %, decode of the same latents 1.0-1.5 %, KL / VQ round trip 1.7-1.8 % (bf16 keeps 8 significant
bits, one rounding is <= 0.39 %, and the tiny codec stacks ~20 of them). Token ids agree with fp32 on 95.6-97.7 %
of 384 positions (3 seeds): an id flips when any of its FSQ / LFQ dims sits within bf16 noise of a rounding
boundary, so FSQ / LFQ / BSQ round trips differ by 6-11 % and are bounded through the ids instead. Bounds: ~2.5x
the worst measured error, ids >= 90 %.
"""
import warnings

import pytest
import torch
import torch.nn.functional as F

from vidgen.errors import InvalidInputError
from vidgen.precision import cpu_has_fast_bf16
from vidgen.testing import perturb_weights
from vidgen.tokenizers import CausalVAE, CausalVQVAE
from vidgen.tokenizers.layers import PixelNorm, rms_norm_reference

#: bf16 tolerances (relative Frobenius error against fp32; agreement = fraction of equal token ids).
TOL = {
    "latent": 0.04,  # encoder output (KL moments, pre-quantisation features): measured <= 0.016
    "decode": 0.04,  # decoder output from the same (fp32-computed) latents / ids: measured <= 0.015
    "recon": 0.05,  # encode + decode of KL and VQ: measured <= 0.018
    "ids": 0.90,  # fraction of token ids equal to fp32's (FSQ / LFQ / BSQ / VQ): measured >= 0.956
}
#: where bf16 math is the same computation (chunked vs one-shot, streamed vs one-shot, sliced vs batched) the
#: difference is bounded by a couple of bf16 ulps from different GEMM blocking, not by the fp32 tolerance
SAME_MATH = dict(atol=2e-2, rtol=2e-2)
KINDS = ["vae", "fsq", "lfq", "bsq", "vq"]
MODES = ["amp", "bf16"]
T, H, W = 9, 32, 40


def make(kind: str):
    torch.manual_seed(0)
    model = CausalVAE.from_preset("tiny") if kind == "vae" else CausalVQVAE.from_preset("tiny", quantizer=kind)
    return perturb_weights(model.eval(), seed=3, scale=0.05)


def as_bf16(model):
    """A bf16-weight copy (the quantizer's codebook stays fp32: ``QuantizerBottleneck._apply``)."""
    clone = type(model).from_config(model.config)
    clone.load_state_dict(model.state_dict())
    return clone.eval().to(torch.bfloat16)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def models():
    out = {}
    for kind in KINDS:
        fp32 = make(kind)
        out[kind] = {"fp32": fp32, "bf16": as_bf16(fp32)}
    return out


def video(b=1, t=T, h=H, w=W, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def run(models, kind, mode, fn, *tensors):
    """``fn(model, *tensors)`` in ``mode``: autocast around the fp32 model, or the bf16 copy on bf16 inputs."""
    model = models[kind]["fp32" if mode == "amp" else "bf16"]
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=mode == "amp"):
        return fn(model, *[t.to(torch.bfloat16) if mode == "bf16" and t.is_floating_point() else t for t in tensors])


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def encode(model, x, **kw):
    if isinstance(model, CausalVAE):
        return model.encode(x, **kw).latent_dist.mode()
    return model.encode(x, **kw).codes


def features(model, x):
    return model.encode_features(x)


def decode(model, z, **kw):
    return model.decode(z, **kw).sample


# ----------------------------------------------------------------------------------------------- building blocks
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pixel_norm_fast_path_equals_rms_norm(dtype):
    """The fused-free PixelNorm (fp32 statistics) agrees with ``F.rms_norm`` in fp32; in bf16 to bf16 rounding."""
    norm = PixelNorm(24)
    with torch.no_grad():
        norm.weight.add_(torch.randn(24))
    x = (torch.randn(2, 3, 5, 6, 24) * 7).to(dtype)
    ref = rms_norm_reference(x.float(), norm.weight, norm.eps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mismatch dtype between input and weight" fallback
        out = norm(x)
        with torch.autocast("cpu", torch.bfloat16):
            out_amp = norm(x)
    assert out.dtype == out_amp.dtype == dtype
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=3e-2, rtol=1e-2)
    torch.testing.assert_close(out.float(), ref, **tol)
    torch.testing.assert_close(out_amp.float(), ref, **tol)


def test_strided_downsampling_paths_agree_with_fp32():
    """Downsample / Upsample (space- and time-to-depth + GEMM) and the per-frame convs at every level, in bf16 vs
    fp32 (the oneDNN AMX conv bug of pytorch #169688 hits strided convs whose innermost output dim is 1: here a
    frame whose width and height shrink to 1 latent pixel, 8x8 pixels with 8x compression)."""
    model = make("vae")
    x = video(1, 5, 8, 8)
    with torch.no_grad():
        ref = model.encode(x).latent_dist.mode()
        with torch.autocast("cpu", torch.bfloat16):
            amp = model.encode(x).latent_dist.mode()
        bf = as_bf16(model).encode(x.bfloat16()).latent_dist.mode()
    assert ref.shape[-2:] == (1, 1)
    assert rel(amp, ref) < TOL["latent"] and rel(bf, ref) < TOL["latent"]


# ----------------------------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_encode_decode_forward_agree_with_fp32(models, kind, mode):
    x = video()
    fp32 = models[kind]["fp32"]
    with torch.no_grad():
        f_ref, z_ref = features(fp32, x), encode(fp32, x)
        y_ref = decode(fp32, z_ref, num_frames=T, height=H, width=W)
        fwd_ref = fp32(x).sample
    f = run(models, kind, mode, features, x)
    z = run(models, kind, mode, encode, x)
    y = run(models, kind, mode, lambda m, v: decode(m, v, num_frames=T, height=H, width=W), z_ref)
    fwd = run(models, kind, mode, lambda m, v: m(v).sample, x)
    for out in (f, z, y, fwd):
        assert out.dtype == torch.bfloat16  # outputs are in the compute dtype (documented: input_dtypes)
    assert z.shape == z_ref.shape and y.shape == fwd.shape == x.shape
    assert rel(f, f_ref) < TOL["latent"], rel(f, f_ref)
    assert rel(y, y_ref) < TOL["decode"], rel(y, y_ref)
    if kind in ("vae", "vq"):  # continuous / well-separated codes: the whole round trip is bounded too
        assert rel(fwd, fwd_ref) < TOL["recon"], rel(fwd, fwd_ref)
    assert torch.isfinite(fwd.float()).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["fsq", "lfq", "bsq", "vq"])
def test_token_ids_agree_with_fp32(models, kind, mode):
    """Rounding decisions are made in fp32 on bf16 features: only positions within bf16 noise of a boundary flip."""
    x = video(2, 9, 64, 64)
    codebook = [b for b in models[kind]["bf16"].bottleneck.buffers() if b.is_floating_point()]
    assert all(b.dtype == torch.float32 for b in codebook)  # .to(bf16) leaves the quantizer's state fp32
    ids_ref = models[kind]["fp32"].tokenize(x)
    ids = run(models, kind, mode, lambda m, v: m.tokenize(v), x)
    assert ids.shape == ids_ref.shape and ids.dtype == torch.long
    agreement = (ids == ids_ref).float().mean().item()
    assert agreement >= TOL["ids"], agreement
    video_out = run(models, kind, mode, lambda m, i: m.detokenize(i), ids_ref)
    video_ref = models[kind]["fp32"].detokenize(ids_ref)
    assert video_out.shape == x.shape and rel(video_out, video_ref) < TOL["decode"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["vae", "fsq"])
def test_reconstruct_trains_in_bf16(models, kind, mode):
    """The training entry point: finite fp32 losses (KL / quantizer loss reduced in fp32), gradients everywhere."""
    model = models[kind]["fp32" if mode == "amp" else "bf16"]
    x = video()
    model.zero_grad()
    with torch.autocast("cpu", torch.bfloat16, enabled=mode == "amp"):
        out = model.reconstruct(x if mode == "amp" else x.bfloat16())
        loss = F.mse_loss(out.sample.float(), x) + out.bottleneck.loss
    assert out.sample.shape == x.shape and out.bottleneck.loss.dtype == torch.float32
    loss.backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------------------------- exactness in bf16
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["vae", "fsq"])
def test_chunked_and_streamed_equal_one_shot(models, kind, mode):
    x = video()
    z = run(models, kind, mode, encode, x)
    z_chunked = run(models, kind, mode, lambda m, v: encode(m, v, chunk_frames=3), x)
    torch.testing.assert_close(z_chunked, z, **SAME_MATH)
    y = run(models, kind, mode, decode, z)
    y_chunked = run(models, kind, mode, lambda m, v: decode(m, v, chunk_frames=1), z)
    assert y.shape[2] == y_chunked.shape[2] == 1 + (z.shape[2] - 1) * 4
    torch.testing.assert_close(y_chunked, y, **SAME_MATH)
    model = models[kind]["fp32" if mode == "amp" else "bf16"]
    with torch.autocast("cpu", torch.bfloat16, enabled=mode == "amp"):
        stream = model.stream_decoder()
        if kind == "vae":
            pieces = [stream.push(z[:, :, i:i + 1]) for i in range(z.shape[2])]
        else:
            ids = model.tokenize(x if mode == "amp" else x.bfloat16())
            y = model.detokenize(ids)
            pieces = [stream.push(ids[:, i:i + 1]) for i in range(ids.shape[1])]
    streamed = torch.cat(pieces, dim=2)
    assert [p.shape[2] for p in pieces] == [1] + [4] * (len(pieces) - 1)
    torch.testing.assert_close(streamed, y, **SAME_MATH)


@pytest.mark.parametrize("mode", MODES)
def test_tiling_and_slicing_in_bf16(models, mode):
    x = video(2, 5, 48, 56)
    fp32 = models["vae"]["fp32"]
    with torch.no_grad():
        z_ref = encode(fp32, x)
    model = fp32 if mode == "amp" else models["vae"]["bf16"]
    try:
        model.enable_tiling(tile_sample_size=32, tile_overlap=16)
        fp32_tiled = [encode(fp32, x), decode(fp32, z_ref)] if mode == "amp" else None
        z = run(models, "vae", mode, encode, x)
        y = run(models, "vae", mode, decode, z_ref)
        model.enable_slicing()
        y_sliced = run(models, "vae", mode, decode, z_ref)
    finally:
        model.disable_tiling()
        model.disable_slicing()
    assert z.dtype == y.dtype == torch.bfloat16  # blended in fp32, returned in the compute dtype
    assert y.shape == x.shape and z.shape == z_ref.shape
    torch.testing.assert_close(y_sliced, y, **SAME_MATH)
    if fp32_tiled is not None:
        with torch.no_grad():
            assert rel(z, fp32_tiled[0]) < TOL["latent"] and rel(y, fp32_tiled[1]) < TOL["decode"]


# ----------------------------------------------------------------------------------------------- input checks
def test_input_checks_compare_against_the_compute_dtype(models):
    model, x = models["vae"]["fp32"], video()
    with pytest.raises(InvalidInputError, match="computes in torch.float32"):
        model.encode(x.bfloat16())  # no autocast: bf16 input to an fp32 model is refused, not cast
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        z = model.encode(x.bfloat16()).latent_dist.mode()  # under autocast both are accepted
        assert model.decode(z.float()).sample.dtype == torch.bfloat16
    with pytest.raises(InvalidInputError, match="computes in torch.bfloat16"):
        models["vae"]["bf16"].decode(z.float())
    assert torch.is_autocast_enabled("cpu") is False  # nothing leaks


# ----------------------------------------------------------------------------------------------- layerwise casting
@pytest.mark.parametrize("kind", ["vae", "fsq", "vq"])
def test_layerwise_casting_training(kind):
    """diffusers' ``LayerwiseCastingTesterMixin.test_layerwise_casting_training``, re-created: storage in fp16 /
    fp8, compute in fp32 or bf16, a training forward under ``torch.amp.autocast("cpu")`` (bf16) and backward."""
    x = video(1, 5, 16, 16)

    def check(storage, compute):
        model = make(kind).to(compute)
        model.enable_layerwise_casting(storage_dtype=storage, compute_dtype=compute)
        model.train()
        with torch.amp.autocast(device_type="cpu"):
            output = model(x.to(compute), return_dict=False)[0]
            noise = torch.randn(output.shape).to(compute)
            loss = F.mse_loss(output, noise)
        loss.backward()
        assert output.shape == x.shape and torch.isfinite(loss)
        assert model.encoder.stem.weight.dtype == storage

    check(torch.float16, torch.float32)
    check(torch.float8_e4m3fn, torch.float32)
    check(torch.float8_e5m2, torch.float32)
    if cpu_has_fast_bf16():  # without it torch's fallback conv2d backward keeps the Parameter, which layerwise
        check(torch.float8_e4m3fn, torch.bfloat16)  # casting has put back in fp8 ("expected BFloat16 but found Float8")
