"""Autoregressive use of vidgen.attention: token-causal patterns on every backend, decode calls (q_start) against
rows of full attention, RoPE at an offset, the caller-owned KV cache and cached Attention3D decoding."""
import random
import sys

import pytest
import torch
import torch.nn.functional as F

from vidgen.attention import (Attention3D, Attention3DConfig, KVCache, ModelKVCache, attention3d, backend_support,
                              choose_backend, make_pattern)
from vidgen.attention.masks import decode_violation, pattern_mask
from vidgen.attention.reference import decode_mask, reference_attention
from vidgen.attention.rope import RotaryEmbedding3D, apply_rope, rope3d_angles
from vidgen.attention.testing import TOLERANCES, check_against_reference, random_patterns, random_qkv
from vidgen.errors import ConfigError, InvalidInputError, UnsupportedError


def _token(pattern):
    return make_pattern(**{**pattern.as_kwargs(), "causal": "token"})


TOKEN_PATTERNS = [
    make_pattern((3, 4, 5), (3, 3, 3), "token", 2),
    make_pattern((4, 3, 3), None, "token", 0),  # GPT causal: the SDPA is_causal fast path
    make_pattern((4, 3, 3), None, "token", 3),
    make_pattern((5, 2, 3), (None, 1, 1), "token", 1),  # temporal
    make_pattern((3, 9, 2), (2, 4, 1), "token", 0),  # even windows
] + [_token(p) for p in random_patterns(5, seed=21, max_video_tokens=80)]
IDS = [f"{p.grid}-r{p.radii}-p{p.num_prefix_tokens}" for p in TOKEN_PATTERNS]


def _backend(name, pattern):
    return lambda q, k, v: attention3d(q, k, v, backend=name, **pattern.as_kwargs())


