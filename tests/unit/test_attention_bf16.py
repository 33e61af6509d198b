"""bf16 for every attention backend: bf16 inputs, and float32 inputs under ``torch.autocast("cpu", torch.bfloat16)``.

Forward and backward are compared with the float32 reference (:func:`vidgen.attention.reference.reference_attention`,
SDPA with the dense mask) run on the same bf16-rounded inputs, within the per-dtype tolerances of
:data:`vidgen.attention.testing.TOLERANCES`:

| result computed in | atol | rtol |
|---|---|---|
| float32 | 1e-5 | 1e-5 |
| bfloat16 (inputs, outputs and gradients stored in bf16; sums in float32) | 5e-2 | 5e-2 |

Masks (3D window, frame-level causality, prefix tokens) are also checked directly: a key a query may not attend gets an
exactly zero gradient from that query. The fused C kernel runs head dim 64 on its AVX512-BF16 path (where the CPU has
it) and head dim 16 on its plain float32-conversion path; both are checked. Triton runs under the interpreter
(TRITON_INTERPRET=1, set before triton is imported, as tests/unit/test_attention_triton.py does), whose kernels upcast bf16 to
float32 before ``tl.dot``. Small grids keep the file to a few seconds.
"""
import os
import sys

import pytest
import torch

from vidgen.attention import attention3d, choose_backend, make_pattern
from vidgen.attention.reference import reference_attention
from vidgen.attention.testing import TOLERANCES
from vidgen.errors import UnsupportedError

if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"
# this file is about CPU tensors and CPU autocast: triton joins only under the interpreter (on a GPU machine,
# tests/unit/test_attention_triton.py runs the compiled kernel in bf16)
TRITON_IN_PROCESS = os.environ.get("TRITON_INTERPRET") == "1"

WINDOW = make_pattern((3, 5, 6), (3, 3, 5))
CAUSAL = make_pattern((4, 4, 5), (3, 3, 3), causal=True)
PREFIX = make_pattern((2, 4, 4), (3, 3, 3), causal=True, num_prefix_tokens=2)
SPATIAL = make_pattern((2, 5, 5), (1, None, None))
# (backend, patterns it implements); the fused kernel has no prefix tokens, flex has no backward on CPU
CASES = [("reference", [WINDOW, CAUSAL, PREFIX]), ("cpu", [WINDOW, CAUSAL, PREFIX, SPATIAL]),
         ("cpu_fused", [WINDOW, CAUSAL, SPATIAL]), ("flex", [WINDOW, PREFIX]), ("triton", [WINDOW, CAUSAL, PREFIX])]
PARAMS = [pytest.param(b, p, id=f"{b}-{i}") for b, ps in CASES for i, p in enumerate(ps)]
BF16 = TOLERANCES[torch.bfloat16]


def _skip_unavailable(backend):
    if backend == "triton" and not TRITON_IN_PROCESS:
        pytest.skip("triton runs CPU tensors only under TRITON_INTERPRET=1, which was not set before triton was "
                    "imported (or a GPU is present); tests/unit/test_attention_triton.py covers bf16")


def _inputs(pattern, head_dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 2, pattern.num_tokens, head_dim, generator=gen) for _ in range(3)]


def _reference(xs, pattern, grad_out):
    """Float32 reference output and input gradients on the (already bf16-rounded) inputs."""
    leaves = [x.detach().float().requires_grad_() for x in xs]
    with torch.autocast("cpu", enabled=False):  # the reference stays float32 inside the autocast tests
        out = reference_attention(*leaves, pattern)
        return out.detach(), torch.autograd.grad(out, leaves, grad_out.float())


def _compare(backend, pattern, xs, out_dtype, grads=True):
    out = attention3d(*xs, backend=backend, **pattern.as_kwargs())
    assert out.dtype == out_dtype, f"{backend} returned {out.dtype}, expected {out_dtype}"
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out_dtype)
    want_out, want_grads = _reference([x.detach().bfloat16() for x in xs], pattern, grad_out)
    torch.testing.assert_close(out.float(), want_out, **BF16)
    if not grads:
        return
    got = torch.autograd.grad(out, xs, grad_out)
    for name, g, x, w in zip("qkv", got, xs, want_grads):
        assert g.dtype == x.dtype, f"d{name} is {g.dtype}, the input {name} is {x.dtype}"
        torch.testing.assert_close(g.float(), w, **BF16, msg=lambda m: f"{backend} d{name}: {m}")


