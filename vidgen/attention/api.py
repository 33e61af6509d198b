"""``attention3d``: one entry point for full / spatial / temporal / windowed / frame- or token-causal video
attention, over the whole sequence or (decode, ``q_start``) over the newest queries against a KV cache."""
from __future__ import annotations

import functools
import math
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

from vidgen.attention import cpu_blocked, cpu_window, flex, reference
from vidgen.attention.masks import AttentionPattern, Causal, Window, decode_violation, make_pattern
from vidgen.attention.reasons import TRITON_CPU_REASON, TRITON_TOKEN_CAUSAL_REASON
from vidgen.errors import InvalidInputError, UnsupportedError

# auto leaves dense SDPA for the windowed paths only from BLOCKED_MIN_TOKENS tokens on, and only where the blocked
# path would compute at most a quarter of the dense work. BLOCKED_MIN_TOKENS is a chosen rule, not a measured
# break-even: docs/results/bench_attention.json (eval/bench_attention.py, grids from 512 tokens) has the fused kernel
# already faster than dense masked SDPA below it for a 3x7x7 window and the blocked path only at larger grids; below
# the rule, small calls keep one exact path (SDPA). tests/scripts/test_bench_attention.py checks that at every timed grid from
# the rule on, auto's call beats dense masked SDPA in fp32 and bf16.
BLOCKED_MIN_TOKENS = 2048
BLOCKED_MAX_WORK_FRACTION = 0.25
# ... and the fused window kernel instead (float32 or bfloat16, no prefix tokens) when the blocked path would compute at least
# this many times the allowed pairs: the kernel computes each allowed pair once but with vector dot products, ~3x
# less efficient per pair than the blocked path's GEMMs, so where blocks fetch little extra (spatial attention: none)
# the blocked path wins (eval/bench_attention.py, "other patterns").
FUSED_MIN_OVERFETCH = 3.0

TILE_REASON = ("tile-aligned windows (tile=) run on the reference, cpu, flex and triton backends; the fused CPU "
               "window kernel implements exact windows")
DECODE_REASON = ("decode calls (q_start given, fewer queries than keys) run only on the reference backend "
                 "(SDPA with the sliced mask); use backend='reference' or 'auto'")


def _triton_reason(q, k, v, pattern) -> Optional[str]:
    # Importing the kernel module decorates its kernels for good: on CPU without the interpreter it must not
    # happen as a side effect of a support query, or a later TRITON_INTERPRET=1 could no longer take effect.
    # (Checked in this order so torch.compile does not guard on sys.modules, which the import below changes.)
    if pattern.token_causal:
        return TRITON_TOKEN_CAUSAL_REASON
    if (q.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1"
            and "vidgen.attention.triton_kernel" not in sys.modules):
        return TRITON_CPU_REASON
    try:
        from vidgen.attention import triton_kernel
    except ImportError as err:
        return f"triton is not importable ({err})"
    return triton_kernel.unsupported_reason(q, pattern)


def _run_triton(q, k, v, pattern, scale):
    from vidgen.attention import triton_kernel

    return triton_kernel.triton_attention3d(q, k, v, pattern, scale)


@dataclass(frozen=True)
class Backend:
    """One ``attention3d`` backend. ``run(q, k, v, pattern, scale)`` computes a call; ``refusal(q, k, v, pattern)``
    is None when the backend can run it, else the reason it cannot; ``decode``: it also runs decode calls, as
    ``run(q, k, v, pattern, scale, q_start)``; ``tiles``: it runs tile-aligned windows (``tile=``)."""

    name: str
    run: Callable
    refusal: Callable
    decode: bool = False
    tiles: bool = False


def _from_q_and_pattern(reason: Callable) -> Callable:
    return lambda q, k, v, pattern: reason(q, pattern)


#: every backend, in the order ``backend_support`` lists them: adding a backend is one entry here
_BACKENDS = {b.name: b for b in (
    Backend("reference", reference.reference_attention, _from_q_and_pattern(reference.unsupported_reason),
            decode=True, tiles=True),
    Backend("cpu", cpu_blocked.blocked_attention, _from_q_and_pattern(cpu_blocked.unsupported_reason), tiles=True),
    Backend("cpu_fused", cpu_window.window_attention, _from_q_and_pattern(cpu_window.unsupported_reason)),
    Backend("flex", flex.flex_attention3d, flex.unsupported_reason, tiles=True),
    Backend("triton", _run_triton, _triton_reason, tiles=True),
)}
BACKENDS = tuple(_BACKENDS)


def _reason(name: str, q, k, v, pattern: AttentionPattern, q_start: Optional[int]) -> Optional[str]:
    backend = _BACKENDS[name]
    if q_start is not None and not backend.decode:
        return DECODE_REASON
    if pattern.tile is not None and not backend.tiles:
        return TILE_REASON
    return backend.refusal(q, k, v, pattern)


