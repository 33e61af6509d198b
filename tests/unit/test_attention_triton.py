"""The fused Triton kernel (forward + backward) against the reference, under the Triton interpreter.

There is no GPU here, so the kernels run on CPU tensors under TRITON_INTERPRET=1, which must be set before
triton is first imported (triton decorates its own library functions at import). So, at collection:
* CUDA available: run the compiled kernels in-process (the interpreter is not used);
* triton not imported yet: set TRITON_INTERPRET=1 now and run in-process. This stays set for the session,
  which is harmless on a machine without a GPU (nothing can launch compiled Triton kernels there anyway);
* triton already imported by some earlier module: run this file in a pytest subprocess with the variable set
  (one test here, passing --runslow on), and skip the in-process copies, saying why.
Under the interpreter the larger cases are marked slow (make test-slow runs them); on a GPU every case runs.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidgen.attention import attention3d, make_pattern
from vidgen.attention.masks import pattern_mask
from vidgen.attention.testing import check_against_reference, random_patterns
from vidgen.attention.testing import random_qkv as _random_qkv
from vidgen.attention.tiles import needed_tile_map, tile_visit_map
from vidgen.errors import InvalidInputError, UnsupportedError

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA and "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"
IN_PROCESS = HAS_CUDA or os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cuda" if HAS_CUDA else "cpu"  # compiled kernels take CUDA tensors, the interpreter CPU ones
needs_cuda = pytest.mark.skipif(not HAS_CUDA,
                                reason="needs a CUDA GPU: compiled (non-interpreted) Triton kernels cannot run here")


def random_qkv(*args, **kwargs):
    return _random_qkv(*args, device=DEVICE, **kwargs)


@pytest.mark.skipif(IN_PROCESS, reason="the kernel tests run in this process (TRITON_INTERPRET=1 or CUDA)")
def test_kernels_in_interpreter_subprocess(request):
    env = dict(os.environ, TRITON_INTERPRET="1")
    runslow = ["--runslow"] if request.config.getoption("--runslow") else []  # the slow kernel tests run too
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *runslow, __file__],
                            env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def tk():
    if not IN_PROCESS:
        pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set: these tests run in the "
                    "subprocess of test_kernels_in_interpreter_subprocess")
    from vidgen.attention import triton_kernel

    assert triton_kernel.INTERPRETED or HAS_CUDA
    return triton_kernel


PATTERNS = [
    make_pattern((3, 5, 7), (3, 3, 3)),  # N=105: no tile size divides it
    make_pattern((4, 6, 5), (3, 5, 3), causal=True, num_prefix_tokens=3),
    make_pattern((2, 6, 8), (1, None, None), num_prefix_tokens=5),  # spatial, prefix spans a tile border
    make_pattern((6, 3, 4), (None, 1, 1), causal=True, num_prefix_tokens=1),  # causal temporal
    make_pattern((4, 4, 4), None, causal=True, num_prefix_tokens=2),  # frame-causal full
    make_pattern((3, 4, 4), (7, 9, 9)),  # window larger than the grid
]
PATTERNS += random_patterns(3, seed=11, max_video_tokens=96)  # plus random grids / windows / prefixes
IDS = [f"{p.grid}-r{p.radii}-c{int(p.causal)}-p{p.num_prefix_tokens}" for p in PATTERNS]


def _triton(pattern, **kwargs):
    return lambda q, k, v: attention3d(q, k, v, backend="triton", **pattern.as_kwargs(), **kwargs)


@pytest.mark.parametrize("pattern", PATTERNS, ids=IDS)
def test_triton_fp32_outputs_and_grads(tk, pattern):
    q, k, v = random_qkv(pattern, batch=1, heads=2, head_dim=16)
    check_against_reference(_triton(pattern), pattern, q, k, v)


LOW_PRECISION = [PATTERNS[i] for i in (0, 1, 2, 5)]  # non-divisible, causal+prefix, prefix over a tile border, >grid


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pattern", LOW_PRECISION, ids=[IDS[i] for i in (0, 1, 2, 5)])
def test_triton_low_precision(tk, pattern, dtype):
    q, k, v = random_qkv(pattern, batch=1, heads=1, head_dim=32, dtype=dtype)
    check_against_reference(_triton(pattern), pattern, q, k, v)


def _tile_pattern(tk, causal_prefix: bool):
    """A tile-aligned window whose tiles are one box of the kernel's layout (32 tokens under the interpreter, 128 on a
    GPU), on a grid of whole tiles."""
    if tk.BLOCK_M == 32:
        grid, tile = (4, 8, 8), ((1, 4, 8) if causal_prefix else (2, 4, 4))
    else:
        grid, tile = (4, 16, 16), ((1, 8, 16) if causal_prefix else (2, 8, 8))
    if causal_prefix:
        return make_pattern(grid, (3, 1, 3), "frame", 3, tile)
    return make_pattern(grid, (1, 3, 3), False, 0, tile)


@pytest.mark.parametrize("causal_prefix", [False, True], ids=["tiles", "tiles-causal-prefix"])
def test_tile_windows_run_whole_tiles_without_a_mask(tk, causal_prefix):
    """Each tile is one box of the layout, so every (video, video) tile pair the kernel visits is full: the mask is
    never computed for them, and the result is the reference's, forward and backward."""
    pattern = _tile_pattern(tk, causal_prefix)
    q, k, v = random_qkv(pattern, batch=1, heads=2, head_dim=16)
    check_against_reference(_triton(pattern), pattern, q, k, v)
    plan = tk.launch_spec(q.device, *tk._op_args(pattern, q, None, None, None)[:4], tk.BLOCK_M, tk.BLOCK_N,
                          [*pattern.tile, 1], "auto").plan
    video = plan.layout.prefix_slots // tk.BLOCK_M  # the first video query tile
    partial = plan.forward.partial_index[video:, :int(plan.forward.partial_count[video:].max())]
    assert plan.layout.box == pattern.tile and plan.forward.full_count[video:].min() > 0
    assert (partial < plan.layout.prefix_slots // tk.BLOCK_N).all()  # partial only against the prefix's tile


def test_tile_windows_the_kernel_cannot_run_are_refused_by_name(tk):
    q = torch.zeros(1, 1, 4 * 8 * 8, 16, device=DEVICE)
    with pytest.raises(UnsupportedError, match=r"tiles hold \d+ tokens \(one box of its layout\), got tile=\(1, 2, 2\)"):
        attention3d(q, q, q, (4, 8, 8), (1, 3, 3), backend="triton", tile=(1, 2, 2))


def test_triton_small_tiles_and_scale(tk):
    pattern = make_pattern((3, 4, 6), (3, 3, 3), causal=True, num_prefix_tokens=2)
    q, k, v = random_qkv(pattern, batch=2, heads=1, head_dim=8)
    fn = lambda a, b, c: tk.triton_attention3d(a, b, c, pattern, scale=0.5, block_m=16, block_n=16)  # noqa: E731
    check_against_reference(fn, pattern, q, k, v, scale=0.5)


@pytest.mark.parametrize("pattern", PATTERNS, ids=IDS)
def test_kernel_visits_exactly_the_mirrored_tiles(tk, pattern):
    """The benchmark's skip fractions come from tiles.tile_visit_map: it must equal what the kernel does,
    and it must never skip a tile pair that holds an allowed (query, key) pair."""
    q = torch.randn(1, 1, pattern.num_tokens, 16, device=DEVICE)
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


def test_operator_registration(tk):
    """Schemas and fake (meta) kernels of both operators are consistent, so torch.compile can trace them (autograd
    is the autograd.Function around them: its gradients are checked against the reference above)."""
    pattern = make_pattern((2, 2, 3), (1, 3, 3), causal=True, num_prefix_tokens=1)
    q, k, v = random_qkv(pattern, batch=1, heads=2, head_dim=8, requires_grad=False)
    # diffusers' transformers pass (B, N, heads, D) projections transposed: strided views, whose outputs the real
    # kernels return contiguous; a fake kernel that kept the inputs' strides broke torch.compile on Wan
    views = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v)]
    config = tk._op_args(pattern, q, None, 16, 16)
    utils = ("test_schema", "test_faketensor")
    for q, k, v in ((q, k, v), views):
        torch.library.opcheck(tk.attention3d_fwd, (q, k, v) + config, test_utils=utils)
        out, lse = tk.attention3d_fwd(q, k, v, *config)
        grad = torch.randn_like(out).transpose(1, 2).contiguous().transpose(1, 2)
        torch.library.opcheck(tk.attention3d_bwd, (grad, q, k, v, out, lse) + config, test_utils=utils)


