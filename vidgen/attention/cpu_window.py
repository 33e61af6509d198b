"""Fused window attention on the CPU: a small C kernel (``window_kernel.c``) that reads each query's window of keys in
place from the token grid, forward and backward, instead of gathering block halos as the blocked path does.

Every (query, key) pair in the window is computed once, nothing is materialised but the output and one log-sum-exp
per query, and the backward recomputes the probabilities from it (flash-attention style; the key pass owns each
dk / dv row, so no atomics). Head dim 64 is a compile-time constant. bf16 q, k, v: the same kernel compiled a second
time over 16-bit storage, every sum in float32 (scores, softmax statistics, delta, the output and gradient rows,
rounded to bf16 once when stored); with AVX512-BF16 the dot products use ``vdpbf16ps`` and the weighted row sums take
rows in pairs (weights rounded to bf16, as flash attention rounds P before P @ V). Its speed against dense SDPA and
the blocked path, and the designs tried: ``docs/attention.md`` ("Design notes"), ``docs/results/bench_attention.json``.

The kernel is compiled on first use with the system C compiler (``cc``, ``-O3 -march=native``) into a per-user
cache keyed by the sources, flags and compiler; ctypes calls release the GIL, so the rows are split over
``torch.get_num_threads()`` threads of a pool kept between calls. Without a compiler the backend reports why and
``auto`` keeps the blocked path. Scope: float32 or bfloat16, no prefix tokens, frame-level causality or none
(token-causal masks are not windows).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import torch

from vidgen.attention.masks import AttentionPattern
from vidgen.errors import UnsupportedError

SOURCE = Path(__file__).with_name("window_kernel.c")
SOURCES = (SOURCE, SOURCE.with_name("window_kernel_body.h"))  # the body is included once per dtype
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC", "-shared"]  # fast-math: vectorised dot-product sums
# storage dtype -> suffix of the kernel's exported functions; every sum accumulates in float32 in both
SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}
_P, _L = ctypes.c_void_p, ctypes.c_long


class _Geometry(ctypes.Structure):
    """The kernel's ``Geometry``: grid, head dim, radii (the axis length for an unlimited axis), causal, scale."""
    _fields_ = [(name, ctypes.c_int) for name in ("T", "H", "W", "D", "rt", "rh", "rw", "causal")] + \
               [("scale", ctypes.c_float)]


