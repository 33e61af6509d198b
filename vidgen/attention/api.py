"""``attention3d``: one entry point for full / spatial / temporal / windowed / frame-causal video attention."""
from __future__ import annotations

import math
import os
import sys
from typing import Dict, Optional

import torch

from vidgen.attention import cpu_blocked, flex, reference
from vidgen.attention.masks import AttentionPattern, Window, make_pattern
from vidgen.errors import InvalidInputError, UnsupportedError

BACKENDS = ("reference", "cpu", "flex", "triton")
# auto uses the blocked path only when it skips enough work to pay for its gathers: measured break-even
# on 2 CPU threads is about 2k tokens and a quarter of the dense work (see eval/bench_attention.py).
BLOCKED_MIN_TOKENS = 2048
BLOCKED_MAX_WORK_FRACTION = 0.25


TRITON_CPU_REASON = ("the triton backend needs CUDA tensors; on CPU it runs only under the Triton interpreter "
                     "(set TRITON_INTERPRET=1 before triton is first imported in the process; slow, for tests)")


def _triton_reason(q, k, v, pattern) -> Optional[str]:
    # Importing the kernel module decorates its kernels for good: on CPU without the interpreter it must not
    # happen as a side effect of a support query, or a later TRITON_INTERPRET=1 could no longer take effect.
    # (Checked in this order so torch.compile does not guard on sys.modules, which the import below changes.)
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


_REASONS = {
    "reference": lambda q, k, v, p: reference.unsupported_reason(q, p),
    "cpu": lambda q, k, v, p: cpu_blocked.unsupported_reason(q, p),
    "flex": flex.unsupported_reason,
    "triton": _triton_reason,
}
_RUN = {
    "reference": reference.reference_attention,
    "cpu": cpu_blocked.blocked_attention,
    "flex": flex.flex_attention3d,
    "triton": _run_triton,
}


def _check_inputs(q, k, v, pattern: AttentionPattern, scale) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise InvalidInputError(f"{name} must have shape (B, heads, N, D), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise InvalidInputError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if not (q.shape == k.shape == v.shape):
        raise InvalidInputError(
            f"q, k, v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise InvalidInputError(f"q, k, v must share dtype and device, got {q.dtype}/{k.dtype}/{v.dtype} "
                                f"on {q.device}/{k.device}/{v.device}")
    n = q.shape[2]
    if n != pattern.num_tokens:
        t, h, w = pattern.grid
        raise InvalidInputError(f"q has N={n} tokens but num_prefix_tokens + T*H*W = {pattern.num_prefix_tokens} + "
                                f"{t}*{h}*{w} = {pattern.num_tokens}")
    if q.shape[0] == 0 or q.shape[1] == 0 or q.shape[3] == 0:
        raise InvalidInputError(f"q must have non-empty batch, heads and head dim, got {tuple(q.shape)}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale) or scale <= 0):
        raise InvalidInputError(f"scale must be None or a positive finite number, got {scale!r}")


def backend_support(q, k, v, grid, window: Window = None, causal: bool = False,
                    num_prefix_tokens: int = 0) -> Dict[str, Optional[str]]:
    """For each backend, ``None`` if it can run these inputs, else the reason it cannot."""
    pattern = make_pattern(grid, window, causal, num_prefix_tokens)
    _check_inputs(q, k, v, pattern, None)
    return {name: _REASONS[name](q, k, v, pattern) for name in BACKENDS}


def choose_backend(q, k, v, pattern: AttentionPattern) -> str:
    """The fastest backend that supports the inputs (heuristic, measured with eval/bench_attention.py)."""
    if pattern.is_full:
        return "reference"  # plain SDPA without a mask: nothing to skip
    if q.device.type == "cuda" and _triton_reason(q, k, v, pattern) is None:
        return "triton"
    n = pattern.num_tokens
    blocked = cpu_blocked.blocked_work(pattern)
    if n >= BLOCKED_MIN_TOKENS and blocked <= BLOCKED_MAX_WORK_FRACTION * n * n:
        return "cpu"
    return "reference"


def attention3d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid, window: Window = None,
                causal: bool = False, num_prefix_tokens: int = 0, scale: Optional[float] = None,
                backend: str = "auto") -> torch.Tensor:
    """Attention over prefix tokens + a (T, H, W) video token grid.

    q, k, v: (B, heads, N, D) with ``N = num_prefix_tokens + T*H*W``, video tokens in (t, h, w) row-major order.
    ``window=(wt, wh, ww)``: a video query sees video keys with ``|dt| <= wt//2``, ``|dh| <= wh//2``,
    ``|dw| <= ww//2`` (``None`` entry = unlimited axis, ``window=None`` = full); ``causal`` adds ``t' <= t``.
    See :mod:`vidgen.attention.masks` for the exact semantics (prefix tokens included).
    ``backend``: "auto", "reference", "cpu", "flex" or "triton". Returns (B, heads, N, D).
    """
    pattern = make_pattern(grid, window, causal, num_prefix_tokens)
    _check_inputs(q, k, v, pattern, scale)
    if backend == "auto":
        backend = choose_backend(q, k, v, pattern)
    elif backend not in BACKENDS:
        raise InvalidInputError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    else:
        reason = _REASONS[backend](q, k, v, pattern)
        if reason is not None:
            raise UnsupportedError(f"attention3d backend {backend!r} cannot run this call: {reason}")
    return _RUN[backend](q, k, v, pattern, scale)
