"""Fused flash-attention-style Triton kernels for 3D attention patterns (forward, dK/dV and dQ backward).

Each program owns one tile of queries (forward, dQ) or keys (dK/dV). It loops only over the other side's
tiles that can interact: prefix tiles plus the flat range covering the frames within the temporal window
(so temporal skipping costs nothing), and tests each of those with a conservative (t, h, w) bounding-box
check before touching memory. Inside a tile the exact mask is recomputed from token indices. Online softmax
in fp32; the backward recomputes probabilities from the saved log-sum-exp (FlashAttention-2), with separate
dK/dV and dQ kernels so no atomics are needed and results are deterministic.

Runs on CUDA tensors, or on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1`` set before triton
is first imported). The interpreter mis-computes bf16 ``tl.dot``, so there we upcast to fp32 first.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from vidgen.attention.reasons import TRITON_CPU_REASON, TRITON_TOKEN_CAUSAL_REASON
from vidgen.attention.masks import AttentionPattern

INTERPRETED = False  # set below, after the kernels are defined
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256


@triton.jit
def _dot(a, b):
    # "ieee": fp32 inputs stay exact on GPUs (the default tf32 would miss the 1e-5 fp32 tolerance); fp16/bf16
    # inputs are unaffected by it.
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _span(lo, hi, P, HW, W, H):
    """Conservative (t, h, w) bounding box of the video tokens among flat indices lo..hi (inclusive)."""
    a = tl.maximum(lo, P) - P
    b = hi - P
    ta = a // HW
    tb = b // HW
    same_t = ta == tb
    ha = tl.where(same_t, (a % HW) // W, 0)
    hb = tl.where(same_t, (b % HW) // W, H - 1)
    same_row = (a // W) == (b // W)
    wa = tl.where(same_row, a % W, 0)
    wb = tl.where(same_row, b % W, W - 1)
    return ta, tb, ha, hb, wa, wb


@triton.jit
def _tiles_interact(q_lo, q_hi, k_lo, k_hi, P, HW, W, H, RT, RH, RW, CAUSAL: tl.constexpr):
    """False only if no query in q_lo..q_hi may attend any key in k_lo..k_hi (tile skipping)."""
    qta, qtb, qha, qhb, qwa, qwb = _span(q_lo, q_hi, P, HW, W, H)
    kta, ktb, kha, khb, kwa, kwb = _span(k_lo, k_hi, P, HW, W, H)
    k_video = k_hi >= P
    ok = (q_hi >= P) & k_video
    ok = ok & (kta <= qtb + RT) & (ktb >= qta - RT)
    ok = ok & (kha <= qhb + RH) & (khb >= qha - RH)
    ok = ok & (kwa <= qwb + RW) & (kwb >= qwa - RW)
    extra = k_lo < P  # every query attends prefix keys
    if CAUSAL:
        ok = ok & (kta <= qtb)
    else:
        extra = extra | ((q_lo < P) & k_video)  # prefix queries attend everything
    return ok | extra


@triton.jit
def _mask(offs_q, offs_k, N, P, HW, W, RT, RH, RW, CAUSAL: tl.constexpr):
    """Exact (BLOCK_M, BLOCK_N) mask of the pattern from token indices (see vidgen.attention.masks)."""
    qi = offs_q[:, None]
    kj = offs_k[None, :]
    qv = tl.maximum(qi - P, 0)
    kv = tl.maximum(kj - P, 0)
    ok = tl.abs(qv // HW - kv // HW) <= RT
    ok = ok & (tl.abs((qv % HW) // W - (kv % HW) // W) <= RH)
    ok = ok & (tl.abs(qv % W - kv % W) <= RW)
    if CAUSAL:
        ok = ok & (kv // HW <= qv // HW) & (qi >= P)
    else:
        ok = ok | (qi < P)
    ok = ok | (kj < P)
    return ok & (qi < N) & (kj < N)


@triton.jit
def _frame_tile_range(lo, hi, P, T, HW, R_BEFORE, R_AFTER, BLOCK: tl.constexpr):
    """Tiles of BLOCK flat indices holding the frames [t(lo) - R_BEFORE, t(hi) + R_AFTER] (video part only)."""
    has_video = hi >= P
    fa = tl.maximum((tl.maximum(lo, P) - P) // HW - R_BEFORE, 0)
    fb = tl.minimum((tl.maximum(hi, P) - P) // HW + R_AFTER, T - 1)
    start = (P + fa * HW) // BLOCK
    end = (P + (fb + 1) * HW - 1) // BLOCK + 1
    return tl.where(has_video, start, 0), tl.where(has_video, end, 0)


@triton.jit
def _load_tile(ptr, base, offs, offs_d, N, D, DOT_FP32: tl.constexpr):
    x = tl.load(ptr + base + offs[:, None] * D + offs_d[None, :],
                mask=(offs[:, None] < N) & (offs_d[None, :] < D), other=0.0)
    if DOT_FP32:
        x = x.to(tl.float32)
    return x


@triton.jit
def _fwd_tile(acc, m_i, l_i, q, K, V, base, offs_m, offs_d, k_lo, N, P, HW, W, RT, RH, RW, scale, D,
              CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, DOT_FP32: tl.constexpr):
    """One online-softmax step of a query tile against the key tile starting at k_lo."""
    offs_n = k_lo + tl.arange(0, BLOCK_N)
    k = _load_tile(K, base, offs_n, offs_d, N, D, DOT_FP32)
    v = _load_tile(V, base, offs_n, offs_d, N, D, DOT_FP32)
    allowed = _mask(offs_m, offs_n, N, P, HW, W, RT, RH, RW, CAUSAL)
    s = tl.where(allowed, _dot(q, tl.trans(k)) * scale, -1.0e30)
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp(m_i - m_new)
    p = tl.where(allowed, tl.exp(s - m_new[:, None]), 0.0)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit
def _query_tile_key_range(q_lo, q_hi, N, P, T, HW, RT, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key tiles (beyond the prefix tiles) that queries q_lo..q_hi may reach along t."""
    if CAUSAL:
        start, end = _frame_tile_range(q_lo, q_hi, P, T, HW, RT, 0, BLOCK_N)
    else:
        start, end = _frame_tile_range(q_lo, q_hi, P, T, HW, RT, RT, BLOCK_N)
        start = tl.where(q_lo < P, 0, start)  # prefix queries attend every key
        end = tl.where(q_lo < P, tl.cdiv(N, BLOCK_N), end)
    return tl.maximum(start, tl.cdiv(P, BLOCK_N)), end


