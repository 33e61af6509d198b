"""The three generators in bf16: under ``torch.autocast("cpu", torch.bfloat16)`` with fp32 weights ("autocast") and
with bf16 weights ("bf16"). Tiny presets, fixed seeds, live weights (every parameter perturbed: a fresh model's
zero-initialised gates and heads would make every block the identity and every comparison trivial).

Tolerances (per dtype, relative to fp32 on the same inputs and seeds). bf16 keeps 8 mantissa bits (relative
rounding 2^-9 = 0.2 %); a loss is a mean of many terms whose rounding errors mostly cancel. Measured on these
models: loss within 0.08 % (autocast) and 0.27 % (bf16 weights, which also round the residual stream and the
norms' inputs; autocast keeps those fp32); flow samples (3 Euler steps, CFG) within 3.1 % / 4.2 % of the samples'
std; greedy AR tokens cached vs uncached: 2 of 64 differ (full layout) and 0 (spatiotemporal), in both precisions.

| precision | training loss (rel.) | flow sample (max abs / std) | AR cached vs uncached, greedy |
|---|---|---|---|
| fp32      | (reference)          | (reference)                 | equal (tests/unit/test_generators.py) |
| autocast  | 2 %                  | 10 %                        | at most 4 of 64 tokens differ |
| bf16      | 3 %                  | 10 %                        | at most 4 of 64 tokens differ |

Why greedy tokens may differ between the cached and the uncached path in bf16: both round the same math
differently (a cached step multiplies one token, the uncached pass the whole sequence; bf16 matmuls accumulate in
other orders), so two logits within one rounding step can swap their argmax. The 2 flips measured above are such a
tie: CFG logits 6.160 vs 6.133 where bf16's step at 6 is 0.031; the sequences agree again afterwards.
"""
import pytest
import torch

from vidgen.attention.kv_cache import ModelKVCache
from vidgen.generators import (AutoregressiveVideoTransformer, Conditioning, FlowVideoTransformer,
                               MaskedVideoTransformer, generate_tokens)
from vidgen.generators.kv_decode import KVDecodeStep
from vidgen.testing import perturb_weights

