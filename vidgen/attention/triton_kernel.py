"""Fused flash-attention-style Triton kernels for 3D attention patterns (forward, dK/dV and dQ backward).

The tokens are first gathered into the layout of :mod:`vidgen.attention.tiles` (prefix, then the video in 3D boxes or
raster order, padded to whole tiles). Each program owns one tile of queries (forward, dQ) or keys (dK/dV) and walks
two precomputed lists of the other side's tiles: *full* tiles, every pair allowed, with no mask at all, then *partial*
tiles, where the exact mask is recomputed from the slots' (t, h, w) coordinates. Tiles that cannot interact are never
visited. Online softmax in fp32 with exp2 (FlashAttention-2); the backward recomputes probabilities from the saved
log-sum-exp, with separate dK/dV and dQ kernels, so there are no atomics and results are deterministic.

Runs on CUDA tensors, or on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1`` set before triton
is first imported). The interpreter mis-computes bf16 ``tl.dot``, so there we upcast to fp32 first.
"""
from __future__ import annotations

import inspect
import math
import os
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from vidgen.attention import tiles
from vidgen.attention.masks import AttentionPattern
from vidgen.attention.reasons import TRITON_CPU_REASON, TRITON_TOKEN_CAUSAL_REASON

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256
LOG2E = 1.4426950408889634
_INTERPRET_ENV = os.environ.get("TRITON_INTERPRET") == "1"


def _autotune(configs):
    """warps x stages tuned on the GPU per (head dim, tiles, dtype, power-of-two bucket of the sequence length: not
    per length, or every new grid would pay a tuning), with Triton's on-disk cache of the choice where it has one;
    one config under the interpreter."""
    if _INTERPRET_ENV:
        configs = configs[:1]
    kwargs = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}
    return triton.autotune([triton.Config({}, num_warps=w, num_stages=s) for w, s in configs],
                           key=["N_BUCKET", "D", "BLOCK_M", "BLOCK_N", "CAUSAL", "HAS_PREFIX"], **kwargs)


@triton.jit
def _dot(a, b):
    # "ieee": fp32 inputs stay exact on GPUs (the default tf32 would miss the 1e-5 fp32 tolerance); fp16/bf16
    # inputs are unaffected by it.
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _rows(ptr, base, offs, offs_d, D, EVEN_D: tl.constexpr, DOT_FP32: tl.constexpr):
    """(len(offs), BLOCK_D) rows of a (slots, D) matrix; every slot index is in range (the layout is padded)."""
    ptrs = ptr + base + offs[:, None] * D + offs_d[None, :]
    x = tl.load(ptrs) if EVEN_D else tl.load(ptrs, mask=offs_d[None, :] < D, other=0.0)
    if DOT_FP32:
        x = x.to(tl.float32)
    return x


@triton.jit
def _coords(C, L, offs):
    return tl.load(C + offs), tl.load(C + L + offs), tl.load(C + 2 * L + offs)


@triton.jit
def _key_tile(INDEX, K, V, base, offs_d, D, BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, DOT_FP32: tl.constexpr):
    """(slots, k, v) of the key tile whose number INDEX points to."""
    offs_n = tl.load(INDEX) * BLOCK_N + tl.arange(0, BLOCK_N)
    return offs_n, _rows(K, base, offs_n, offs_d, D, EVEN_D, DOT_FP32), _rows(V, base, offs_n, offs_d, D, EVEN_D,
                                                                              DOT_FP32)


@triton.jit
def _allowed(qt, qh, qw, kt, kh, kw, RT, RH, RW, CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr):
    """Exact mask of a (query slots (M, 1), key slots (1, N)) tile from coordinates (see vidgen.attention.tiles)."""
    dt = qt - kt
    ok = (tl.abs(dt) <= RT) & (tl.abs(qh - kh) <= RH) & (tl.abs(qw - kw) <= RW)
    if CAUSAL:
        ok = ok & (dt >= 0)
    if HAS_PREFIX:
        ok = ok | (kt == -(1 << 20))  # every query attends the prefix
        if not CAUSAL:  # prefix queries attend every real key
            ok = ok | ((qt == -(1 << 20)) & (kt >= 0) & (kt < (1 << 21)))
    return ok


