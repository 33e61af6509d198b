"""The Triton kernels of :mod:`vidgen.attention.triton_kernel`: forward, dK/dV and dQ, over a precomputed layout.

Each program owns one tile of queries (forward, dQ) or keys (dK/dV) and walks two lists of the other side's tiles:
*full* tiles, every pair allowed, with no mask at all, then *partial* tiles, where the exact mask is rebuilt per
pair of slots. ``C`` holds what the mask is rebuilt from: with ``PACKED`` one code per slot
(:mod:`vidgen.attention.mask_codes`, five integer operations a pair), otherwise the slots' (t, h, w) coordinates
(``C`` of shape (3, slots), eleven). Online softmax in fp32 with exp2 (FlashAttention-2); the backward recomputes
probabilities from the saved log-sum-exp, with separate dK/dV and dQ kernels, so there are no atomics.

The mask arguments: ``RT, RH, RW`` the radii (coordinates); ``OFF_A, OFF_B, PREFIX_CODE, VIDEO_END`` the codes'
offsets and markers (packed). Only the set the ``PACKED`` variant reads matters.
"""
from __future__ import annotations

import inspect
import os

import triton
import triton.language as tl

from vidgen.attention import tiles
from vidgen.attention.mask_codes import GUARD as _GUARD

INTERPRET_ENV = os.environ.get("TRITON_INTERPRET") == "1"
GUARD = tl.constexpr(_GUARD)
PREFIX_T = tl.constexpr(tiles.PREFIX_T)  # the layout's sentinel t of prefix and padding slots
PAD_T = tl.constexpr(tiles.PAD_T)
TUNE_KEY = ["N_BUCKET", "D", "BLOCK_M", "BLOCK_N", "CAUSAL", "HAS_PREFIX", "PACKED"]


def _autotune(configs):
    """warps x stages tuned on the GPU per (head dim, tiles, dtype, mask variant, power-of-two bucket of the sequence
    length: not per length, or every new grid would pay a tuning), with Triton's on-disk cache of the choice where
    it has one. One config (the first) under the interpreter, or with ``VIDGEN_TRITON_AUTOTUNE=0``, which the GPU
    test runs set: their many small grids would each pay a tuning, and correctness does not depend on it."""
    if INTERPRET_ENV or os.environ.get("VIDGEN_TRITON_AUTOTUNE") == "0":
        configs = configs[:1]
    kwargs = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}
    return triton.autotune([triton.Config({}, num_warps=w, num_stages=s) for w, s in configs], key=TUNE_KEY,
                           **kwargs)


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
def _slot_keys(C, L, offs, PACKED: tl.constexpr):
    """What the mask needs of some slots: (code, code, code) packed, else (t, h, w)."""
    if PACKED:
        c0 = tl.load(C + offs)
        c1 = c0
        c2 = c0
    else:
        c0, c1, c2 = tl.load(C + offs), tl.load(C + L + offs), tl.load(C + 2 * L + offs)
    return c0, c1, c2


@triton.jit
def _key_tile(INDEX, K, V, base, offs_d, D, BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, DOT_FP32: tl.constexpr):
    """(slots, k, v) of the key tile whose number INDEX points to."""
    offs_n = tl.load(INDEX) * BLOCK_N + tl.arange(0, BLOCK_N)
    return offs_n, _rows(K, base, offs_n, offs_d, D, EVEN_D, DOT_FP32), _rows(V, base, offs_n, offs_d, D, EVEN_D,
                                                                              DOT_FP32)