# ---- token-causal over the whole sequence, every backend that claims support ----

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pattern", TOKEN_PATTERNS, ids=IDS)
def test_reference_token_causal_outputs_and_grads(pattern, dtype):
    q, k, v = random_qkv(pattern, batch=1, heads=2, head_dim=16, dtype=dtype)
    check_against_reference(_backend("reference", pattern), pattern, q, k, v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pattern", TOKEN_PATTERNS[:4], ids=IDS[:4])
def test_flex_token_causal_forward(pattern, dtype):  # no FlexAttention backward on CPU
    q, k, v = random_qkv(pattern, batch=1, heads=2, head_dim=16, dtype=dtype, requires_grad=False)
    check_against_reference(_backend("flex", pattern), pattern, q, k, v, grads=False)


def test_gpt_causal_fast_path_equals_the_dense_mask():
    pattern = TOKEN_PATTERNS[1]
    q, k, v = random_qkv(pattern, dtype=torch.float64, requires_grad=False)
    masked = F.scaled_dot_product_attention(q, k, v, attn_mask=pattern_mask(pattern))
    torch.testing.assert_close(reference_attention(q, k, v, pattern), masked, **TOLERANCES[torch.float64])


def test_cpu_and_triton_refuse_token_causal_with_reasons(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # as in test_attention_backends: no kernel import here
    monkeypatch.delitem(sys.modules, "vidgen.attention.triton_kernel", raising=False)
    pattern = TOKEN_PATTERNS[0]
    q, k, v = random_qkv(pattern, requires_grad=False)
    support = backend_support(q, k, v, **pattern.as_kwargs())
    assert support["reference"] is None and support["flex"] is None
    assert "token" in support["cpu"] and "token" in support["cpu_fused"] and "token" in support["triton"]
    for backend in ("cpu", "cpu_fused", "triton"):
        with pytest.raises(UnsupportedError, match="causal='token'"):
            attention3d(q, k, v, backend=backend, **pattern.as_kwargs())


def test_auto_never_picks_a_backend_that_refuses():
    large = make_pattern((2, 32, 32), (1, 3, 3), "token")  # frame-causal here would go to a fast cpu path
    dummy = torch.empty(1, 1, large.num_tokens, 8)
    assert choose_backend(dummy, dummy, dummy, make_pattern((2, 32, 32), (1, 3, 3), "frame")) in ("cpu", "cpu_fused")
    assert choose_backend(dummy, dummy, dummy, large) == "reference"
    for pattern in TOKEN_PATTERNS + random_patterns(6, seed=3):
        q, k, v = random_qkv(pattern, batch=1, heads=1, head_dim=8, requires_grad=False)
        for q_start in (None, pattern.num_tokens - 1) if pattern.causal else (None,):
            qq = q if q_start is None else q[:, :, q_start:]
            choice = choose_backend(qq, k, v, pattern, q_start)
            assert backend_support(qq, k, v, **pattern.as_kwargs(), q_start=q_start)[choice] is None


# ---- decode calls: rows [q_start, q_start + Lq) of full attention from keys [0, q_start + Lq) ----

def _decode_cases(count, seed):
    """Random patterns (token-causal, frame-causal, windows, prefix, some non-causal) with random exact chunks."""
    rng, cases = random.Random(seed), []
    for i, pattern in enumerate(random_patterns(count, seed=seed, max_video_tokens=60)):
        pattern = _token(pattern) if i % 2 == 0 else pattern
        n = pattern.num_tokens
        chunks = [(s, e) for s in range(n) for e in range(s + 1, n + 1) if decode_violation(pattern, s, e) is None]
        cases += [(pattern, s, e) for s, e in rng.sample(chunks, min(3, len(chunks)))]
    return cases


DECODE_CASES = _decode_cases(16, seed=7) + [
    (make_pattern((3, 2, 3), None, "frame", 2), 2, 8),  # one whole frame
    (make_pattern((3, 2, 3), (3, 3, None), "frame", 2), 0, 14),  # prefix + two frames
    (make_pattern((3, 2, 3), (3, 3, None), "frame", 2), 14, 20),  # the last frame
    (make_pattern((3, 2, 3), (None, 1, 1), "frame", 0), 7, 8),  # temporal: one token at a time is exact
    (make_pattern((3, 2, 3), None, "token", 2), 5, 6),  # the common decode step
    (make_pattern((3, 2, 3), (1, None, None), False, 0), 6, 12),  # non-causal spatial: whole frames are exact
]


@pytest.mark.parametrize("pattern,start,end", DECODE_CASES)
def test_decode_rows_equal_full_attention_rows(pattern, start, end):
    q, k, v = random_qkv(pattern, batch=2, heads=2, head_dim=8, dtype=torch.float64)
    full = reference_attention(q, k, v, pattern)
    rows = attention3d(q[:, :, start:end], k[:, :, :end], v[:, :, :end], q_start=start, **pattern.as_kwargs())
    torch.testing.assert_close(rows, full[:, :, start:end], **TOLERANCES[torch.float64])
    grads = torch.autograd.grad(rows.sum(), (q, k, v))
    want = torch.autograd.grad(full[:, :, start:end].sum(), (q, k, v))
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w, **TOLERANCES[torch.float64])


def test_decode_exactness_condition_matches_the_mask():
    """decode_violation (what attention3d enforces) == 'some query row has an allowed key at >= q_end'."""
    for pattern in random_patterns(30, seed=9, max_video_tokens=40) + TOKEN_PATTERNS[:2]:
        for mode in (pattern.causal_mode, "token"):
            pattern = make_pattern(**{**pattern.as_kwargs(), "causal": mode})
            mask, n = pattern_mask(pattern), pattern.num_tokens
            for s in range(n):
                for e in range(s + 1, n + 1):
                    assert (decode_violation(pattern, s, e) is not None) == bool(mask[s:e, e:].any()), (pattern, s, e)


def test_decode_mask_fast_path():
    token = make_pattern((3, 4, 4), None, "token", 2)
    assert all(decode_mask(token, s, s + 1, "cpu") is None for s in range(2, token.num_tokens))  # one query
    assert decode_mask(token, 10, 12, "cpu") is not None  # two queries: the first must not see the second
    frame = make_pattern((3, 4, 4), None, "frame", 2)
    assert decode_mask(frame, 18, 34, "cpu") is None  # one whole frame sees everything before its end
    windowed = make_pattern((3, 4, 4), (3, 3, 3), "token", 2)
    mask = decode_mask(windowed, 30, 31, "cpu")
    assert torch.equal(mask, pattern_mask(windowed)[30:31, :31])


@pytest.mark.parametrize("backend", ["cpu", "flex", "triton"])
def test_other_backends_refuse_decode_calls_with_a_reason(backend):
    pattern = TOKEN_PATTERNS[0]
    q, k, v = random_qkv(pattern, requires_grad=False)
    n = pattern.num_tokens
    assert "decode" in backend_support(q[:, :, -1:], k, v, **pattern.as_kwargs(), q_start=n - 1)[backend]
    with pytest.raises(UnsupportedError, match="decode"):
        attention3d(q[:, :, -1:], k, v, backend=backend, q_start=n - 1, **pattern.as_kwargs())
    # q_start=0 with every query is a plain full-sequence call: any backend that supports the pattern
    frame = make_pattern((2, 3, 4), (3, 3, 3), True, 1)
    q, k, v = random_qkv(frame, requires_grad=False)
    assert backend_support(q, k, v, **frame.as_kwargs(), q_start=0)["cpu"] is None


GRID, PREFIX = (3, 2, 3), 2  # N = 2 + 18 = 20, frames start at 2, 8, 14


@pytest.mark.parametrize("causal,q_start,lq,lk,match", [
    ("token", -1, 1, 0, "q_start must be an int >= 0"),
    ("token", 1.5, 1, 3, "q_start must be an int >= 0"),
    ("token", True, 1, 2, "q_start must be an int >= 0"),
    ("token", 19, 2, 21, r"q_start \+ Lq = 19 \+ 2 = 21 exceeds"),
    ("token", 5, 1, 5, "Lk = q_start \\+ Lq = 6"),  # a cache sliced one short
    ("token", 5, 1, 20, "Lk = q_start \\+ Lq = 6"),  # the whole cache passed
    ("token", 0, 1, 1, "prefix queries see the whole prefix"),  # chunk inside the prefix
    ("frame", 2, 3, 5, "frame boundary"),  # frame-causal chunk ending mid-frame
    ("frame", 8, 1, 9, "frame boundary"),  # one-token frame-causal decode
    (False, 19, 1, 20, None),  # fine: nothing after the last token
    (False, 8, 6, 14, "non-causal"),
])
def test_bad_decode_calls_raise_naming_the_argument(causal, q_start, lq, lk, match):
    q, k = torch.randn(1, 2, lq, 8), torch.randn(1, 2, lk, 8)
    kwargs = dict(grid=GRID, causal=causal, num_prefix_tokens=PREFIX, q_start=q_start)
    if match is None:
        assert attention3d(q, k, k, **kwargs).shape == q.shape
        return
    with pytest.raises(InvalidInputError, match=match):
        attention3d(q, k, k, **kwargs)


def test_bad_decode_shapes_and_causal_values():
    q, k = torch.randn(1, 2, 1, 8), torch.randn(1, 2, 6, 8)
    for kk, vv in ((torch.randn(1, 3, 6, 8), torch.randn(1, 3, 6, 8)), (k, torch.randn(1, 2, 5, 8)),
                   (torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4)), (torch.randn(2, 2, 6, 8),) * 2):
        with pytest.raises(InvalidInputError, match="share B, heads and D"):
            attention3d(q, kk, vv, GRID, causal="token", num_prefix_tokens=PREFIX, q_start=5)
    with pytest.raises(InvalidInputError, match="causal must be"):
        attention3d(q, k, k, GRID, causal="tokens", num_prefix_tokens=PREFIX, q_start=5)
    with pytest.raises(InvalidInputError, match="at least one"):
        attention3d(q[:, :, :0], k, k, GRID, causal="token", num_prefix_tokens=PREFIX, q_start=6)


