"""Fused flash-attention-style Triton kernels for 3D attention patterns (forward, dK/dV and dQ backward): the
PyTorch side.

The tokens are first gathered into the layout of :mod:`vidgen.attention.tiles` (prefix, then the video in 3D boxes or
raster order, padded to whole tiles). Each program of the kernels (:mod:`vidgen.attention.triton_jit`) owns one tile
of queries (forward, dQ) or keys (dK/dV) and walks two precomputed lists of the other side's tiles: *full* tiles,
every pair allowed, with no mask at all, then *partial* tiles, where the exact mask is rebuilt per pair of slots,
from packed codes (:mod:`vidgen.attention.mask_codes`) where the grid fits their fields, else from coordinates. Tiles
that cannot interact are never visited. The backward has separate dK/dV and dQ kernels, so results are deterministic.

The kernels are the operators ``vidgen::attention3d_fwd`` and ``vidgen::attention3d_bwd`` (``torch.library.define``
with fake kernels, so torch.compile traces them); autograd is a ``torch.autograd.Function`` around them, which costs
less per call than an autograd formula registered on the operator.

Runs on CUDA tensors, or on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1`` set before triton
is first imported). The interpreter mis-computes bf16 ``tl.dot``, so there we upcast to fp32 first.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import torch
import triton

from vidgen.attention import mask_codes, tiles, triton_jit
from vidgen.attention.masks import AttentionPattern
from vidgen.attention.reasons import TRITON_CPU_REASON, TRITON_TOKEN_CAUSAL_REASON
from vidgen.errors import InvalidInputError

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256
LOG2E = 1.4426950408889634
MASKS = ("auto", "coords")  # auto: packed codes where their fields hold the grid and window, else coordinates

INTERPRETED = triton_jit.INTERPRET_ENV and type(triton_jit.fwd_kernel.fn).__name__ == "InterpretedFunction"
# Forward tiles (queries x keys) and backward tiles (both kernels); the layout's boxes hold max(BLOCK_M, BLOCK_N).
BLOCK_M, BLOCK_N = (32, 32) if INTERPRETED else (128, 64)
BWD_BLOCK = 32 if INTERPRETED else 64


@dataclass(frozen=True)
class Launch:
    """What the kernels read besides q, k, v, for one pattern, layout and mask variant."""
    plan: tiles.KernelPlan
    slot_keys: torch.Tensor  # packed: codes (slots,); coordinates: (3, slots)
    mask_args: tuple  # RT, RH, RW, OFF_A, OFF_B, PREFIX_CODE, VIDEO_END
    packed: bool


_LAUNCHES: dict = {}


def launch_spec(device, grid, radii, causal, prefix, block_m, block_n, box, mask) -> Launch:
    """The cached :class:`Launch` of the operators' arguments. ``box``: [0] the layout tiles.choose_box picks, []
    raster order, [bt, bh, bw] that box, [bt, bh, bw, 1] a tile-aligned window of those tiles, each a box of the
    layout (every visited tile then full: no mask); ``radii[i] = -1``: unlimited."""
    def make():
        tile = tuple(box[:3]) if len(box) == 4 else None
        pattern = AttentionPattern(tuple(grid), tuple(None if r < 0 else r for r in radii), causal, prefix,
                                   tile=tile)
        chosen = tiles.cached_choose_box(pattern, block_m, block_n, device) if list(box) == [0] else box[:3]
        plan = tiles.kernel_plan(pattern, tuple(chosen) if chosen else None, block_m, block_n,
                                 min(BWD_BLOCK, block_m, block_n), device)
        radii3 = tuple(mask_codes.kernel_radii(pattern))
        codes = mask_codes.pack(pattern, plan.layout) if mask == "auto" else None
        if codes is None:
            return Launch(plan, plan.layout.coords, radii3 + (0, 0, 0, 0), False)
        return Launch(plan, codes.codes, radii3 + (codes.off_a, codes.off_b, codes.prefix_code, codes.video_end),
                      True)
    key = (tuple(grid), tuple(radii), causal, prefix, block_m, block_n, tuple(box), mask, str(device))
    return tiles.cache_get(_LAUNCHES, key, make)


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


def _meta(q: torch.Tensor, spec: Launch, causal: bool, prefix: int, block_m: int, block_n: int) -> dict:
    return _constexprs(q.shape[3], q.dtype, causal, prefix > 0, spec.packed, block_m, block_n)


@functools.lru_cache(maxsize=64)
def _constexprs(d: int, dtype: torch.dtype, causal: bool, has_prefix: bool, packed: bool, block_m: int,
                block_n: int) -> dict:
    block_d = max(16, triton.next_power_of_2(d))
    return dict(CAUSAL=causal, HAS_PREFIX=has_prefix, PACKED=packed, BLOCK_M=block_m, BLOCK_N=block_n,
                BLOCK_D=block_d, EVEN_D=block_d == d, DOT_FP32=INTERPRETED or dtype == torch.float32)


def _forward(q, k, v, grid, radii, causal, prefix, scale, block_m, block_n, box, mask):
    """(out, lse, visits (batch*head*query tiles,)) with q, k, v in token order."""
    spec = launch_spec(q.device, grid, radii, causal, prefix, block_m, block_n, box, mask)
    plan = spec.plan
    q, k, v = (_to_slots(x, plan) for x in (q, k, v))
    bsz, nh, n, d = q.shape
    out = torch.empty_like(q)
    lse = torch.empty(bsz, nh, n, device=q.device, dtype=torch.float32)
    launch = (n // block_m, bsz * nh)
    visits = torch.empty(launch[0] * launch[1], device=q.device, dtype=torch.int32)
    triton_jit.fwd_kernel[launch](q, k, v, out, lse, visits, spec.slot_keys, *_lists(plan.forward), n,
                                  triton.next_power_of_2(n), *spec.mask_args, scale * LOG2E, d,
                                  **_meta(q, spec, causal, prefix, block_m, block_n))
    if plan.layout.identity:
        return out, lse, visits
    return _from_slots(out, plan), lse.index_select(2, plan.layout.dst), visits


DELTA_CHUNK = 1 << 24  # elements of dO (and O) made fp32 at a time by row_dot


def row_dot(grad_out: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(B, h, N) fp32: rowsum(dO * O) of FlashAttention-2's backward, in fp32, over chunks of the sequence, so the fp32
    copies never exceed DELTA_CHUNK elements (at 30x48x80 tokens, 24 heads, D 128 one whole copy is 1.4 GB). On the
    CPU every row has the same bits as in one piece (tested); a GPU may order a row's fp32 sum differently."""
    n, d = out.shape[2], out.shape[3]
    rows = max(1, DELTA_CHUNK // max(1, out.shape[0] * out.shape[1] * d))
    return torch.cat([(grad_out[:, :, i:i + rows].float() * out[:, :, i:i + rows].float()).sum(-1)
                      for i in range(0, n, rows)], dim=2)


_CONFIG = ("int[] grid, int[] radii, bool causal, int num_prefix_tokens, float scale, int block_m, int block_n, "
           "int[] box, str mask")
torch.library.define("vidgen::attention3d_fwd", f"(Tensor q, Tensor k, Tensor v, {_CONFIG}) -> (Tensor, Tensor)")
torch.library.define("vidgen::attention3d_bwd", f"(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, "
                                                f"Tensor lse, {_CONFIG}) -> (Tensor, Tensor, Tensor)")


@torch.library.impl("vidgen::attention3d_fwd", ("cpu", "cuda"))
def _fwd_impl(q, k, v, grid, radii, causal, num_prefix_tokens, scale, block_m, block_n, box, mask):
    """Fused forward: (out (B, h, N, D), log-sum-exp (B, h, N) fp32)."""
    out, lse, _ = _forward(q, k, v, grid, radii, causal, num_prefix_tokens, scale, block_m, block_n, box, mask)
    return out.contiguous(), lse.contiguous()


@torch.library.register_fake("vidgen::attention3d_fwd")
def _(q, k, v, grid, radii, causal, num_prefix_tokens, scale, block_m, block_n, box, mask):
    # contiguous, as the kernel returns them (empty_like would keep a strided q's strides)
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.impl("vidgen::attention3d_bwd", ("cpu", "cuda"))
def _bwd_impl(grad_out, q, k, v, out, lse, grid, radii, causal, num_prefix_tokens, scale, block_m, block_n, box,
              mask):
    """Fused backward: (dq, dk, dv). dK/dV and dQ are separate kernels, so there are no atomics."""
    spec = launch_spec(q.device, grid, radii, causal, num_prefix_tokens, block_m, block_n, box, mask)
    plan = spec.plan
    delta = row_dot(grad_out, out)
    q, k, v, grad_out = (_to_slots(x, plan) for x in (q, k, v, grad_out))
    lse, delta = (_to_slots(x[..., None], plan)[..., 0].contiguous() for x in (lse, delta))
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    bsz, nh, n, d = q.shape
    block = plan.backward_block
    args = (n, triton.next_power_of_2(n), *spec.mask_args, scale * LOG2E, scale, d)
    meta = _meta(q, spec, causal, num_prefix_tokens, block, block)
    triton_jit.bwd_kv_kernel[(n // block, bsz * nh)](q, k, v, grad_out, lse, delta, dk, dv, spec.slot_keys,
                                                     *_lists(plan.backward_kv), *args, **meta)
    triton_jit.bwd_q_kernel[(n // block, bsz * nh)](q, k, v, grad_out, lse, delta, dq, spec.slot_keys,
                                                    *_lists(plan.backward_q), *args, **meta)
    return tuple(_from_slots(x, plan).contiguous() for x in (dq, dk, dv))


@torch.library.register_fake("vidgen::attention3d_bwd")
def _(grad_out, q, k, v, out, lse, grid, radii, causal, num_prefix_tokens, scale, block_m, block_n, box, mask):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


attention3d_fwd = torch.ops.vidgen.attention3d_fwd.default
attention3d_bwd = torch.ops.vidgen.attention3d_bwd.default


class FusedAttention3d(torch.autograd.Function):
    """Autograd around the operators: the forward saves (q, k, v, out, lse), the backward runs both kernels."""

    @staticmethod
    def forward(ctx, q, k, v, config):
        out, lse = attention3d_fwd(q, k, v, *config)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.config = config
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        dq, dk, dv = attention3d_bwd(grad_out, *ctx.saved_tensors, *ctx.config)
        return dq, dk, dv, None


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
    if pattern.tile is not None:
        return tile_reason(pattern)
    return None


def tile_reason(pattern: AttentionPattern) -> Optional[str]:
    """Why the kernel cannot run this tile-aligned window, or None: each tile must be one box of the layout (a whole
    number of the kernel's tiles) and the grid a whole number of tiles, so that no visited tile needs a mask."""
    align = max(BLOCK_M, BLOCK_N, BWD_BLOCK)
    if math.prod(pattern.tile) != align:
        return (f"the triton backend runs tile-aligned windows whose tiles hold {align} tokens (one box of its "
                f"layout), got tile={pattern.tile}; use backend='cpu', 'flex' or 'reference'")
    if any(n % t for n, t in zip(pattern.grid, pattern.tile)):
        return (f"the triton backend runs tile-aligned windows on grids of whole tiles, got grid {pattern.grid} and "
                f"tile={pattern.tile}; use backend='cpu', 'flex' or 'reference'")
    return None


def _op_args(pattern: AttentionPattern, q: torch.Tensor, scale: Optional[float], block_m, block_n, layout="auto",
             mask="auto") -> tuple:
    """The operators' arguments after q, k, v. ``layout``: "auto" (the box tiles.choose_box picks), "raster", or a
    (bt, bh, bw) box of max(block_m, block_n) tokens. ``mask``: "auto" (packed codes where they fit) or "coords"."""
    if mask not in MASKS:
        raise InvalidInputError(f"mask must be one of {MASKS}, got {mask!r}")
    radii = [-1 if r is None else r for r in pattern.radii]
    scale = q.shape[3] ** -0.5 if scale is None else float(scale)
    block_m, block_n = block_m or BLOCK_M, block_n or BLOCK_N
    box = [0] if layout == "auto" else ([] if layout == "raster" else list(layout))
    if pattern.tile is not None:  # the layout's boxes are the tiles
        box = [*pattern.tile, 1]
    return list(pattern.grid), radii, pattern.causal, pattern.num_prefix_tokens, scale, block_m, block_n, box, mask


def triton_attention3d(q, k, v, pattern: AttentionPattern, scale: Optional[float] = None,
                       block_m: Optional[int] = None, block_n: Optional[int] = None, layout="auto",
                       mask="auto") -> torch.Tensor:
    """q, k, v: (B, heads, N, D) -> (B, heads, N, D), differentiable through the fused backward kernels. Without
    gradients to record the forward operator is called directly (no autograd.Function)."""
    config = _op_args(pattern, q, scale, block_m, block_n, layout, mask)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return FusedAttention3d.apply(q, k, v, config)
    return attention3d_fwd(q, k, v, *config)[0]


def kernel_tile_visits(q, k, v, pattern: AttentionPattern, block_m: Optional[int] = None,
                       block_n: Optional[int] = None, layout="auto", mask="auto") -> torch.Tensor:
    """Number of key tiles the forward kernel actually processed, per (batch*head, query tile of the layout)."""
    visits = _forward(q, k, v, *_op_args(pattern, q, None, block_m, block_n, layout, mask))[2]
    return visits.view(q.shape[0] * q.shape[1], -1)