@triton.jit
def _allowed(q0, q1, q2, k0, k1, k2, RT, RH, RW, OFF_A, OFF_B, PREFIX_CODE, VIDEO_END, CAUSAL: tl.constexpr,
             HAS_PREFIX: tl.constexpr, PACKED: tl.constexpr):
    """Exact mask of a (query slots (M, 1), key slots (1, N)) tile from :func:`_slot_keys` of both sides."""
    if PACKED:
        d = q0 - k0
        ok = ((d + OFF_A) & (OFF_B - d) & GUARD) == GUARD
        if HAS_PREFIX:
            ok = ok | (k0 == PREFIX_CODE)  # every query attends the prefix
            if not CAUSAL:  # prefix queries attend every real key
                ok = ok | ((q0 == PREFIX_CODE) & (k0 < VIDEO_END))
    else:
        dt = q0 - k0
        ok = (tl.abs(dt) <= RT) & (tl.abs(q1 - k1) <= RH) & (tl.abs(q2 - k2) <= RW)
        if CAUSAL:
            ok = ok & (dt >= 0)
        if HAS_PREFIX:
            ok = ok | (k0 == PREFIX_T)
            if not CAUSAL:
                ok = ok | ((q0 == PREFIX_T) & (k0 >= 0) & (k0 < PAD_T))
    return ok


@triton.jit
def _fwd_loop(acc, m_i, l_i, q, K, V, C, L, base, q0, q1, q2, offs_d, COUNT, INDEX, RT, RH, RW, OFF_A, OFF_B,
              PREFIX_CODE, VIDEO_END, qk_scale, D, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
              HAS_PREFIX: tl.constexpr, PACKED: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr,
              DOT_FP32: tl.constexpr):
    """Online-softmax steps of a query tile over the key tiles INDEX[0:COUNT] (scores in log2 units). Masked
    scores are -inf while the running max starts at a finite -1e30, so exp2 gives them exactly 0."""
    for i in range(0, COUNT):
        offs_n, k, v = _key_tile(INDEX + i, K, V, base, offs_d, D, BLOCK_N, EVEN_D, DOT_FP32)
        s = _dot(q, tl.trans(k)) * qk_scale
        if MASKED:
            k0, k1, k2 = _slot_keys(C, L, offs_n, PACKED)
            allowed = _allowed(q0, q1, q2, k0[None, :], k1[None, :], k2[None, :], RT, RH, RW, OFF_A, OFF_B,
                               PREFIX_CODE, VIDEO_END, CAUSAL, HAS_PREFIX, PACKED)
            s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
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
def fwd_kernel(Q, K, V, O, LSE, VISITS, C, FULL_N, FULL_I, PART_N, PART_I, FULL_W, PART_W, N, N_BUCKET, RT, RH, RW,
               OFF_A, OFF_B, PREFIX_CODE, VIDEO_END, qk_scale, D, CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr,
               PACKED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
               EVEN_D: tl.constexpr, DOT_FP32: tl.constexpr):
    tile, offs_m, base = _program(BLOCK_M, N, D)
    offs_d = tl.arange(0, BLOCK_D)
    q = _rows(Q, base, offs_m, offs_d, D, EVEN_D, DOT_FP32)
    q0, q1, q2 = _slot_keys(C, N, offs_m, PACKED)
    q0, q1, q2 = q0[:, None], q1[:, None], q2[:, None]
    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - 1.0e30  # finite: exp2(m_i - m_new) is never NaN
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    n_full, n_part = tl.load(FULL_N + tile), tl.load(PART_N + tile)
    acc, m_i, l_i = _fwd_loop(acc, m_i, l_i, q, K, V, C, N, base, q0, q1, q2, offs_d, n_full, FULL_I + tile * FULL_W,
                              RT, RH, RW, OFF_A, OFF_B, PREFIX_CODE, VIDEO_END, qk_scale, D, False, CAUSAL,
                              HAS_PREFIX, PACKED, BLOCK_N, EVEN_D, DOT_FP32)
    acc, m_i, l_i = _fwd_loop(acc, m_i, l_i, q, K, V, C, N, base, q0, q1, q2, offs_d, n_part, PART_I + tile * PART_W,
                              RT, RH, RW, OFF_A, OFF_B, PREFIX_CODE, VIDEO_END, qk_scale, D, True, CAUSAL,
                              HAS_PREFIX, PACKED, BLOCK_N, EVEN_D, DOT_FP32)
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
def _bwd_pair(q, k, v, do, lse2, delta, offs_m, offs_n, C, L, RT, RH, RW, OFF_A, OFF_B, PREFIX_CODE, VIDEO_END,
              qk_scale, MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr, PACKED: tl.constexpr):
    """(p, ds) of a (query tile, key tile) pair: probabilities recomputed from the log-sum-exp (log2 units)."""
    p = tl.exp2(_dot(q, tl.trans(k)) * qk_scale - lse2[:, None])
    if MASKED:
        q0, q1, q2 = _slot_keys(C, L, offs_m, PACKED)
        k0, k1, k2 = _slot_keys(C, L, offs_n, PACKED)
        allowed = _allowed(q0[:, None], q1[:, None], q2[:, None], k0[None, :], k1[None, :], k2[None, :], RT, RH, RW,
                           OFF_A, OFF_B, PREFIX_CODE, VIDEO_END, CAUSAL, HAS_PREFIX, PACKED)
        p = tl.where(allowed, p, 0.0)
    return p, p * (_dot(do, tl.trans(v)) - delta[:, None])


