"""attention3d backends (reference, cpu, cpu_fused, flex) against the dense-mask reference; errors; determinism;
auto."""
import sys

import pytest
import torch

from vidgen.attention import attention3d, backend_support, choose_backend, make_pattern
from vidgen.attention.cpu_blocked import blocked_attention
from vidgen.attention.reference import reference_attention
from vidgen.attention.testing import check_against_reference, random_patterns, random_qkv
from vidgen.errors import InvalidInputError, UnsupportedError

EDGE_PATTERNS = [
    make_pattern((3, 5, 7), (3, 3, 3)),  # nothing divides anything
    make_pattern((4, 6, 5), (3, 5, 3), causal=True, num_prefix_tokens=3),
    make_pattern((2, 3, 4), (1, None, None), num_prefix_tokens=2),  # spatial
    make_pattern((5, 2, 3), (None, 1, 1), causal=True, num_prefix_tokens=1),  # causal temporal
    make_pattern((3, 4, 4), (9, 11, 13)),  # window larger than the grid = full
    make_pattern((4, 3, 3), None, causal=True, num_prefix_tokens=2),  # frame-causal full
    make_pattern((1, 1, 1), (1, 1, 1), causal=True, num_prefix_tokens=2),  # one video token
    make_pattern((3, 9, 2), (2, 4, 1)),  # even window sizes
]
RANDOM_PATTERNS = random_patterns(16, seed=5)
ALL_PATTERNS = EDGE_PATTERNS + RANDOM_PATTERNS
LOW_PRECISION_PATTERNS = EDGE_PATTERNS[:4] + RANDOM_PATTERNS[:4]
FLEX_PATTERNS = EDGE_PATTERNS[:5] + RANDOM_PATTERNS[:3]
# cpu_fused: every pattern without prefix tokens or token causality, plus causal windows at the grid borders
FUSED_PATTERNS = [p for p in ALL_PATTERNS if not p.num_prefix_tokens and not p.token_causal] + [
    make_pattern((4, 6, 5), (3, 5, 3), causal=True),
    make_pattern((5, 2, 3), (None, 1, 1), causal=True),  # causal temporal
    make_pattern((3, 9, 8), (5, 3, None), causal=True),
    make_pattern((2, 8, 8), (1, 7, 7)),  # spatial window
]


def _ids(patterns):
    return [f"{p.grid}-r{p.radii}-c{int(p.causal)}-p{p.num_prefix_tokens}" for p in patterns]


def _backend(name, pattern, **kwargs):
    return lambda q, k, v: attention3d(q, k, v, backend=name, **pattern.as_kwargs(), **kwargs)


@pytest.mark.parametrize("pattern", ALL_PATTERNS, ids=_ids(ALL_PATTERNS))
def test_cpu_backend_matches_reference_fp32(pattern):
    q, k, v = random_qkv(pattern, batch=2, heads=2, head_dim=16)
    check_against_reference(_backend("cpu", pattern), pattern, q, k, v)


@pytest.mark.parametrize("block", [(1, 1, 1), (2, 2, 2), (2, 4, 3)])
@pytest.mark.parametrize("pattern", EDGE_PATTERNS[:4], ids=_ids(EDGE_PATTERNS[:4]))
def test_cpu_backend_any_block_size(pattern, block):
    q, k, v = random_qkv(pattern, batch=1, heads=2, head_dim=8)
    check_against_reference(lambda a, b, c: blocked_attention(a, b, c, pattern, block=block), pattern, q, k, v)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pattern", LOW_PRECISION_PATTERNS, ids=_ids(LOW_PRECISION_PATTERNS))
def test_cpu_backend_low_precision(pattern, dtype):
    q, k, v = random_qkv(pattern, batch=1, heads=2, head_dim=16, dtype=dtype)
    check_against_reference(_backend("cpu", pattern), pattern, q, k, v)


@pytest.mark.parametrize("pattern", FUSED_PATTERNS, ids=_ids(FUSED_PATTERNS))
def test_cpu_fused_backend_matches_reference_fp32(pattern):
    q, k, v = random_qkv(pattern, batch=2, heads=2, head_dim=16)
    check_against_reference(_backend("cpu_fused", pattern), pattern, q, k, v)
    check_against_reference(_backend("cpu_fused", pattern, scale=0.7), pattern, q, k, v, scale=0.7)


def test_cpu_fused_refuses_what_it_does_not_implement():
    prefix = EDGE_PATTERNS[1]
    q, k, v = random_qkv(prefix, requires_grad=False)
    with pytest.raises(UnsupportedError, match="prefix tokens"):
        attention3d(q, k, v, backend="cpu_fused", **prefix.as_kwargs())
    plain = EDGE_PATTERNS[0]
    q, k, v = random_qkv(plain, requires_grad=False, dtype=torch.float16)
    with pytest.raises(UnsupportedError, match="float32"):
        attention3d(q, k, v, backend="cpu_fused", **plain.as_kwargs())
    token = make_pattern((2, 3, 3), (3, 3, 3), causal="token")
    q, k, v = random_qkv(token, requires_grad=False)
    assert "causal='token'" in backend_support(q, k, v, **token.as_kwargs())["cpu_fused"]