@triton.jit
def _fwd_loop(acc, m_i, l_i, q, K, V, C, L, base, qt, qh, qw, offs_d, COUNT, INDEX, RT, RH, RW, qk_scale, D,
              MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr, BLOCK_N: tl.constexpr,
              EVEN_D: tl.constexpr, DOT_FP32: tl.constexpr):
    """Online-softmax steps of a query tile over the key tiles INDEX[0:COUNT] (scores in log2 units)."""
    for i in range(0, COUNT):
        offs_n, k, v = _key_tile(INDEX + i, K, V, base, offs_d, D, BLOCK_N, EVEN_D, DOT_FP32)
        s = _dot(q, tl.trans(k)) * qk_scale
        if MASKED:
            kt, kh, kw = _coords(C, L, offs_n)
            allowed = _allowed(qt, qh, qw, kt[None, :], kh[None, :], kw[None, :], RT, RH, RW, CAUSAL, HAS_PREFIX)
            s = tl.where(allowed, s, -1.0e30)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        if MASKED:  # a row with nothing allowed yet has m_new = -1e30: exp2(0) there must not count
            p = tl.where(allowed, p, 0.0)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _program(BLOCK: tl.constexpr, N, D):
    """This program's tile (axis 0 of the launch grid) and (batch*head) element base (axis 1)."""
    tile = tl.program_id(0)
    return tile, tile * BLOCK + tl.arange(0, BLOCK), tl.program_id(1).to(tl.int64) * N * D


@_autotune([(4, 3), (8, 3), (8, 2), (4, 4)])
@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, VISITS, C, FULL_N, FULL_I, PART_N, PART_I, FULL_W, PART_W, N, N_BUCKET, RT, RH, RW,
                qk_scale, D, CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr, DOT_FP32: tl.constexpr):
    tile, offs_m, base = _program(BLOCK_M, N, D)
    offs_d = tl.arange(0, BLOCK_D)
    q = _rows(Q, base, offs_m, offs_d, D, EVEN_D, DOT_FP32)
    qt, qh, qw = _coords(C, N, offs_m)
    qt, qh, qw = qt[:, None], qh[:, None], qw[:, None]
    # Finite "minus infinity" so that rows with nothing allowed yet never produce inf - inf = NaN.
    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - 1.0e30
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    n_full, n_part = tl.load(FULL_N + tile), tl.load(PART_N + tile)
    acc, m_i, l_i = _fwd_loop(acc, m_i, l_i, q, K, V, C, N, base, qt, qh, qw, offs_d, n_full, FULL_I + tile * FULL_W,
                              RT, RH, RW, qk_scale, D, False, CAUSAL, HAS_PREFIX, BLOCK_N, EVEN_D, DOT_FP32)
    acc, m_i, l_i = _fwd_loop(acc, m_i, l_i, q, K, V, C, N, base, qt, qh, qw, offs_d, n_part, PART_I + tile * PART_W,
                              RT, RH, RW, qk_scale, D, True, CAUSAL, HAS_PREFIX, BLOCK_N, EVEN_D, DOT_FP32)
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    o_ptrs = O + base + offs_m[:, None] * D + offs_d[None, :]
    out = (acc / l_safe[:, None]).to(O.dtype.element_ty)
    if EVEN_D:
        tl.store(o_ptrs, out)
    else:
        tl.store(o_ptrs, out, mask=offs_d[None, :] < D)
    tl.store(LSE + tl.program_id(1).to(tl.int64) * N + offs_m, (m_i + tl.log2(l_safe)) / 1.4426950408889634)
    tl.store(VISITS + tl.program_id(1) * tl.num_programs(0) + tile, n_full + n_part)