@triton.jit
def _query_rows(Q, DO, LSE, DELTA, base, row_base, offs_m, offs_d, D, EVEN_D: tl.constexpr, DOT_FP32: tl.constexpr):
    """What the backward needs of a query tile: q, dO, the log-sum-exp in log2 units and rowsum(dO * O)."""
    q = _rows(Q, base, offs_m, offs_d, D, EVEN_D, DOT_FP32)
    do = _rows(DO, base, offs_m, offs_d, D, EVEN_D, DOT_FP32)
    return q, do, tl.load(LSE + row_base + offs_m) * 1.4426950408889634, tl.load(DELTA + row_base + offs_m)


@triton.jit
def _kv_loop(dk, dv, k, v, Q, DO, LSE, DELTA, C, L, base, row_base, offs_n, offs_d, COUNT, INDEX, RT, RH, RW, OFF_A,
             OFF_B, PREFIX_CODE, VIDEO_END, qk_scale, D, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
             HAS_PREFIX: tl.constexpr, PACKED: tl.constexpr, BLOCK_M: tl.constexpr, EVEN_D: tl.constexpr,
             DOT_FP32: tl.constexpr):
    for i in range(0, COUNT):
        offs_m = tl.load(INDEX + i) * BLOCK_M + tl.arange(0, BLOCK_M)
        q, do, lse2, delta = _query_rows(Q, DO, LSE, DELTA, base, row_base, offs_m, offs_d, D, EVEN_D, DOT_FP32)
        p, ds = _bwd_pair(q, k, v, do, lse2, delta, offs_m, offs_n, C, L, RT, RH, RW, OFF_A, OFF_B, PREFIX_CODE,
                          VIDEO_END, qk_scale, MASKED, CAUSAL, HAS_PREFIX, PACKED)
        dv += _dot(tl.trans(p.to(do.dtype)), do)
        dk += _dot(tl.trans(ds.to(q.dtype)), q)
    return dk, dv