def test_cpu_fused_reports_an_unusable_kernel_cache(tmp_path, monkeypatch):
    from vidgen.attention import cpu_window
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("")
    monkeypatch.setenv("VIDGEN_CACHE", str(blocker))
    cpu_window._library.cache_clear()
    try:
        pattern = make_pattern((4, 32, 32), (3, 7, 7))
        q, k, v = random_qkv(pattern, batch=1, heads=1, head_dim=4, requires_grad=False)
        assert "could not be built or loaded" in backend_support(q, k, v, **pattern.as_kwargs())["cpu_fused"]
        assert choose_backend(q, k, v, pattern) == "cpu"
    finally:
        cpu_window._library.cache_clear()  # later tests build it in the real cache again


def test_custom_scale():
    pattern = EDGE_PATTERNS[1]
    q, k, v = random_qkv(pattern, head_dim=8)
    check_against_reference(_backend("cpu", pattern, scale=0.7), pattern, q, k, v, scale=0.7)


@pytest.mark.parametrize("pattern", FLEX_PATTERNS, ids=_ids(FLEX_PATTERNS))
def test_flex_forward_matches_reference(pattern):
    q, k, v = random_qkv(pattern, batch=1, heads=2, head_dim=16, requires_grad=False)
    check_against_reference(_backend("flex", pattern), pattern, q, k, v, grads=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pattern", EDGE_PATTERNS[:2], ids=_ids(EDGE_PATTERNS[:2]))
def test_flex_forward_low_precision(pattern, dtype):
    q, k, v = random_qkv(pattern, batch=1, heads=2, head_dim=16, dtype=dtype, requires_grad=False)
    check_against_reference(_backend("flex", pattern), pattern, q, k, v, grads=False)


def test_flex_backward_on_cpu_is_refused_with_reason():
    pattern = EDGE_PATTERNS[0]
    q, k, v = random_qkv(pattern)
    with pytest.raises(UnsupportedError, match="no backward pass on CPU"):
        attention3d(q, k, v, backend="flex", **pattern.as_kwargs())
    assert "backward" in backend_support(q, k, v, **pattern.as_kwargs())["flex"]


def test_reference_gradcheck_float64():
    pattern = make_pattern((2, 2, 3), (1, 3, None), causal=True, num_prefix_tokens=1)
    q, k, v = random_qkv(pattern, batch=1, heads=1, head_dim=4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: reference_attention(a, b, c, pattern), (q, k, v), fast_mode=True)


def test_reference_gradcheck_float64_prefix_and_oversized_window():
    pattern = make_pattern((2, 3, 2), (5, 1, 9), causal=False, num_prefix_tokens=2)
    q, k, v = random_qkv(pattern, batch=1, heads=1, head_dim=3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: reference_attention(a, b, c, pattern), (q, k, v), fast_mode=True)


def test_cpu_backend_gradcheck_float64():
    pattern = make_pattern((3, 2, 3), (3, 1, 3), causal=True, num_prefix_tokens=1)
    q, k, v = random_qkv(pattern, batch=1, heads=1, head_dim=4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: blocked_attention(a, b, c, pattern, block=(2, 2, 2)), (q, k, v),
                                   fast_mode=True)


@pytest.mark.parametrize("backend", ["reference", "cpu", "cpu_fused", "flex"])
def test_deterministic(backend):
    pattern = FUSED_PATTERNS[-4] if backend == "cpu_fused" else EDGE_PATTERNS[1]
    with_grads = backend != "flex"  # flex has no backward on CPU
    q, k, v = random_qkv(pattern, requires_grad=with_grads)
    runs = []
    for _ in range(2):
        out = attention3d(q, k, v, backend=backend, **pattern.as_kwargs())
        grads = torch.autograd.grad(out.square().sum(), (q, k, v)) if with_grads else ()
        runs.append((out,) + grads)
    assert len(runs[0]) == (4 if with_grads else 1)
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_auto_choice_and_result():
    small = make_pattern((2, 4, 4), (3, 3, 3))
    large = make_pattern((4, 32, 32), (3, 7, 7))
    full = make_pattern((4, 32, 32))
    dummy = torch.empty(1, 1, 1, 8)
    assert choose_backend(dummy, dummy, dummy, full) == "reference"  # nothing to skip: plain SDPA
    assert choose_backend(dummy, dummy, dummy, small) == "reference"  # too small to pay for gathering
    assert choose_backend(dummy, dummy, dummy, large) == "cpu_fused"  # a small window, float32, no prefix
    assert choose_backend(dummy.half(), dummy.half(), dummy.half(), large) == "cpu"  # the kernel: float32 / bf16
    assert choose_backend(dummy.bfloat16(), dummy.bfloat16(), dummy.bfloat16(), large) == "cpu_fused"
    assert choose_backend(dummy, dummy, dummy, make_pattern((4, 32, 32), (3, 7, 7), num_prefix_tokens=1)) == "cpu"
    assert choose_backend(dummy, dummy, dummy, make_pattern((8, 32, 32), (1, None, None))) == "cpu"  # 1024 keys
    q, k, v = random_qkv(small)
    check_against_reference(_backend("auto", small), small, q, k, v)
    # Calls where auto picks the fused kernel and the blocked path (2048 tokens, 1x3x3 window): results and grads.
    medium = make_pattern((2, 32, 32), (1, 3, 3))
    q, k, v = random_qkv(medium, batch=1, heads=1, head_dim=8)
    assert choose_backend(q, k, v, medium) == "cpu_fused"
    check_against_reference(_backend("auto", medium), medium, q, k, v)
    medium_prefix = make_pattern((2, 32, 32), (1, 3, 3), num_prefix_tokens=2)
    q, k, v = random_qkv(medium_prefix, batch=1, heads=1, head_dim=8)
    assert choose_backend(q, k, v, medium_prefix) == "cpu"
    check_against_reference(_backend("auto", medium_prefix), medium_prefix, q, k, v)


def test_auto_without_a_compiler_keeps_the_blocked_path(monkeypatch):
    from vidgen.attention import cpu_window
    monkeypatch.setattr(cpu_window, "_library", lambda: (None, "no C compiler found (test)"))
    pattern = make_pattern((4, 32, 32), (3, 7, 7))
    q, k, v = random_qkv(make_pattern((1, 1, 2)), requires_grad=False)
    assert choose_backend(q, k, v, pattern) == "cpu"
    q, k, v = random_qkv(pattern, batch=1, heads=1, head_dim=4, requires_grad=False)
    assert backend_support(q, k, v, **pattern.as_kwargs())["cpu_fused"] == "no C compiler found (test)"
    with pytest.raises(UnsupportedError, match="no C compiler"):
        attention3d(q, k, v, backend="cpu_fused", **pattern.as_kwargs())


def test_backend_support_lists_every_backend(monkeypatch):
    # As in a fresh process without the interpreter (the triton test file may have set it for the session).
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delitem(sys.modules, "vidgen.attention.triton_kernel", raising=False)
    pattern = EDGE_PATTERNS[0]
    q, k, v = random_qkv(pattern, requires_grad=False)
    support = backend_support(q, k, v, **pattern.as_kwargs())
    assert set(support) == {"reference", "cpu", "cpu_fused", "flex", "triton"}
    assert support["reference"] is None and support["cpu"] is None and support["cpu_fused"] is None
    assert "TRITON_INTERPRET=1" in support["triton"]
    with pytest.raises(UnsupportedError, match="needs CUDA tensors"):
        attention3d(q, k, v, backend="triton", **pattern.as_kwargs())


GRID = (2, 3, 4)


@pytest.mark.parametrize("shapes,kwargs,match", [
    (((1, 2, 24, 8), (1, 2, 24, 8), (1, 2, 23, 8)), {}, "same shape"),
    (((1, 2, 24, 8), (1, 2, 24, 4), (1, 2, 24, 8)), {}, "same shape"),
    (((1, 2, 25, 8),) * 3, {}, r"N=25 .* 0 \+ 2\*3\*4 = 24"),
    (((1, 2, 24, 8),) * 3, dict(num_prefix_tokens=1), "N=24"),
    (((2, 24, 8),) * 3, {}, r"\(B, heads, N, D\)"),
    (((1, 2, 24, 8),) * 3, dict(window=(3, 3)), "window"),
    (((1, 2, 24, 8),) * 3, dict(window=(3, 0, 3)), "window"),
    (((1, 2, 24, 8),) * 3, dict(scale=-1.0), "scale"),
    (((1, 2, 24, 8),) * 3, dict(backend="cuda"), "backend"),
])
def test_bad_inputs_raise_clear_errors(shapes, kwargs, match):
    q, k, v = (torch.randn(s) for s in shapes)
    with pytest.raises(InvalidInputError, match=match):
        attention3d(q, k, v, GRID, **kwargs)


def test_mixed_dtypes_and_integer_tensors_are_rejected():
    q = torch.randn(1, 2, 24, 8)
    with pytest.raises(InvalidInputError, match="dtype"):
        attention3d(q, q.double(), q, GRID)
    with pytest.raises(InvalidInputError, match="floating"):
        attention3d(q.long(), q.long(), q.long(), GRID)


def test_bad_block_size_for_the_blocked_path():
    pattern = EDGE_PATTERNS[0]
    q, k, v = random_qkv(pattern, requires_grad=False)
    with pytest.raises(InvalidInputError, match="block"):
        blocked_attention(q, k, v, pattern, block=(0, 2, 2))