SLOW = () if HAS_CUDA else pytest.mark.slow  # 5-25 s each under the interpreter: make test-slow runs them
CODES_CASES = [pytest.param(PATTERNS[1], marks=SLOW), pytest.param(PATTERNS[2], marks=SLOW), PATTERNS[5],
               pytest.param(make_pattern((4, 6, 8), (3, 5, 5), num_prefix_tokens=1), marks=SLOW),
               make_pattern((2, 4, 4), (1, 3, 3), causal=True, num_prefix_tokens=2)]  # causal + prefix, small


@pytest.mark.parametrize("pattern", CODES_CASES, ids=["(4, 6, 5)", "(2, 6, 8)", "(3, 4, 4)", "(4, 6, 8)", "(2, 4, 4)"])
def test_packed_and_coordinate_masks_give_the_same_results(tk, pattern):
    """Both mask variants of the kernels agree with the reference, and with each other to the last bit (the same
    pairs are allowed, the arithmetic is the same), forward and backward; the default takes the packed codes."""
    q, k, v = random_qkv(pattern, batch=1, heads=2, head_dim=16)
    runs = {}
    for mask in ("auto", "coords"):
        fn = lambda a, b, c: tk.triton_attention3d(a, b, c, pattern, block_m=32, block_n=16, mask=mask)  # noqa: E731
        check_against_reference(fn, pattern, q, k, v)
        out = fn(q, k, v)
        runs[mask] = (out,) + torch.autograd.grad(out.square().sum(), (q, k, v))
    for a, b in zip(runs["auto"], runs["coords"]):
        assert torch.equal(a, b)
    spec = tk.launch_spec(q.device, *tk._op_args(pattern, q, None, 32, 16)[:4], 32, 16, [0], "auto")
    assert spec.packed and spec.slot_keys.shape == (spec.plan.layout.length,)