GRID, VOCAB, TEXT_DIM, MAX_TEXT, CHANNELS = (2, 4, 4), 64, 32, 4, 4
LOSS_RTOL = {"autocast": 0.02, "bf16": 0.03}
MAX_FLIPS = 4  # of 64 tokens
SAMPLE_TOL = 0.10  # flow samples: max abs difference / std of the fp32 sample
PRECISIONS = ("autocast", "bf16")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build(kind: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    kw = {"text_dim": TEXT_DIM, "max_text_tokens": MAX_TEXT, "max_grid": GRID, **kw}
    if kind == "flow":
        model = FlowVideoTransformer.from_preset("tiny", in_channels=CHANNELS, **kw)
    else:
        cls = MaskedVideoTransformer if kind == "masked" else AutoregressiveVideoTransformer
        model = cls.from_preset("tiny", vocab_size=VOCAB, **kw)
    return perturb_weights(model, seed=seed + 100, scale=0.1).eval()


def text_cond(batch: int = 2, seed: int = 1) -> Conditioning:
    g = gen(seed)
    return Conditioning(text=torch.randn(batch, 3, TEXT_DIM, generator=g), pooled=torch.randn(batch, TEXT_DIM,
                                                                                               generator=g))


def data(kind: str, batch: int = 2, seed: int = 2) -> torch.Tensor:
    if kind == "flow":
        return torch.randn(batch, CHANNELS, *GRID, generator=gen(seed))
    return torch.randint(0, VOCAB, (batch, *GRID), generator=gen(seed))


def in_precision(model, precision: str):
    """(model, context manager): fp32 weights under autocast, or a bf16 copy of the weights."""
    if precision == "autocast":
        return model, torch.autocast("cpu", torch.bfloat16)
    return build_copy(model).to(torch.bfloat16), torch.autocast("cpu", enabled=False)


def build_copy(model):
    copy = type(model).from_config(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def sample(kind: str, model, **kw):
    if kind == "masked":
        return model.sample(GRID, 2, text_cond(), guidance_scale=3.0, num_inference_steps=3, generator=gen(0), **kw)
    if kind == "flow":
        return model.sample(GRID, 2, text_cond(), guidance_scale=3.0, num_inference_steps=3, generator=gen(0), **kw)
    return model.sample(GRID, 2, text_cond(), guidance_scale=3.0, generator=gen(0), top_k=4, **kw)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", ["masked", "flow", "ar"])
def test_loss_agrees_with_fp32(kind, precision):
    model = build(kind)
    x = data(kind)
    ref, _ = model.loss(x, text_cond(), gen(5))
    low, ctx = in_precision(model, precision)
    with ctx:
        loss, _ = low.loss(x, text_cond(), gen(5))
    assert loss.dtype == torch.float32  # the reduction is fp32
    assert torch.isfinite(loss)
    assert abs(loss.item() - ref.item()) <= LOSS_RTOL[precision] * abs(ref.item()), (loss.item(), ref.item())
    if precision == "autocast":  # gradients reach the fp32 weights
        with ctx:
            loss, _ = low.loss(x, text_cond(), gen(5))
        loss.backward()
        grads = [p.grad for p in low.parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", ["masked", "flow", "ar"])
def test_sampling_runs_with_exact_shapes(kind, precision):
    low, ctx = in_precision(build(kind), precision)
    with ctx:
        out = sample(kind, low)
    if kind == "flow":
        assert out.shape == (2, CHANNELS, *GRID) and out.dtype == torch.float32  # the ODE state stays fp32
        assert torch.isfinite(out).all()
    else:
        assert out.shape == (2, *GRID) and out.dtype == torch.long
        assert out.min() >= 0 and out.max() < VOCAB
    assert not torch.is_autocast_enabled("cpu") or precision == "autocast"


def test_flow_bf16_sampling_close_to_fp32():
    """Same noise, same steps: bf16 velocities move the fp32 ODE state by little (SAMPLE_TOL of its std)."""
    model = build("flow")
    ref = sample("flow", model)
    for precision in PRECISIONS:
        low, ctx = in_precision(model, precision)
        with ctx:
            out = sample("flow", low)
        assert (out - ref).abs().max() <= SAMPLE_TOL * ref.std(), precision


def greedy(model, use_cache: bool, **kw):
    return generate_tokens(model, text_cond(), grid=GRID, batch=2, guidance_scale=3.0, top_k=1, generator=gen(0),
                           use_cache=use_cache, **kw)


def flips(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a != b).sum())


@pytest.mark.parametrize("layout", ["full", "spatiotemporal"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_ar_cached_equals_uncached_in_bf16(precision, layout):
    low, ctx = in_precision(build("ar", layout=layout), precision)
    with ctx:
        cached, uncached = greedy(low, True), greedy(low, False)
    assert cached.shape == uncached.shape == (2, *GRID)
    assert flips(cached, uncached) <= MAX_FLIPS, (cached != uncached).nonzero()


def test_kv_cache_takes_the_compute_dtype(monkeypatch):
    """Under autocast the cache is bf16 (fp32 weights); with bf16 weights too; in fp32, fp32."""
    seen = []
    allocate = ModelKVCache.allocate.__func__

    def spy(cls, *args, **kwargs):
        cache = allocate(cls, *args, **kwargs)
        seen.append(cache.layers[0].k.dtype)
        return cache
    monkeypatch.setattr(ModelKVCache, "allocate", classmethod(spy))
    model = build("ar")
    greedy(model, True)
    with torch.autocast("cpu", torch.bfloat16):
        assert model.compute_dtype == torch.bfloat16
        greedy(model, True)
    greedy(build_copy(model).to(torch.bfloat16), True)
    assert seen == [torch.float32, torch.bfloat16, torch.bfloat16]


def test_decoder_step_equals_generic_decode_in_bf16():
    """One decode step of KVDecodeStep vs the generic cached path (forward_tokens) at the same position, under
    autocast: same logits within bf16 rounding of the logits' scale."""
    model = build("ar", layout="spatiotemporal")
    cfg, p, n = model.backbone_config, model.num_prefix_tokens, 2 * 4 * 4
    ids = data("ar")[:, :1].reshape(2, -1)  # first frame: 16 tokens
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        prefix, context, vec = model.embed_condition(text_cond(), 2)
        caches = [ModelKVCache.allocate(cfg.depth, 2, cfg.num_heads, p + n, cfg.head_dim, torch.bfloat16)
                  for _ in range(2)]
        seq = torch.cat([torch.full((2, 1), model.bos_token_id), ids[:, :-1]], dim=1)
        for cache in caches:
            model.forward_tokens(seq, GRID, vec, prefix, context, cache, 0)
        pos = p + seq.shape[1]
        generic = model.forward_tokens(ids[:, -1:], GRID, vec, None, context, caches[0], pos)[:, 0].float()
        decoder = KVDecodeStep(model, GRID, vec, context, caches[1], torch.bfloat16)
        fast = decoder.step(ids[:, -1], pos)
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, generic, atol=0.02 * generic.abs().max().item(), rtol=0)


@pytest.mark.slow  # compiles three models: ~10-30 s on 2 cores (cached by inductor afterwards)
@pytest.mark.parametrize("kind", ["masked", "flow", "ar"])
def test_compiled_sampling_equals_eager(kind):
    """compile=True (vidgen.generators.compiled) gives eager's tokens; flow latents within fp32 rounding."""
    model = build(kind)
    eager, compiled = sample(kind, model), sample(kind, model, compile=True)
    if kind == "flow":
        torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
    else:
        assert torch.equal(compiled, eager)


def test_bench_generators_quick(load_script, tmp_path):
    """The benchmark's smoke mode runs and its README table renders (fp32 / bf16 / bf16+compile columns)."""
    bench = load_script("eval/bench_generators.py")
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    assert bench.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads
    import json
    results = json.loads(out.read_text())
    assert {r["kind"] for r in results["sampling"]} == {"masked", "flow", "ar"}
    assert results["ceilings"]["bf16"]["gflops"] > 0
    assert "| workload | fp32 | bf16 | bf16+compile |" in bench.readme_table(results)