# ---- RoPE at an offset ----

def test_rope_at_an_offset_equals_slicing_the_full_rotation():
    grid, prefix, head_dim = (2, 3, 4), 3, 12
    n = prefix + 24
    angles = rope3d_angles(grid, head_dim)
    x, y = torch.randn(2, 2, n, head_dim), torch.randn(2, 2, n, head_dim)
    full = apply_rope(x, angles, prefix)
    rope = RotaryEmbedding3D(head_dim)
    full_q, full_k = rope(x, y, grid, prefix)
    for start, end in [(0, n), (0, 2), (1, 5), (3, 4), (10, 11), (5, n), (n - 1, n)]:
        assert torch.equal(apply_rope(x[:, :, start:end], angles, prefix, start=start), full[:, :, start:end])
        q, k = rope(x[:, :, start:end], y[:, :, start:end], grid, prefix, start=start)
        assert torch.equal(q, full_q[:, :, start:end]) and torch.equal(k, full_k[:, :, start:end])
    with pytest.raises(InvalidInputError, match="start"):
        apply_rope(x[:, :, :2], angles, prefix, start=n - 1)
    with pytest.raises(InvalidInputError, match="start"):
        apply_rope(x[:, :, :2], angles, prefix, start=-1)


# ---- the caller-owned KV cache ----