def _check_inputs(q, k, v, pattern: AttentionPattern, scale, q_start: Optional[int] = None) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise InvalidInputError(f"{name} must have shape (B, heads, N, D), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise InvalidInputError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if q_start is None and not (q.shape == k.shape == v.shape):
        raise InvalidInputError(
            f"q, k, v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q_start is not None and not (k.shape == v.shape and q.shape[:2] == k.shape[:2] and q.shape[3] == k.shape[3]):
        raise InvalidInputError(f"decode call (q_start given): k and v must have the same shape (B, heads, Lk, D) "
                                f"and share B, heads and D with q, got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                                f"v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise InvalidInputError(f"q, k, v must share dtype and device, got {q.dtype}/{k.dtype}/{v.dtype} "
                                f"on {q.device}/{k.device}/{v.device}")
    n = q.shape[2]
    if q_start is not None:
        check_decode_call(q_start, n, k.shape[2], pattern)
    elif n != pattern.num_tokens:
        t, h, w = pattern.grid
        raise InvalidInputError(f"q has N={n} tokens but num_prefix_tokens + T*H*W = {pattern.num_prefix_tokens} + "
                                f"{t}*{h}*{w} = {pattern.num_tokens}")
    if q.shape[0] == 0 or q.shape[1] == 0 or q.shape[2] == 0 or q.shape[3] == 0:
        raise InvalidInputError(f"q must have non-empty batch, heads, tokens and head dim, got {tuple(q.shape)}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale) or scale <= 0):
        raise InvalidInputError(f"scale must be None or a positive finite number, got {scale!r}")


def check_decode_call(q_start, lq: int, lk: int, pattern: AttentionPattern, name: str = "q_start") -> None:
    """Validate a decode call (``name``: the caller's name for ``q_start``). It must be exact: every key its
    ``Lq`` queries may attend is among the ``Lk = q_start + Lq`` keys given."""
    n = pattern.num_tokens
    if isinstance(q_start, bool) or not isinstance(q_start, int) or q_start < 0:
        raise InvalidInputError(f"{name} must be an int >= 0 for a decode call, got {q_start!r}")
    if lq < 1:
        raise InvalidInputError(f"a decode call needs at least one query token, got Lq={lq}")
    end = q_start + lq
    if end > n:
        raise InvalidInputError(f"{name} + Lq = {q_start} + {lq} = {end} exceeds the sequence length "
                                f"num_prefix_tokens + T*H*W = {n}")
    if lk != end:
        raise InvalidInputError(f"k, v must hold the Lk = q_start + Lq = {end} keys [0, {end}) of a decode call, "
                                f"got Lk={lk}")
    bad = decode_violation(pattern, q_start, end)
    if bad is not None:
        if bad[0] < pattern.num_prefix_tokens and pattern.causal:
            hint = f"prefix queries see the whole prefix, so the chunk must reach its end ({pattern.num_prefix_tokens})"
        elif pattern.causal:
            hint = "with causal='frame' a chunk must end on a frame boundary (or where no window reaches further)"
        else:
            hint = f"a non-causal pattern sees future keys: decode with causal='token' or 'frame', or pass all N={n}"
        raise InvalidInputError(f"{name}={q_start} with Lq={lq}: query position {bad[0]} may attend key position "
                                f"{bad[1]} >= Lk={end}, so the decode call would not be exact; {hint}")


def backend_support(q, k, v, grid, window: Window = None, causal: Causal = False, num_prefix_tokens: int = 0,
                    q_start: Optional[int] = None, tile=None) -> Dict[str, Optional[str]]:
    """For each backend, ``None`` if it can run these inputs, else the reason it cannot."""
    pattern = make_pattern(grid, window, causal, num_prefix_tokens, tile)
    q, k, v = _autocast(q, k, v)
    _check_inputs(q, k, v, pattern, None, q_start)
    q_start = _as_full_call(q, pattern, q_start)
    return {name: _reason(name, q, k, v, pattern, q_start) for name in BACKENDS}


def choose_backend(q, k, v, pattern: AttentionPattern, q_start: Optional[int] = None) -> str:
    """The fastest backend that supports the inputs (heuristic, measured with eval/bench_attention.py).
    Never one that refuses them: decode calls and token-causal patterns leave ``reference`` (or ``flex``)."""
    if pattern.is_full or q_start is not None:
        return "reference"  # plain SDPA without a mask, or the decode path (only the reference backend has it)
    tiled = pattern.tile is not None  # the fused CPU kernel takes exact windows only
    if q.device.type == "cuda" and _triton_reason(q, k, v, pattern) is None:
        return "triton"
    if tiled and q.device.type == "cuda" and flex.unsupported_reason(q, k, v, pattern) is None:
        return "flex"
    if pattern.num_tokens >= BLOCKED_MIN_TOKENS and cpu_blocked.unsupported_reason(q, pattern) is None:
        work_fraction, overfetch = _blocked_ratios(pattern)
        if work_fraction <= BLOCKED_MAX_WORK_FRACTION:
            return "cpu_fused" if not tiled and overfetch >= FUSED_MIN_OVERFETCH and \
                cpu_window.unsupported_reason(q, pattern) is None else "cpu"
    return "reference"


@functools.lru_cache(maxsize=256)  # auto runs for every layer and step; density() builds small tensors per axis
def _blocked_ratios(pattern: AttentionPattern) -> tuple[float, float]:
    """Pairs the blocked path computes, over all pairs and over the allowed pairs (its over-fetch)."""
    work, all_pairs = cpu_blocked.blocked_work(pattern), pattern.num_tokens ** 2
    return work / all_pairs, work / (pattern.density() * all_pairs)


def _as_full_call(q, pattern: AttentionPattern, q_start: Optional[int]) -> Optional[int]:
    """A "decode" call holding every query (q_start=0, Lq=N) is a plain full-sequence call: any backend."""
    return None if q_start == 0 and q.shape[2] == pattern.num_tokens else q_start


def _autocast(q, k, v):
    """Under ``torch.autocast`` float32 q, k, v are cast to the autocast dtype (bf16 on CPU), as autocast does for
    ``F.scaled_dot_product_attention``, so every backend computes in it and returns it; gradients flow back to the
    float32 tensors through the cast. Other dtypes pass through unchanged (autocast never casts float64)."""
    tensors = (q, k, v)
    if not all(isinstance(x, torch.Tensor) for x in tensors):
        return tensors  # _check_inputs names the bad argument
    device = q.device.type
    if device not in ("cpu", "cuda") or not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(x.to(dtype) if x.dtype == torch.float32 else x for x in tensors)


def attention3d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid, window: Window = None,
                causal: Causal = False, num_prefix_tokens: int = 0, scale: Optional[float] = None,
                backend: str = "auto", q_start: Optional[int] = None, tile=None) -> torch.Tensor:
    """Attention over prefix tokens + a (T, H, W) video token grid.

    q, k, v: (B, heads, N, D) with ``N = num_prefix_tokens + T*H*W``, video tokens in (t, h, w) row-major order.
    ``window=(wt, wh, ww)``: a video query sees video keys with ``|dt| <= wt//2``, ``|dh| <= wh//2``,
    ``|dw| <= ww//2`` (``None`` entry = unlimited axis, ``window=None`` = full). ``causal``: ``False``,
    ``True`` / ``"frame"`` (adds ``t' <= t``) or ``"token"`` (adds key index <= query index, GPT-style).
    ``tile=(tt, th, tw)``: tile-aligned windows, the window counted in tiles of that many tokens (STA): a tile of
    queries attends whole tiles of keys.
    See :mod:`vidgen.attention.masks` for the exact semantics (prefix tokens included).
    ``backend``: "auto" or one of ``BACKENDS`` ("reference", "cpu", ...). Returns (B, heads, N, D).

    Decode (``q_start`` an int, e.g. with a KV cache): q is (B, heads, Lq, D) holding sequence positions
    ``[q_start, q_start + Lq)``, k and v are (B, heads, Lk, D) holding positions ``[0, Lk)`` with
    ``Lk = q_start + Lq``; returns those rows of the full-sequence attention, (B, heads, Lq, D). Raises
    ``InvalidInputError`` unless that is exact, i.e. no query may attend a key ``>= Lk``: always true with
    ``causal="token"`` (once a chunk holding prefix queries reaches the end of the prefix); with
    ``causal="frame"`` when the chunk ends on a frame boundary (or a window keeps its queries from looking
    further). Only the reference backend runs decode calls; "auto" picks it.

    Precision: float32, bfloat16 (every backend; the fused CPU kernel stores bf16 and sums in float32), float16 and
    float64 where the backend supports them. Under ``torch.autocast`` float32 inputs run in the autocast dtype.
    """
    pattern = make_pattern(grid, window, causal, num_prefix_tokens, tile)
    q, k, v = _autocast(q, k, v)
    _check_inputs(q, k, v, pattern, scale, q_start)
    q_start = _as_full_call(q, pattern, q_start)
    if backend == "auto":
        backend = choose_backend(q, k, v, pattern, q_start)
    elif backend not in BACKENDS:
        raise InvalidInputError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    else:
        reason = _reason(backend, q, k, v, pattern, q_start)
        if reason is not None:
            raise UnsupportedError(f"attention3d backend {backend!r} cannot run this call: {reason}")
    run = _BACKENDS[backend].run
    return run(q, k, v, pattern, scale) if q_start is None else run(q, k, v, pattern, scale, q_start)