@triton.jit
def _program_tile(N, D, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's tile along the sequence (axis 0 of the launch grid) and its (batch*head) offsets (axis 1):
    (first row, hi = last valid row, row offsets, column offsets, element base, row base)."""
    pid_bh = tl.program_id(1)
    lo = tl.program_id(0) * BLOCK
    hi = tl.minimum(lo + BLOCK, N) - 1
    base = pid_bh.to(tl.int64) * N * D
    row_base = pid_bh.to(tl.int64) * N
    return lo, hi, lo + tl.arange(0, BLOCK), tl.arange(0, BLOCK_D), base, row_base


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, VISITS, N, P, T, H, W, RT, RH, RW, scale, D,
                CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                DOT_FP32: tl.constexpr):
    HW = H * W
    q_lo, q_hi, offs_m, offs_d, base, row_base = _program_tile(N, D, BLOCK_M, BLOCK_D)
    q = _load_tile(Q, base, offs_m, offs_d, N, D, DOT_FP32)
    # Finite "minus infinity" so that rows with nothing allowed yet never produce inf - inf = NaN.
    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - 1.0e30
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    visits = tl.zeros([], dtype=tl.int32)
    for j in range(0, tl.cdiv(P, BLOCK_N)):  # prefix keys: every query attends them
        acc, m_i, l_i = _fwd_tile(acc, m_i, l_i, q, K, V, base, offs_m, offs_d, j * BLOCK_N, N, P, HW, W,
                                  RT, RH, RW, scale, D, CAUSAL, BLOCK_N, DOT_FP32)
        visits += 1
    start, end = _query_tile_key_range(q_lo, q_hi, N, P, T, HW, RT, CAUSAL, BLOCK_N)
    for j in range(start, end):
        k_lo = j * BLOCK_N
        if _tiles_interact(q_lo, q_hi, k_lo, tl.minimum(k_lo + BLOCK_N, N) - 1, P, HW, W, H, RT, RH, RW, CAUSAL):
            acc, m_i, l_i = _fwd_tile(acc, m_i, l_i, q, K, V, base, offs_m, offs_d, k_lo, N, P, HW, W,
                                      RT, RH, RW, scale, D, CAUSAL, BLOCK_N, DOT_FP32)
            visits += 1
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    out = acc / l_safe[:, None]
    row_ok = offs_m < N
    tl.store(O + base + offs_m[:, None] * D + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=row_ok[:, None] & (offs_d[None, :] < D))
    tl.store(LSE + row_base + offs_m, m_i + tl.log(l_safe), mask=row_ok)
    tl.store(VISITS + tl.program_id(1) * tl.num_programs(0) + tl.program_id(0), visits)


@triton.jit
def _probs(q, k, offs_m, offs_n, lse, N, P, HW, W, RT, RH, RW, scale, CAUSAL: tl.constexpr):
    """Recomputed softmax probabilities of a (query tile, key tile) pair from the saved log-sum-exp."""
    allowed = _mask(offs_m, offs_n, N, P, HW, W, RT, RH, RW, CAUSAL)
    return tl.where(allowed, tl.exp(_dot(q, tl.trans(k)) * scale - lse[:, None]), 0.0)


@triton.jit
def _load_query_rows(Q, DO, LSE, DELTA, base, row_base, offs_m, offs_d, N, D, DOT_FP32: tl.constexpr):
    """What the backward needs of a query tile: q, dO, and the saved log-sum-exp and rowsum(dO * O)."""
    q = _load_tile(Q, base, offs_m, offs_d, N, D, DOT_FP32)
    do = _load_tile(DO, base, offs_m, offs_d, N, D, DOT_FP32)
    lse = tl.load(LSE + row_base + offs_m, mask=offs_m < N, other=0.0)
    delta = tl.load(DELTA + row_base + offs_m, mask=offs_m < N, other=0.0)
    return q, do, lse, delta


@triton.jit
def _bwd_kv_tile(dk, dv, k, v, Q, DO, LSE, DELTA, base, row_base, offs_n, offs_d, q_lo, N, P, HW, W,
                 RT, RH, RW, scale, D, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, DOT_FP32: tl.constexpr):
    offs_m = q_lo + tl.arange(0, BLOCK_M)
    q, do, lse, delta = _load_query_rows(Q, DO, LSE, DELTA, base, row_base, offs_m, offs_d, N, D, DOT_FP32)
    p = _probs(q, k, offs_m, offs_n, lse, N, P, HW, W, RT, RH, RW, scale, CAUSAL)  # (BLOCK_M, BLOCK_N)
    dv += _dot(tl.trans(p.to(do.dtype)), do)
    ds = p * (_dot(do, tl.trans(v)) - delta[:, None])
    dk += _dot(tl.trans(ds.to(q.dtype)), q)
    return dk, dv


@triton.jit
def _bwd_kv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, N, P, T, H, W, RT, RH, RW, scale, D,
                   CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   DOT_FP32: tl.constexpr):
    """dK, dV of one key tile, looping over the query tiles that may attend it."""
    HW = H * W
    k_lo, k_hi, offs_n, offs_d, base, row_base = _program_tile(N, D, BLOCK_N, BLOCK_D)
    k = _load_tile(K, base, offs_n, offs_d, N, D, DOT_FP32)
    v = _load_tile(V, base, offs_n, offs_d, N, D, DOT_FP32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    if CAUSAL:  # queries at t >= t(key); prefix queries see only prefix keys
        start, end = _frame_tile_range(k_lo, k_hi, P, T, HW, 0, RT, BLOCK_M)
        prefix_tiles = tl.where(k_lo < P, tl.cdiv(P, BLOCK_M), 0)
    else:
        start, end = _frame_tile_range(k_lo, k_hi, P, T, HW, RT, RT, BLOCK_M)
        prefix_tiles = tl.cdiv(P, BLOCK_M)
    end = tl.where(k_lo < P, tl.cdiv(N, BLOCK_M), end)  # prefix keys are attended by every query
    start = tl.where(k_lo < P, 0, start)
    for i in range(0, prefix_tiles):
        dk, dv = _bwd_kv_tile(dk, dv, k, v, Q, DO, LSE, DELTA, base, row_base, offs_n, offs_d, i * BLOCK_M, N,
                              P, HW, W, RT, RH, RW, scale, D, CAUSAL, BLOCK_M, DOT_FP32)
    for i in range(tl.maximum(start, prefix_tiles), end):
        q_lo = i * BLOCK_M
        if _tiles_interact(q_lo, tl.minimum(q_lo + BLOCK_M, N) - 1, k_lo, k_hi, P, HW, W, H, RT, RH, RW, CAUSAL):
            dk, dv = _bwd_kv_tile(dk, dv, k, v, Q, DO, LSE, DELTA, base, row_base, offs_n, offs_d, q_lo, N,
                                  P, HW, W, RT, RH, RW, scale, D, CAUSAL, BLOCK_M, DOT_FP32)
    store_mask = (offs_n[:, None] < N) & (offs_d[None, :] < D)
    tl.store(DK + base + offs_n[:, None] * D + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty), mask=store_mask)
    tl.store(DV + base + offs_n[:, None] * D + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=store_mask)


@triton.jit
def _bwd_q_tile(dq, q, do, lse, delta, K, V, base, offs_m, offs_d, k_lo, N, P, HW, W, RT, RH, RW, scale, D,
                CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, DOT_FP32: tl.constexpr):
    offs_n = k_lo + tl.arange(0, BLOCK_N)
    k = _load_tile(K, base, offs_n, offs_d, N, D, DOT_FP32)
    v = _load_tile(V, base, offs_n, offs_d, N, D, DOT_FP32)
    p = _probs(q, k, offs_m, offs_n, lse, N, P, HW, W, RT, RH, RW, scale, CAUSAL)
    ds = p * (_dot(do, tl.trans(v)) - delta[:, None])
    return dq + _dot(ds.to(k.dtype), k)


@triton.jit
def _bwd_q_kernel(Q, K, V, DO, LSE, DELTA, DQ, N, P, T, H, W, RT, RH, RW, scale, D,
                  CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                  DOT_FP32: tl.constexpr):
    """dQ of one query tile, visiting the same key tiles as the forward pass."""
    HW = H * W
    q_lo, q_hi, offs_m, offs_d, base, row_base = _program_tile(N, D, BLOCK_M, BLOCK_D)
    q, do, lse, delta = _load_query_rows(Q, DO, LSE, DELTA, base, row_base, offs_m, offs_d, N, D, DOT_FP32)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for j in range(0, tl.cdiv(P, BLOCK_N)):
        dq = _bwd_q_tile(dq, q, do, lse, delta, K, V, base, offs_m, offs_d, j * BLOCK_N, N, P, HW, W,
                         RT, RH, RW, scale, D, CAUSAL, BLOCK_N, DOT_FP32)
    start, end = _query_tile_key_range(q_lo, q_hi, N, P, T, HW, RT, CAUSAL, BLOCK_N)
    for j in range(start, end):
        k_lo = j * BLOCK_N
        if _tiles_interact(q_lo, q_hi, k_lo, tl.minimum(k_lo + BLOCK_N, N) - 1, P, HW, W, H, RT, RH, RW, CAUSAL):
            dq = _bwd_q_tile(dq, q, do, lse, delta, K, V, base, offs_m, offs_d, k_lo, N, P, HW, W,
                             RT, RH, RW, scale, D, CAUSAL, BLOCK_N, DOT_FP32)
    tl.store(DQ + base + offs_m[:, None] * D + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=(offs_m[:, None] < N) & (offs_d[None, :] < D))


INTERPRETED = type(_fwd_kernel).__name__ == "InterpretedFunction"
BLOCK_M, BLOCK_N = (32, 32) if INTERPRETED else (64, 64)


def _radii(grid: List[int], radii: List[int]) -> List[int]:
    # -1 encodes "unlimited": any radius >= axis size - 1 is unlimited, so use the axis size itself.
    return [n if r < 0 else r for n, r in zip(grid, radii)]


def _common_args(q: torch.Tensor, grid: List[int], radii: List[int], num_prefix_tokens: int, scale: float):
    t, h, w = grid
    rt, rh, rw = _radii(grid, radii)
    return (q.shape[2], num_prefix_tokens, t, h, w, rt, rh, rw, scale, q.shape[3])


def _meta(q: torch.Tensor, causal: bool, block_m: int, block_n: int) -> dict:
    return dict(CAUSAL=causal, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(q.shape[3])),
                DOT_FP32=INTERPRETED or q.dtype == torch.float32)


def _forward(q, k, v, grid, radii, causal, num_prefix_tokens, scale, block_m, block_n):
    bsz, nh, n, _ = q.shape
    out = torch.empty_like(q)
    lse = torch.empty(bsz, nh, n, device=q.device, dtype=torch.float32)
    launch = (triton.cdiv(n, block_m), bsz * nh)
    visits = torch.empty(bsz * nh * launch[0], device=q.device, dtype=torch.int32)
    _fwd_kernel[launch](q, k, v, out, lse, visits, *_common_args(q, grid, radii, num_prefix_tokens, scale),
                        **_meta(q, causal, block_m, block_n))
    return out, lse, visits


@torch.library.custom_op("vidgen::attention3d_fwd", mutates_args=())
def attention3d_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: List[int], radii: List[int],
                    causal: bool, num_prefix_tokens: int, scale: float, block_m: int, block_n: int
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fused forward: (out (B, h, N, D), log-sum-exp (B, h, N) fp32). ``radii[i] = -1`` means unlimited."""
    out, lse, _ = _forward(q.contiguous(), k.contiguous(), v.contiguous(), grid, radii, causal,
                           num_prefix_tokens, scale, block_m, block_n)
    return out, lse


@attention3d_fwd.register_fake
def _(q, k, v, grid, radii, causal, num_prefix_tokens, scale, block_m, block_n):
    return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("vidgen::attention3d_bwd", mutates_args=())
def attention3d_bwd(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                    lse: torch.Tensor, grid: List[int], radii: List[int], causal: bool, num_prefix_tokens: int,
                    scale: float, block_m: int, block_n: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused backward: (dq, dk, dv). dK/dV and dQ are separate kernels, so there are no atomics."""
    q, k, v, grad_out = q.contiguous(), k.contiguous(), v.contiguous(), grad_out.contiguous()
    delta = (grad_out.float() * out.float()).sum(-1)  # (B, h, N): rowsum(dO * O) of FlashAttention-2
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    bsz, nh, n, _ = q.shape
    args = _common_args(q, grid, radii, num_prefix_tokens, scale)
    meta = _meta(q, causal, block_m, block_n)
    _bwd_kv_kernel[(triton.cdiv(n, block_n), bsz * nh)](q, k, v, grad_out, lse.contiguous(), delta, dk, dv,
                                                         *args, **meta)
    _bwd_q_kernel[(triton.cdiv(n, block_m), bsz * nh)](q, k, v, grad_out, lse.contiguous(), delta, dq, *args, **meta)
    return dq, dk, dv


@attention3d_bwd.register_fake
def _(grad_out, q, k, v, out, lse, grid, radii, causal, num_prefix_tokens, scale, block_m, block_n):
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


def _op_args(pattern: AttentionPattern, q: torch.Tensor, scale: Optional[float], block_m, block_n):
    radii = [-1 if r is None else r for r in pattern.radii]
    scale = q.shape[3] ** -0.5 if scale is None else float(scale)
    return (list(pattern.grid), radii, pattern.causal, pattern.num_prefix_tokens, scale,
            block_m or BLOCK_M, block_n or BLOCK_N)


def triton_attention3d(q, k, v, pattern: AttentionPattern, scale: Optional[float] = None,
                       block_m: Optional[int] = None, block_n: Optional[int] = None) -> torch.Tensor:
    """q, k, v: (B, heads, N, D) -> (B, heads, N, D), differentiable through the fused backward kernels."""
    return attention3d_fwd(q, k, v, *_op_args(pattern, q, scale, block_m, block_n))[0]


def kernel_tile_visits(q, k, v, pattern: AttentionPattern, block_m: Optional[int] = None,
                       block_n: Optional[int] = None) -> torch.Tensor:
    """Number of key tiles the forward kernel actually processed, per (batch*head, query tile)."""
    grid, radii, causal, prefix, scale, bm, bn = _op_args(pattern, q, None, block_m, block_n)
    _, _, visits = _forward(q.contiguous(), k.contiguous(), v.contiguous(), grid, radii, causal, prefix, scale, bm, bn)
    return visits.view(q.shape[0] * q.shape[1], -1)