def test_kv_cache_write_view_and_errors():
    cache = KVCache.allocate(2, 3, 10, 4, torch.float32)
    assert cache.k.shape == (2, 3, 10, 4) and cache.length == 0 and cache.max_tokens == 10
    k1, v1 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    cache.write(0, k1, v1)
    k2, v2 = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    cache.write(4, k2, v2)
    k, v = cache.view(5)
    assert cache.length == 5 and torch.equal(k, torch.cat([k1, k2], 2)) and torch.equal(v, torch.cat([v1, v2], 2))
    assert k.data_ptr() == cache.k.data_ptr()  # a view, no copy
    cache.write(2, k2, v2)  # rewriting drops what came after it
    assert cache.length == 3
    bad = [
        (lambda: cache.write(4, k2, v2), "start must be an int in \\[0, length=3\\]"),
        (lambda: cache.write(-1, k2, v2), "start"),
        (lambda: cache.write(3, torch.randn(2, 3, 8, 4), torch.randn(2, 3, 8, 4)), "exceeds the cache's max_tokens"),
        (lambda: cache.write(3, torch.randn(2, 2, 1, 4), v2), "k_new must have shape \\(2, 3, L, 4\\)"),
        (lambda: cache.write(3, k2, torch.randn(2, 3, 1, 5)), "v_new must have shape"),
        (lambda: cache.write(3, k2, torch.randn(2, 3, 2, 4)), "same shape"),
        (lambda: cache.write(3, k2.double(), v2.double()), "k_new must be torch.float32"),
        (lambda: cache.view(4), "end must be an int in \\[1, length=3\\]"),
        (lambda: cache.view(0), "end"),
        (lambda: KVCache.allocate(2, 0, 10, 4), "heads"),
        (lambda: KVCache(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 5, 2)), "share shape"),
        (lambda: ModelKVCache.allocate(0, 1, 1, 4, 2), "num_layers"),
    ]
    for call, match in bad:
        with pytest.raises(InvalidInputError, match=match):
            call()
    model = ModelKVCache.allocate(3, 1, 2, 8, 4, torch.float64)
    assert len(model.layers) == 3 and model.max_tokens == 8 and model.layers[0].k.dtype == torch.float64
    model.layers[1].write(0, torch.ones(1, 2, 2, 4, dtype=torch.float64), torch.ones(1, 2, 2, 4, dtype=torch.float64))
    model.length = 2
    model.reset()
    assert model.length == 0 and all(layer.length == 0 for layer in model.layers)


def _stack(dtype, causal, window=None, seed=0):
    torch.manual_seed(seed)
    layers = [Attention3D(Attention3DConfig(dim=24, num_heads=2, window=window, causal=causal, rope=True,
                                            qk_norm=True, qkv_bias=True)) for _ in range(2)]
    with torch.no_grad():
        for layer in layers:
            for p in layer.parameters():  # move every weight off its init (RMSNorm weights are all ones)
                p.add_(0.2 * torch.randn_like(p))
    return [layer.to(dtype) for layer in layers]