@triton.jit
def _bwd_pair(q, k, v, do, lse2, delta, offs_m, offs_n, C, L, RT, RH, RW, qk_scale, MASKED: tl.constexpr,
              CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr):
    """(p, ds) of a (query tile, key tile) pair: probabilities recomputed from the log-sum-exp (log2 units)."""
    p = tl.exp2(_dot(q, tl.trans(k)) * qk_scale - lse2[:, None])
    if MASKED:
        qt, qh, qw = _coords(C, L, offs_m)
        kt, kh, kw = _coords(C, L, offs_n)
        allowed = _allowed(qt[:, None], qh[:, None], qw[:, None], kt[None, :], kh[None, :], kw[None, :],
                           RT, RH, RW, CAUSAL, HAS_PREFIX)
        p = tl.where(allowed, p, 0.0)
    return p, p * (_dot(do, tl.trans(v)) - delta[:, None])


@triton.jit
def _query_rows(Q, DO, LSE, DELTA, base, row_base, offs_m, offs_d, D, EVEN_D: tl.constexpr, DOT_FP32: tl.constexpr):
    """What the backward needs of a query tile: q, dO, the log-sum-exp in log2 units and rowsum(dO * O)."""
    q = _rows(Q, base, offs_m, offs_d, D, EVEN_D, DOT_FP32)
    do = _rows(DO, base, offs_m, offs_d, D, EVEN_D, DOT_FP32)
    return q, do, tl.load(LSE + row_base + offs_m) * 1.4426950408889634, tl.load(DELTA + row_base + offs_m)


@triton.jit
def _kv_loop(dk, dv, k, v, Q, DO, LSE, DELTA, C, L, base, row_base, offs_n, offs_d, COUNT, INDEX, RT, RH, RW,
             qk_scale, D, MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr, BLOCK_M: tl.constexpr,
             EVEN_D: tl.constexpr, DOT_FP32: tl.constexpr):
    for i in range(0, COUNT):
        offs_m = tl.load(INDEX + i) * BLOCK_M + tl.arange(0, BLOCK_M)
        q, do, lse2, delta = _query_rows(Q, DO, LSE, DELTA, base, row_base, offs_m, offs_d, D, EVEN_D, DOT_FP32)
        p, ds = _bwd_pair(q, k, v, do, lse2, delta, offs_m, offs_n, C, L, RT, RH, RW, qk_scale, MASKED, CAUSAL,
                          HAS_PREFIX)
        dv += _dot(tl.trans(p.to(do.dtype)), do)
        dk += _dot(tl.trans(ds.to(q.dtype)), q)
    return dk, dv