def _cache_dir() -> Path:
    root = os.environ.get("VIDGEN_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                          os.path.expanduser("~/.cache"), "vidgen")
    return Path(root) / "kernels"


@functools.lru_cache(maxsize=1)
def _library() -> tuple[Optional[ctypes.CDLL], Optional[str]]:
    """(the compiled kernel, None) or (None, why it is unavailable); compiled once per source, flags and compiler."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler found (set CC or install cc / gcc) to build the fused window kernel"
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    source = b"".join(p.read_bytes() for p in SOURCES)
    key = hashlib.sha256(source + " ".join([version, *FLAGS]).encode()).hexdigest()[:16]
    path = _cache_dir() / f"window_kernel_{key}.so"
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # build beside it, then an atomic rename
                built = Path(tmp) / path.name
                result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built), "-lm"],
                                        capture_output=True, text=True)
                if result.returncode != 0:
                    return None, f"compiling {SOURCE.name} with {compiler} failed: {result.stderr.strip()[:300]}"
                os.replace(built, path)
        lib = ctypes.CDLL(str(path))
    except OSError as err:  # an unwritable cache (set VIDGEN_CACHE) or a library that does not load
        return None, f"the fused window kernel could not be built or loaded in {path.parent}: {err}"
    for sfx in SUFFIX.values():
        getattr(lib, f"window_forward_{sfx}").argtypes = [_P] * 5 + [_L, _L, _Geometry, _P]
        getattr(lib, f"window_backward_q_{sfx}").argtypes = [_P] * 8 + [_L, _L, _Geometry, _P]
        getattr(lib, f"window_backward_kv_{sfx}").argtypes = [_P] * 8 + [_L, _L, _Geometry, _P]
    return lib, None


def _ptr(x: torch.Tensor):
    return x.data_ptr()


def _geometry(pattern: AttentionPattern, d: int, scale: float) -> _Geometry:
    radii = [n if r is None else r for n, r in zip(pattern.grid, pattern.radii)]  # None: the whole axis
    return _Geometry(*pattern.grid, d, *radii, int(pattern.causal), scale)


def _split(frames: int) -> list[tuple[int, int]]:
    """Contiguous ranges of whole frames, a few per thread (windows shrink at the borders: equal frames are not
    equal work)."""
    parts = max(1, min(frames, 4 * torch.get_num_threads()))
    edges = [frames * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


INLINE_TOKENS = 4096  # (B*heads*N) below this a call runs on the calling thread
_POOL: dict = {}  # {"pool": ThreadPoolExecutor, "threads": n}: kept between calls (three runs per fwd+bwd)


def _pool(threads: int) -> ThreadPoolExecutor:
    """A thread pool reused across calls, so the three kernel runs of a fwd+bwd start no threads (per-call overhead,
    eval/bench_attention.py "user's call"); rebuilt when torch's thread count changes."""
    if _POOL.get("threads") != threads:
        if "pool" in _POOL:
            _POOL["pool"].shutdown(wait=False)
        _POOL.update(pool=ThreadPoolExecutor(threads, thread_name_prefix="vidgen-window"), threads=threads)
    return _POOL["pool"]


if hasattr(os, "register_at_fork"):  # a forked child (data-loader worker) inherits the object but not its threads
    os.register_at_fork(after_in_child=_POOL.clear)


def _run(function, frames: int, args_for, tokens: int = 1 << 30) -> None:
    ranges = _split(frames)
    # small calls run inline: handing a few milliseconds of work to pool threads cost more than it saved
    threads = 1 if tokens < INLINE_TOKENS else min(torch.get_num_threads(), len(ranges))
    if threads <= 1:
        for a, b in ranges:
            function(*args_for(a, b))
        return
    list(_pool(torch.get_num_threads()).map(lambda r: function(*args_for(*r)), ranges))


def window_keys(pattern: AttentionPattern) -> int:
    """Keys a query sees away from the borders: one scratch array per thread (forward one, backward two)."""
    return pattern.window_size(0) * pattern.window_size(1) * pattern.window_size(2)


def _kernel(lib, name: str, dtype: torch.dtype):
    return getattr(lib, f"{name}_{SUFFIX[dtype]}")


def _scratch(pattern: AttentionPattern, arrays: int):
    """Per-range float32 scratch (each range runs on one thread at a time), allocated on first use."""
    keys, buffers = window_keys(pattern), {}
    return lambda a, b: _ptr(buffers.setdefault((a, b), torch.empty(arrays * keys, dtype=torch.float32)))


class _WindowAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, pattern: AttentionPattern, scale: float):
        lib = _library()[0]
        bh, n, d = q.shape
        o, lse = torch.empty_like(q), torch.empty(bh, n, dtype=torch.float32)
        geo, scratch = _geometry(pattern, d, scale), _scratch(pattern, 1)
        args = [_ptr(q), _ptr(k), _ptr(v), _ptr(o), _ptr(lse)]
        _run(_kernel(lib, "window_forward", q.dtype), bh * pattern.grid[0],
             lambda a, b: [*args, a, b, geo, scratch(a, b)], bh * n)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.pattern, ctx.scale = pattern, scale
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable  # the kernel's backward is not itself differentiable
    def backward(ctx, dout):
        lib = _library()[0]
        q, k, v, o, lse = ctx.saved_tensors
        dout = dout.to(q.dtype).contiguous()  # e.g. the expanded ones of out.sum().backward()
        bh, n, d = q.shape
        # delta = rowsum(dout * o) in float32 is computed by the query pass: each torch op here is a parallel region,
        # and on a loaded 2-core machine every one of them waited for a time slice (8 ms each at 1k tokens)
        delta = torch.empty(bh, n, dtype=torch.float32)
        geo, scratch = _geometry(ctx.pattern, d, ctx.scale), _scratch(ctx.pattern, 2)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        qkv, stats = [_ptr(q), _ptr(k), _ptr(v)], [_ptr(dout), _ptr(lse), _ptr(delta)]
        frames = bh * ctx.pattern.grid[0]
        _run(_kernel(lib, "window_backward_q", q.dtype), frames,
             lambda a, b: [*qkv, _ptr(o), *stats, _ptr(dq), a, b, geo, scratch(a, b)], bh * n)
        _run(_kernel(lib, "window_backward_kv", q.dtype), frames,
             lambda a, b: [*qkv, *stats, _ptr(dk), _ptr(dv), a, b, geo, scratch(a, b)], bh * n)
        return dq, dk, dv, None, None


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: AttentionPattern,
                     scale: Optional[float] = None) -> torch.Tensor:
    """Exact attention of ``pattern`` (no prefix tokens) with the fused kernel. q, k, v: (B, heads, N, D), float32
    or bfloat16 (stored in bf16, summed in float32); the output and the gradients keep the input dtype."""
    reason = unsupported_reason(q, pattern)
    if reason is not None:
        raise UnsupportedError(f"fused window attention cannot run this call: {reason}")
    b, h, n, d = q.shape
    scale = float(d ** -0.5 if scale is None else scale)
    flat = [x.reshape(b * h, n, d).contiguous() for x in (q, k, v)]  # (B*heads, N, D)
    return _WindowAttention.apply(*flat, pattern, scale).reshape(b, h, n, d)


def bf16_native() -> bool:
    """Whether the compiled kernel's bf16 path uses AVX512-BF16 instructions (else it converts bf16 to float32)."""
    lib = _library()[0]
    return bool(lib is not None and lib.window_bf16_native())


def unsupported_reason(q: torch.Tensor, pattern: AttentionPattern) -> Optional[str]:
    if q.device.type != "cpu":
        return f"the fused window kernel runs on the CPU, got a {q.device.type} tensor"
    if q.dtype not in SUFFIX:
        return (f"the fused window kernel takes float32 or bfloat16 q, k, v, got {q.dtype}; cast them, or use "
                f"backend='cpu' or 'reference'")
    if pattern.token_causal:
        return "the fused window kernel implements frame-level causality only, not causal='token'"
    if pattern.num_prefix_tokens:
        return "the fused window kernel has no prefix tokens; use backend='cpu'"
    return _library()[1]