def test_unsupported_requests_explain_why(tk, monkeypatch):
    pattern = PATTERNS[0]
    q, k, v = random_qkv(pattern, head_dim=8, dtype=torch.float64)
    with pytest.raises(UnsupportedError, match="float32/float16/bfloat16"):
        attention3d(q, k, v, backend="triton", **pattern.as_kwargs())
    with pytest.raises(InvalidInputError, match="mask must be one of .*'bits'"):
        tk.triton_attention3d(*(x.float() for x in (q, k, v)), pattern, mask="bits")
    monkeypatch.setattr(tk, "INTERPRETED", False)
    with pytest.raises(UnsupportedError, match="TRITON_INTERPRET=1"):
        attention3d(*(x.float().cpu() for x in (q, k, v)), backend="triton", **pattern.as_kwargs())


def test_token_causal_and_decode_calls_are_refused_with_reasons(tk):
    pattern = make_pattern((2, 3, 4), (3, 3, 3), causal="token", num_prefix_tokens=2)
    q, k, v = random_qkv(pattern, head_dim=8)
    assert "causal='token'" in tk.unsupported_reason(q, pattern)
    with pytest.raises(UnsupportedError, match="causal='token'"):
        attention3d(q, k, v, backend="triton", **pattern.as_kwargs())
    frame = make_pattern((2, 3, 4), (3, 3, 3), causal=True, num_prefix_tokens=2)
    with pytest.raises(UnsupportedError, match="decode"):
        attention3d(q[:, :, 14:], k, v, backend="triton", q_start=14, **frame.as_kwargs())


@needs_cuda
def test_triton_on_gpu_native_dot():
    """On a GPU fp16/bf16 go through tl.dot natively (no fp32 upcast): check against the reference there."""
    pattern = make_pattern((8, 16, 16), (3, 7, 7), causal=True, num_prefix_tokens=4)
    for dtype in (torch.float16, torch.bfloat16):
        q, k, v = random_qkv(pattern, batch=1, heads=2, head_dim=64, dtype=dtype)
        check_against_reference(_triton(pattern), pattern, q, k, v)


def test_torch_compile_fullgraph_through_the_custom_op(tk):
    """Dynamo + AOTAutograd trace the op (fake kernel, autograd formula) without a graph break."""
    pattern = make_pattern((2, 3, 4), (1, 3, 3), causal=True, num_prefix_tokens=2)
    q, k, v = random_qkv(pattern, batch=1, heads=1, head_dim=16)

    def fn(a, b, c):
        return attention3d(a * 2, b, c, backend="triton", **pattern.as_kwargs()).sin()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    out = compiled(q, k, v)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    expected = fn(q, k, v)
    torch.testing.assert_close(out, expected)
    for g, e in zip(grads, torch.autograd.grad(expected.sum(), (q, k, v))):
        torch.testing.assert_close(g, e)


LAYOUT_CASES = [  # (pattern, layout): 3D boxes with and without padding, raster with a prefix tile, auto
    (make_pattern((2, 8, 8), (3, 3, 3)), (2, 4, 4)),  # boxes tile the grid: a permutation without padding
    (make_pattern((3, 5, 7), (3, 3, 5), num_prefix_tokens=3), (1, 4, 8)),  # padded boxes, prefix
    (make_pattern((5, 4, 6), (3, None, 3), causal=True, num_prefix_tokens=2), (4, 2, 4)),
    (make_pattern((4, 6, 5), (3, 5, 3), causal=True, num_prefix_tokens=3), "raster"),
    (make_pattern((4, 6, 8), (3, 5, 5), num_prefix_tokens=1), "auto"),
]


