"""The fused Triton kernel (forward + backward) against the reference, under the Triton interpreter.

There is no GPU here, so the kernels run on CPU tensors under TRITON_INTERPRET=1 (set only while this module's
tests run, before the kernel module is first imported). Small grids keep the whole file to about a minute.
"""
import os

import pytest
import torch

from vidgen.attention import attention3d, make_pattern
from vidgen.attention.masks import pattern_mask
from vidgen.attention.testing import check_against_reference, random_qkv
from vidgen.attention.tiles import needed_tile_map, tile_visit_map
from vidgen.errors import UnsupportedError

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU: compiled (non-interpreted) Triton kernels cannot run here")


@pytest.fixture(scope="module")
def tk():
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    from vidgen.attention import triton_kernel

    if not triton_kernel.INTERPRETED and not torch.cuda.is_available():
        pytest.fail("vidgen.attention.triton_kernel was imported before TRITON_INTERPRET=1 was set, "
                    "so its kernels cannot run on this CPU-only machine")
    yield triton_kernel
    if previous is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = previous


PATTERNS = [
    make_pattern((3, 5, 7), (3, 3, 3)),  # N=105: no tile size divides it
    make_pattern((4, 6, 5), (3, 5, 3), causal=True, num_prefix_tokens=3),
    make_pattern((2, 6, 8), (1, None, None), num_prefix_tokens=5),  # spatial, prefix spans a tile border
    make_pattern((6, 3, 4), (None, 1, 1), causal=True, num_prefix_tokens=1),  # causal temporal
    make_pattern((4, 4, 4), None, causal=True, num_prefix_tokens=2),  # frame-causal full
    make_pattern((3, 4, 4), (7, 9, 9)),  # window larger than the grid
]
IDS = [f"{p.grid}-r{p.radii}-c{int(p.causal)}-p{p.num_prefix_tokens}" for p in PATTERNS]


def _triton(pattern, **kwargs):
    return lambda q, k, v: attention3d(q, k, v, backend="triton", **pattern.as_kwargs(), **kwargs)


@pytest.mark.parametrize("pattern", PATTERNS, ids=IDS)
def test_triton_fp32_outputs_and_grads(tk, pattern):
    q, k, v = random_qkv(pattern, batch=1, heads=2, head_dim=16)
    check_against_reference(_triton(pattern), pattern, q, k, v)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_low_precision(tk, dtype):
    pattern = PATTERNS[1]
    q, k, v = random_qkv(pattern, batch=1, heads=1, head_dim=32, dtype=dtype)
    check_against_reference(_triton(pattern), pattern, q, k, v)


def test_triton_small_tiles_and_scale(tk):
    pattern = make_pattern((3, 4, 6), (3, 3, 3), causal=True, num_prefix_tokens=2)
    q, k, v = random_qkv(pattern, batch=2, heads=1, head_dim=8)
    fn = lambda a, b, c: tk.triton_attention3d(a, b, c, pattern, scale=0.5, block_m=16, block_n=16)  # noqa: E731
    check_against_reference(fn, pattern, q, k, v, scale=0.5)


@pytest.mark.parametrize("pattern", PATTERNS, ids=IDS)
def test_kernel_visits_exactly_the_mirrored_tiles(tk, pattern):
    """The benchmark's skip fractions come from tiles.tile_visit_map: it must equal what the kernel does,
    and it must never skip a tile pair that holds an allowed (query, key) pair."""
    q = torch.randn(1, 1, pattern.num_tokens, 16)
    for bm, bn in [(16, 16), (32, 16)]:
        visits = tk.kernel_tile_visits(q, q, q, pattern, bm, bn)[0]
        mirror = tile_visit_map(pattern, bm, bn)
        assert visits.tolist() == mirror.sum(dim=1).tolist()
        assert not (needed_tile_map(pattern, pattern_mask(pattern), bm, bn) & ~mirror).any()


def test_windowed_pattern_skips_tiles(tk):
    pattern = make_pattern((4, 8, 8), (1, 3, 3))
    assert 1 - tile_visit_map(pattern, 16, 16).float().mean() > 0.7


def test_triton_deterministic(tk):
    pattern = PATTERNS[1]
    q, k, v = random_qkv(pattern, batch=1, heads=1, head_dim=16)
    runs = []
    for _ in range(2):
        out = attention3d(q, k, v, backend="triton", **pattern.as_kwargs())
        runs.append((out,) + torch.autograd.grad(out.square().sum(), (q, k, v)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_custom_op_registration(tk):
    """Schema, fake (meta) kernel and autograd registration are consistent, so torch.compile can trace it."""
    pattern = make_pattern((2, 2, 3), (1, 3, 3), causal=True, num_prefix_tokens=1)
    q, k, v = random_qkv(pattern, batch=1, heads=1, head_dim=8)
    args = (q, k, v) + tk._op_args(pattern, q, None, 16, 16)
    torch.library.opcheck(tk.attention3d_fwd, args,
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_unsupported_requests_explain_why(tk, monkeypatch):
    pattern = PATTERNS[0]
    q, k, v = random_qkv(pattern, head_dim=8, dtype=torch.float64)
    with pytest.raises(UnsupportedError, match="float32/float16/bfloat16"):
        attention3d(q, k, v, backend="triton", **pattern.as_kwargs())
    monkeypatch.setattr(tk, "INTERPRETED", False)
    with pytest.raises(UnsupportedError, match="TRITON_INTERPRET=1"):
        attention3d(q.float(), k.float(), v.float(), backend="triton", **pattern.as_kwargs())


@needs_cuda
def test_triton_on_gpu_native_dot():
    """On a GPU fp16/bf16 go through tl.dot natively (no fp32 upcast): check against the reference there."""
    pattern = make_pattern((8, 16, 16), (3, 7, 7), causal=True, num_prefix_tokens=4)
    for dtype in (torch.float16, torch.bfloat16):
        q, k, v = (x.cuda() for x in random_qkv(pattern, batch=1, heads=2, head_dim=64, dtype=dtype))
        check_against_reference(_triton(pattern), pattern, q, k, v)