@_autotune([(4, 2), (8, 2), (4, 3)])
@triton.jit
def bwd_kv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, C, FULL_N, FULL_I, PART_N, PART_I, FULL_W, PART_W, N, N_BUCKET,
                  RT, RH, RW, OFF_A, OFF_B, PREFIX_CODE, VIDEO_END, qk_scale, scale, D, CAUSAL: tl.constexpr,
                  HAS_PREFIX: tl.constexpr, PACKED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr, DOT_FP32: tl.constexpr):
    """dK, dV of one key tile, over the query tiles that attend it."""
    tile, offs_n, base = _program(BLOCK_N, N, D)
    offs_d = tl.arange(0, BLOCK_D)
    row_base = tl.program_id(1).to(tl.int64) * N
    k = _rows(K, base, offs_n, offs_d, D, EVEN_D, DOT_FP32)
    v = _rows(V, base, offs_n, offs_d, D, EVEN_D, DOT_FP32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dk, dv = _kv_loop(dk, dv, k, v, Q, DO, LSE, DELTA, C, N, base, row_base, offs_n, offs_d, tl.load(FULL_N + tile),
                      FULL_I + tile * FULL_W, RT, RH, RW, OFF_A, OFF_B, PREFIX_CODE, VIDEO_END, qk_scale, D, False,
                      CAUSAL, HAS_PREFIX, PACKED, BLOCK_M, EVEN_D, DOT_FP32)
    dk, dv = _kv_loop(dk, dv, k, v, Q, DO, LSE, DELTA, C, N, base, row_base, offs_n, offs_d, tl.load(PART_N + tile),
                      PART_I + tile * PART_W, RT, RH, RW, OFF_A, OFF_B, PREFIX_CODE, VIDEO_END, qk_scale, D, True,
                      CAUSAL, HAS_PREFIX, PACKED, BLOCK_M, EVEN_D, DOT_FP32)
    ptrs = offs_n[:, None] * D + offs_d[None, :]
    dk, dv = (dk * scale).to(DK.dtype.element_ty), dv.to(DV.dtype.element_ty)
    if EVEN_D:
        tl.store(DK + base + ptrs, dk)
        tl.store(DV + base + ptrs, dv)
    else:
        tl.store(DK + base + ptrs, dk, mask=offs_d[None, :] < D)
        tl.store(DV + base + ptrs, dv, mask=offs_d[None, :] < D)


@triton.jit
def _q_loop(dq, q, do, lse2, delta, K, V, C, L, base, offs_m, offs_d, COUNT, INDEX, RT, RH, RW, OFF_A, OFF_B,
            PREFIX_CODE, VIDEO_END, qk_scale, D, MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr,
            PACKED: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, DOT_FP32: tl.constexpr):
    for i in range(0, COUNT):
        offs_n, k, v = _key_tile(INDEX + i, K, V, base, offs_d, D, BLOCK_N, EVEN_D, DOT_FP32)
        _, ds = _bwd_pair(q, k, v, do, lse2, delta, offs_m, offs_n, C, L, RT, RH, RW, OFF_A, OFF_B, PREFIX_CODE,
                          VIDEO_END, qk_scale, MASKED, CAUSAL, HAS_PREFIX, PACKED)
        dq += _dot(ds.to(k.dtype), k)
    return dq


@_autotune([(4, 2), (8, 2), (4, 3)])
@triton.jit
def bwd_q_kernel(Q, K, V, DO, LSE, DELTA, DQ, C, FULL_N, FULL_I, PART_N, PART_I, FULL_W, PART_W, N, N_BUCKET,
                 RT, RH, RW, OFF_A, OFF_B, PREFIX_CODE, VIDEO_END, qk_scale, scale, D, CAUSAL: tl.constexpr,
                 HAS_PREFIX: tl.constexpr, PACKED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr, DOT_FP32: tl.constexpr):
    """dQ of one query tile, over the key tiles it attends."""
    tile, offs_m, base = _program(BLOCK_M, N, D)
    offs_d = tl.arange(0, BLOCK_D)
    row_base = tl.program_id(1).to(tl.int64) * N
    q, do, lse2, delta = _query_rows(Q, DO, LSE, DELTA, base, row_base, offs_m, offs_d, D, EVEN_D, DOT_FP32)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    dq = _q_loop(dq, q, do, lse2, delta, K, V, C, N, base, offs_m, offs_d, tl.load(FULL_N + tile),
                 FULL_I + tile * FULL_W, RT, RH, RW, OFF_A, OFF_B, PREFIX_CODE, VIDEO_END, qk_scale, D, False, CAUSAL,
                 HAS_PREFIX, PACKED, BLOCK_N, EVEN_D, DOT_FP32)
    dq = _q_loop(dq, q, do, lse2, delta, K, V, C, N, base, offs_m, offs_d, tl.load(PART_N + tile),
                 PART_I + tile * PART_W, RT, RH, RW, OFF_A, OFF_B, PREFIX_CODE, VIDEO_END, qk_scale, D, True, CAUSAL,
                 HAS_PREFIX, PACKED, BLOCK_N, EVEN_D, DOT_FP32)
    ptrs = DQ + base + offs_m[:, None] * D + offs_d[None, :]
    if EVEN_D:
        tl.store(ptrs, (dq * scale).to(DQ.dtype.element_ty))
    else:
        tl.store(ptrs, (dq * scale).to(DQ.dtype.element_ty), mask=offs_d[None, :] < D)