@_autotune([(4, 2), (8, 2), (4, 3)])
@triton.jit
def _bwd_kv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, C, FULL_N, FULL_I, PART_N, PART_I, FULL_W, PART_W, N, N_BUCKET,
                   RT, RH, RW, qk_scale, scale, D, CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
                   DOT_FP32: tl.constexpr):
    """dK, dV of one key tile, over the query tiles that attend it."""
    tile, offs_n, base = _program(BLOCK_N, N, D)
    offs_d = tl.arange(0, BLOCK_D)
    row_base = tl.program_id(1).to(tl.int64) * N
    k = _rows(K, base, offs_n, offs_d, D, EVEN_D, DOT_FP32)
    v = _rows(V, base, offs_n, offs_d, D, EVEN_D, DOT_FP32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dk, dv = _kv_loop(dk, dv, k, v, Q, DO, LSE, DELTA, C, N, base, row_base, offs_n, offs_d, tl.load(FULL_N + tile),
                      FULL_I + tile * FULL_W, RT, RH, RW, qk_scale, D, False, CAUSAL, HAS_PREFIX, BLOCK_M, EVEN_D,
                      DOT_FP32)
    dk, dv = _kv_loop(dk, dv, k, v, Q, DO, LSE, DELTA, C, N, base, row_base, offs_n, offs_d, tl.load(PART_N + tile),
                      PART_I + tile * PART_W, RT, RH, RW, qk_scale, D, True, CAUSAL, HAS_PREFIX, BLOCK_M, EVEN_D,
                      DOT_FP32)
    ptrs = offs_n[:, None] * D + offs_d[None, :]
    dk, dv = (dk * scale).to(DK.dtype.element_ty), dv.to(DV.dtype.element_ty)
    if EVEN_D:
        tl.store(DK + base + ptrs, dk)
        tl.store(DV + base + ptrs, dv)
    else:
        tl.store(DK + base + ptrs, dk, mask=offs_d[None, :] < D)
        tl.store(DV + base + ptrs, dv, mask=offs_d[None, :] < D)


@triton.jit
def _q_loop(dq, q, do, lse2, delta, K, V, C, L, base, offs_m, offs_d, COUNT, INDEX, RT, RH, RW, qk_scale, D,
            MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr, BLOCK_N: tl.constexpr,
            EVEN_D: tl.constexpr, DOT_FP32: tl.constexpr):
    for i in range(0, COUNT):
        offs_n, k, v = _key_tile(INDEX + i, K, V, base, offs_d, D, BLOCK_N, EVEN_D, DOT_FP32)
        _, ds = _bwd_pair(q, k, v, do, lse2, delta, offs_m, offs_n, C, L, RT, RH, RW, qk_scale, MASKED, CAUSAL,
                          HAS_PREFIX)
        dq += _dot(ds.to(k.dtype), k)
    return dq


@_autotune([(4, 2), (8, 2), (4, 3)])
@triton.jit
def _bwd_q_kernel(Q, K, V, DO, LSE, DELTA, DQ, C, FULL_N, FULL_I, PART_N, PART_I, FULL_W, PART_W, N, N_BUCKET,
                  RT, RH, RW, qk_scale, scale, D, CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr, DOT_FP32: tl.constexpr):
    """dQ of one query tile, over the key tiles it attends."""
    tile, offs_m, base = _program(BLOCK_M, N, D)
    offs_d = tl.arange(0, BLOCK_D)
    row_base = tl.program_id(1).to(tl.int64) * N
    q, do, lse2, delta = _query_rows(Q, DO, LSE, DELTA, base, row_base, offs_m, offs_d, D, EVEN_D, DOT_FP32)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    dq = _q_loop(dq, q, do, lse2, delta, K, V, C, N, base, offs_m, offs_d, tl.load(FULL_N + tile),
                 FULL_I + tile * FULL_W, RT, RH, RW, qk_scale, D, False, CAUSAL, HAS_PREFIX, BLOCK_N, EVEN_D, DOT_FP32)
    dq = _q_loop(dq, q, do, lse2, delta, K, V, C, N, base, offs_m, offs_d, tl.load(PART_N + tile),
                 PART_I + tile * PART_W, RT, RH, RW, qk_scale, D, True, CAUSAL, HAS_PREFIX, BLOCK_N, EVEN_D, DOT_FP32)
    ptrs = DQ + base + offs_m[:, None] * D + offs_d[None, :]
    if EVEN_D:
        tl.store(ptrs, (dq * scale).to(DQ.dtype.element_ty))
    else:
        tl.store(ptrs, (dq * scale).to(DQ.dtype.element_ty), mask=offs_d[None, :] < D)


INTERPRETED = _INTERPRET_ENV and type(_fwd_kernel.fn).__name__ == "InterpretedFunction"
# Forward tiles (queries x keys) and backward tiles (both kernels); the layout's boxes hold max(BLOCK_M, BLOCK_N).
BLOCK_M, BLOCK_N = (32, 32) if INTERPRETED else (128, 64)
BWD_BLOCK = 32 if INTERPRETED else 64


def _radii(grid: List[int], radii: List[int]) -> List[int]:
    # -1 encodes "unlimited": any radius >= axis size - 1 is unlimited, so use the axis size itself.
    return [n if r < 0 else r for n, r in zip(grid, radii)]


def _plan(q: torch.Tensor, grid, radii, causal, prefix, block_m, block_n, box) -> tiles.KernelPlan:
    """``box``: [0] the layout tiles.choose_box picks, [] raster order, [bt, bh, bw] that box."""
    pattern = AttentionPattern(tuple(grid), tuple(None if r < 0 else r for r in radii), causal, prefix)
    if list(box) == [0]:
        box = tiles.cached_choose_box(pattern, block_m, block_n, q.device)
    return tiles.kernel_plan(pattern, tuple(box) if box else None, block_m, block_n, min(BWD_BLOCK, block_m, block_n),
                             q.device)


def _to_slots(x: torch.Tensor, plan: tiles.KernelPlan) -> torch.Tensor:
    """(B, h, N, ...) in token order -> (B, h, slots, ...) in the layout, padding slots zero (so a padding query's
    output gradient is zero and its backward contributes nothing)."""
    if plan.layout.identity:
        return x.contiguous()
    shape = x.shape[:2] + (plan.layout.length,) + x.shape[3:]
    return x.new_zeros(shape).index_copy_(2, plan.layout.dst, x)


def _from_slots(x: torch.Tensor, plan: tiles.KernelPlan) -> torch.Tensor:
    return x if plan.layout.identity else x.index_select(2, plan.layout.dst)


def _lists(lists: tiles.TileLists) -> tuple:
    return (lists.full_count, lists.full_index, lists.partial_count, lists.partial_index, lists.full_index.shape[1],
            lists.partial_index.shape[1])


def _meta(q: torch.Tensor, causal: bool, prefix: int, block_m: int, block_n: int) -> dict:
    block_d = max(16, triton.next_power_of_2(q.shape[3]))
    return dict(CAUSAL=causal, HAS_PREFIX=prefix > 0, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
                EVEN_D=block_d == q.shape[3], DOT_FP32=INTERPRETED or q.dtype == torch.float32)


def _scalars(grid, radii, scale):
    return (*_radii(grid, radii), scale * LOG2E)


def _forward(q, k, v, grid, radii, causal, prefix, scale, block_m, block_n, box):
    """(out, lse, visits per (batch*head, query tile)) with q, k, v in token order."""
    plan = _plan(q, grid, radii, causal, prefix, block_m, block_n, box)
    q, k, v = (_to_slots(x, plan) for x in (q, k, v))
    bsz, nh, n, d = q.shape
    out = torch.empty_like(q)
    lse = torch.empty(bsz, nh, n, device=q.device, dtype=torch.float32)
    launch = (n // block_m, bsz * nh)
    visits = torch.empty(launch[0] * launch[1], device=q.device, dtype=torch.int32)
    _fwd_kernel[launch](q, k, v, out, lse, visits, plan.layout.coords, *_lists(plan.forward), n,
                        triton.next_power_of_2(n), *_scalars(grid, radii, scale), d,
                        **_meta(q, causal, prefix, block_m, block_n))
    return _from_slots(out, plan), _from_slots(lse[..., None], plan)[..., 0], visits.view(bsz * nh, -1)


@torch.library.custom_op("vidgen::attention3d_fwd", mutates_args=())
def attention3d_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: List[int], radii: List[int],
                    causal: bool, num_prefix_tokens: int, scale: float, block_m: int, block_n: int, box: List[int]
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fused forward: (out (B, h, N, D), log-sum-exp (B, h, N) fp32). ``radii[i] = -1`` means unlimited; ``box``:
    the layout's box, [] for raster order, [0] for the one tiles.choose_box picks."""
    out, lse, _ = _forward(q, k, v, grid, radii, causal, num_prefix_tokens, scale, block_m, block_n, box)
    return out.contiguous(), lse.contiguous()


@attention3d_fwd.register_fake
def _(q, k, v, grid, radii, causal, num_prefix_tokens, scale, block_m, block_n, box):
    return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("vidgen::attention3d_bwd", mutates_args=())
def attention3d_bwd(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                    lse: torch.Tensor, grid: List[int], radii: List[int], causal: bool, num_prefix_tokens: int,
                    scale: float, block_m: int, block_n: int, box: List[int]
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused backward: (dq, dk, dv). dK/dV and dQ are separate kernels, so there are no atomics."""
    plan = _plan(q, grid, radii, causal, num_prefix_tokens, block_m, block_n, box)
    delta = (grad_out.float() * out.float()).sum(-1)  # (B, h, N): rowsum(dO * O) of FlashAttention-2
    q, k, v, grad_out = (_to_slots(x, plan) for x in (q, k, v, grad_out))
    lse, delta = (_to_slots(x[..., None], plan)[..., 0].contiguous() for x in (lse, delta))
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    bsz, nh, n, d = q.shape
    block = plan.backward_block
    args = (n, triton.next_power_of_2(n), *_scalars(grid, radii, scale), scale, d)
    meta = _meta(q, causal, num_prefix_tokens, block, block)
    _bwd_kv_kernel[(n // block, bsz * nh)](q, k, v, grad_out, lse, delta, dk, dv, plan.layout.coords,
                                           *_lists(plan.backward_kv), *args, **meta)
    _bwd_q_kernel[(n // block, bsz * nh)](q, k, v, grad_out, lse, delta, dq, plan.layout.coords,
                                          *_lists(plan.backward_q), *args, **meta)
    return tuple(_from_slots(x, plan).contiguous() for x in (dq, dk, dv))


@attention3d_bwd.register_fake
def _(grad_out, q, k, v, out, lse, grid, radii, causal, num_prefix_tokens, scale, block_m, block_n, box):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, *config = inputs
    ctx.save_for_backward(q, k, v, output[0], output[1])
    ctx.config = config


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = attention3d_bwd(grad_out, q, k, v, out, lse, *ctx.config)
    return (dq, dk, dv) + (None,) * len(ctx.config)


attention3d_fwd.register_autograd(_backward, setup_context=_setup_context)


def unsupported_reason(q: torch.Tensor, pattern: AttentionPattern) -> Optional[str]:
    if pattern.token_causal:
        return TRITON_TOKEN_CAUSAL_REASON
    if q.device.type == "cpu" and not INTERPRETED:
        return TRITON_CPU_REASON
    if q.device.type not in ("cuda", "cpu"):
        return f"the triton backend does not run on device {q.device}"
    if q.dtype not in SUPPORTED_DTYPES:
        return f"the triton backend supports float32/float16/bfloat16, got {q.dtype}"
    if q.shape[3] > MAX_HEAD_DIM:
        return f"the triton backend supports head dim <= {MAX_HEAD_DIM}, got {q.shape[3]}"
    return None


def _op_args(pattern: AttentionPattern, q: torch.Tensor, scale: Optional[float], block_m, block_n, layout="auto"):
    """The custom op's arguments after q, k, v. ``layout``: "auto" (the box tiles.choose_box picks), "raster", or a
    (bt, bh, bw) box of max(block_m, block_n) tokens."""
    radii = [-1 if r is None else r for r in pattern.radii]
    scale = q.shape[3] ** -0.5 if scale is None else float(scale)
    block_m, block_n = block_m or BLOCK_M, block_n or BLOCK_N
    box = [0] if layout == "auto" else ([] if layout == "raster" else list(layout))
    return list(pattern.grid), radii, pattern.causal, pattern.num_prefix_tokens, scale, block_m, block_n, box


def triton_attention3d(q, k, v, pattern: AttentionPattern, scale: Optional[float] = None,
                       block_m: Optional[int] = None, block_n: Optional[int] = None, layout="auto") -> torch.Tensor:
    """q, k, v: (B, heads, N, D) -> (B, heads, N, D), differentiable through the fused backward kernels."""
    return attention3d_fwd(q, k, v, *_op_args(pattern, q, scale, block_m, block_n, layout))[0]


def kernel_tile_visits(q, k, v, pattern: AttentionPattern, block_m: Optional[int] = None,
                       block_n: Optional[int] = None, layout="auto") -> torch.Tensor:
    """Number of key tiles the forward kernel actually processed, per (batch*head, query tile of the layout)."""
    return _forward(q, k, v, *_op_args(pattern, q, None, block_m, block_n, layout))[2]