@pytest.mark.parametrize("backend, pattern", PARAMS)
def test_bf16_inputs(backend, pattern):
    _skip_unavailable(backend)
    grads = backend != "flex"
    xs = [x.bfloat16().requires_grad_(grads) for x in _inputs(pattern)]
    _compare(backend, pattern, xs, torch.bfloat16, grads)


@pytest.mark.parametrize("backend, pattern", PARAMS)
def test_float32_inputs_under_autocast(backend, pattern):
    _skip_unavailable(backend)
    grads = backend != "flex"
    xs = [x.requires_grad_(grads) for x in _inputs(pattern, seed=2)]
    with torch.autocast("cpu", torch.bfloat16):
        _compare(backend, pattern, xs, torch.bfloat16, grads)  # float32 leaves get float32 gradients


@pytest.mark.parametrize("pattern", [WINDOW, CAUSAL])
def test_fused_kernel_head_dim_64_bf16_path(pattern):
    """Head dim 64 takes the kernel's vdpbf16ps path (dot products, paired-row weighted sums), odd row counts
    included (5-key windows along w)."""
    xs = [x.bfloat16().requires_grad_() for x in _inputs(pattern, head_dim=64, seed=3)]
    _compare("cpu_fused", pattern, xs, torch.bfloat16)


@pytest.mark.parametrize("backend, pattern", [(b, p) for b, ps in CASES if b != "flex" for p in ps])
def test_masked_out_keys_get_no_gradient(backend, pattern):
    _skip_unavailable(backend)
    q, k, v = (x.bfloat16().requires_grad_() for x in _inputs(pattern, seed=4))
    out = attention3d(q, k, v, backend=backend, **pattern.as_kwargs())
    row = pattern.num_tokens - 1 if pattern.causal else pattern.num_tokens // 2
    grad_out = torch.zeros_like(out)
    grad_out[:, :, row] = 1
    dk, dv = torch.autograd.grad(out, (k, v), grad_out)
    allowed = reference_mask_row(pattern, row)
    assert bool((dv[:, :, ~allowed] == 0).all()) and bool((dk[:, :, ~allowed] == 0).all())
    assert bool((dv[:, :, allowed] != 0).any(dim=-1).all()), "every allowed key contributes to the output"


def reference_mask_row(pattern, row):
    from vidgen.attention.masks import pattern_mask_rows

    idx = torch.arange(pattern.num_tokens)
    return pattern_mask_rows(pattern, idx[row:row + 1], idx)[0]


def test_auto_picks_the_fused_kernel_for_bf16_windows():
    large = make_pattern((16, 32, 32), (3, 7, 7))
    dummy = torch.empty(1, 1, 1, 64, dtype=torch.bfloat16)
    assert choose_backend(dummy, dummy, dummy, large) == "cpu_fused"
    with_prefix = make_pattern((16, 32, 32), (3, 7, 7), num_prefix_tokens=4)
    assert choose_backend(dummy, dummy, dummy, with_prefix) == "cpu"


def test_fused_kernel_refuses_float16_with_the_fix():
    xs = [x.half() for x in _inputs(WINDOW)]
    with pytest.raises(UnsupportedError, match="float32 or bfloat16"):
        attention3d(*xs, backend="cpu_fused", **WINDOW.as_kwargs())


def test_autocast_state_and_threads_are_left_as_found():
    threads = torch.get_num_threads()
    xs = _inputs(WINDOW)
    with torch.autocast("cpu", torch.bfloat16):
        attention3d(*xs, backend="cpu_fused", **WINDOW.as_kwargs())
        assert torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu") and torch.get_num_threads() == threads


@pytest.mark.parametrize("window", [(3, 3, 5), None])
def test_attention3d_module_under_autocast(window):
    """The module as a model calls it: float32 weights, autocast on; qk-norm (fp32 under autocast) and RoPE included."""
    from vidgen.attention import Attention3D, Attention3DConfig

    torch.manual_seed(0)
    layer = Attention3D(Attention3DConfig(dim=64, num_heads=2, window=window, qk_norm=True))
    x = torch.randn(2, 3 * 5 * 6, 64)
    want = layer(x, (3, 5, 6))
    with torch.autocast("cpu", torch.bfloat16):
        got = layer(x.requires_grad_(), (3, 5, 6))
    assert got.dtype == torch.bfloat16
    got.float().sum().backward()
    assert x.grad.dtype == torch.float32 and bool(torch.isfinite(x.grad).all())
    torch.testing.assert_close(got.float(), want, atol=5e-2, rtol=5e-2)