def _run(layers, x, grid, prefix, cache=None):
    """Residual stack: the whole sequence without a cache, else the tokens x at positions [cache.length, ...)."""
    h = x
    for i, layer in enumerate(layers):
        if cache is None:
            h = h + layer(h, grid, prefix)
        else:
            h = h + layer(h, grid, prefix, kv_cache=cache.layers[i], start=cache.length)
    if cache is not None:
        cache.length += x.shape[1]
    return h


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_token_causal_prefill_then_decode_equals_the_full_forward(dtype):
    grid, prefix = (3, 3, 4), 2
    n = prefix + 36
    layers = _stack(dtype, "token", window=(3, None, 3))
    x = torch.randn(2, n, 24, dtype=dtype)
    with torch.no_grad():
        full = _run(layers, x, grid, prefix)
        cache = ModelKVCache.allocate(2, 2, 2, n, 12, dtype)
        steps = [_run(layers, x[:, :prefix + 5], grid, prefix, cache)]  # prefill: prefix + 5 tokens (mid-frame)
        steps += [_run(layers, x[:, i:i + 1], grid, prefix, cache) for i in range(prefix + 5, n)]  # one at a time
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOLERANCES[dtype])
    assert cache.length == n
    assert all(not any("cache" in key for key in layer.state_dict()) for layer in layers)
    assert {name for name, _ in layers[0].named_buffers()} == set()


def test_frame_causal_decode_of_whole_frames_equals_the_full_forward():
    grid, prefix = (4, 2, 3), 3
    hw, n = 6, prefix + 24
    layers = _stack(torch.float64, True, window=(3, 3, 3), seed=1)
    x = torch.randn(1, n, 24, dtype=torch.float64)
    with torch.no_grad():
        full = _run(layers, x, grid, prefix)
        cache = ModelKVCache.allocate(2, 1, 2, n, 12, torch.float64)
        steps = [_run(layers, x[:, :prefix], grid, prefix, cache)]  # the prefix alone
        steps += [_run(layers, x[:, s:s + hw], grid, prefix, cache) for s in range(prefix, n, hw)]  # frame by frame
        torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOLERANCES[torch.float64])
        cache.reset()
        _run(layers, x[:, :prefix + hw], grid, prefix, cache)
        with pytest.raises(InvalidInputError, match="start=9 with Lq=1.*frame boundary"):
            layers[0](x[:, :1], grid, prefix, kv_cache=cache.layers[0], start=cache.length)
        assert cache.layers[0].length == prefix + hw  # nothing was written by the refused call


def test_module_decode_errors_and_config():
    layer = _stack(torch.float32, "token")[0]
    x = torch.randn(1, 1, 24)
    with pytest.raises(InvalidInputError, match="start=3 needs a kv_cache"):
        layer(x, (2, 2, 2), start=3)
    cache = KVCache.allocate(1, 2, 8, 12)
    with pytest.raises(InvalidInputError, match="start \\+ Lq = 8 \\+ 1 = 9 exceeds"):
        layer(x, (2, 2, 2), kv_cache=cache, start=8)
    with pytest.raises(InvalidInputError, match="start must be an int in \\[0, length=0\\]"):
        layer(x, (2, 2, 2), kv_cache=cache, start=3)  # positions 0..2 were never written
    with pytest.raises(InvalidInputError, match="must be torch.float64"):
        layer(x, (2, 2, 2), kv_cache=KVCache.allocate(1, 2, 8, 12, torch.float64))
    with pytest.raises(UnsupportedError, match="decode"):
        layer(torch.randn(1, 2, 24), (2, 2, 2), kv_cache=cache, causal="token", backend="cpu")
    with pytest.raises(ConfigError, match="causal"):
        Attention3DConfig(dim=24, num_heads=2, causal="tokens")