@pytest.mark.parametrize("pattern,layout", [pytest.param(p, lay, id=f"{p.grid}-{lay}",
                                                         marks=SLOW if i in (1, 2, 4) else ())
                                            for i, (p, lay) in enumerate(LAYOUT_CASES)])
def test_triton_layouts_agree_with_reference(tk, pattern, layout):
    """Every token layout gives the reference's outputs and gradients (32x16 forward tiles, 16x16 backward)."""
    q, k, v = random_qkv(pattern, batch=1, heads=1, head_dim=16)
    check_against_reference(lambda a, b, c: tk.triton_attention3d(a, b, c, pattern, block_m=32, block_n=16,
                                                                  layout=layout), pattern, q, k, v)


LISTED = [LAYOUT_CASES[1], LAYOUT_CASES[2], (make_pattern((4, 8, 8), (5, 9, 9), num_prefix_tokens=16), (2, 4, 4))]


@pytest.mark.parametrize("pattern,layout", LISTED, ids=[f"{p.grid}-{lay}" for p, lay in LISTED])
def test_kernel_visits_the_listed_tiles_of_a_box_layout(tk, pattern, layout):
    """In a box layout the kernel visits exactly the tiles of tiles.tile_maps, which hold every needed tile, and
    in the tiles it treats as full every (real query, key) pair is allowed."""
    from vidgen.attention import tiles

    q = torch.randn(1, 1, pattern.num_tokens, 16, device=DEVICE)
    visits = tk.kernel_tile_visits(q, q, q, pattern, 32, 16, layout=layout)[0]
    lay = tiles.make_layout(pattern, layout, 32)
    visit, full = tiles.tile_maps(pattern, lay, 32, 16)
    assert visits.tolist() == visit.sum(dim=1).tolist()
    mask = pattern_mask(pattern)
    assert not (needed_tile_map(pattern, mask, 32, 16, box=layout) & ~visit).any()
    n = lay.length
    slots = torch.zeros(n, n, dtype=torch.bool)
    slots[lay.dst[:, None], lay.dst[None, :]] = mask
    real = torch.zeros(n, dtype=torch.bool)
    real[lay.dst] = True
    pairs = (slots | ~real[:, None]) & real[None, :]  # allowed, or a padding query; padding keys never
    assert pairs.view(n // 32, 32, n // 16, 16).all(dim=3).all(dim=1)[full].all()
    assert full.any() or pattern is not LISTED[2][0]  # the wide window has full tiles: they are found


def test_box_layout_skips_more_tiles_than_raster():
    """At the GPU benchmark's NATTEN shape the chosen boxes visit under half the tile pairs raster order does."""
    pattern = make_pattern((30, 48, 80), (18, 24, 24))
    raster = tile_visit_map(pattern, 128, 64, box=None).float().mean()
    assert tile_visit_map(pattern, 128, 64).float().mean() < 0.5 * raster


@pytest.mark.slow  # two subprocess runs of the interpreter
def test_autotune_can_be_switched_off_for_test_runs():
    """VIDGEN_TRITON_AUTOTUNE=0 (the GPU test runs set it) leaves each kernel one launch config; unset, the GPU has
    several to tune. Decided at import, so checked in fresh interpreters (no kernel is launched)."""
    code = ("from vidgen.attention import triton_jit as j; "
            "print(len(j.fwd_kernel.configs), len(j.bwd_kv_kernel.configs), len(j.bwd_q_kernel.configs))")
    counts = {}
    for value in ("0", "1"):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["VIDGEN_TRITON_AUTOTUNE"] = value
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        counts[value] = [int(x) for x in run.stdout.split()]
    assert counts["0"] == [1, 1, 1] and min(counts["1"]) > 1


def test_row_dot_in_chunks_gives_the_same_bits(tk, monkeypatch):
    """The backward's rowsum(dO * O), made fp32 a chunk of rows at a time, equals the one-piece computation."""
    gen = torch.Generator().manual_seed(3)
    grad_out, out = (torch.randn(2, 3, 37, 16, generator=gen, dtype=torch.bfloat16) for _ in range(2))
    whole = (grad_out.float() * out.float()).sum(-1)
    assert torch.equal(tk.row_dot(grad_out, out), whole)  # one chunk
    monkeypatch.setattr(tk, "DELTA_CHUNK", 2 * 3 * 16 * 5)  # five rows a chunk: 8 chunks, the last one short
    assert torch.equal(tk.row_dot(grad_out, out), whole)
    monkeypatch.setattr(tk, "DELTA_CHUNK", 1)  # fewer elements than one row: a row at a time
    assert torch.equal(tk.row_dot(grad_out, out), whole)
