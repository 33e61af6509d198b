"""Ulysses sequence parallelism for vidgen's video transformer backbone.

Each rank of a sequence-parallel group holds ``1/P`` of a clip's tokens (text prefix + video tokens, in sequence
order, padded at the end to a multiple of ``P``). Everything but attention acts per token and runs on the local
chunk unchanged (norms, adaLN modulation, MLP, cross-attention to the text). Attention:

1. q, k, v of the local tokens (the block's own projection);
2. one all-to-all trades the sequence split for a head split: each rank now holds *all* tokens for ``H / P`` heads;
   the padding is cut off, so the sequence is exactly prefix + ``T*H*W`` tokens again;
3. qk-norm and 3D RoPE are applied there, on the whole sequence, so positions and the unrotated text prefix are
   exactly those of the single-process model; then :func:`vidgen.attention.attention3d` runs unchanged (full,
   window, frame- or token-causal, any backend: it only sees fewer heads);
4. a second all-to-all trades back to the sequence split, and the block's output projection runs locally.

After the last block the chunks are gathered, so the head and the loss see the whole clip on every rank (each rank
computes the same loss; the collectives' backwards are their true adjoints, :mod:`vidgen.parallel.collectives`).
``num_heads`` must be a multiple of ``P`` (refused by name otherwise); any token count works.

The group is an argument, never module state: the backbone's forward takes ``sp`` (a :class:`SequenceParallel`, or
None for the whole sequence on one process) and hands it to each block, and the generators' ``forward``, ``loss`` and
samplers (``generate_latents``, ``generate_ids``) take it as a keyword and pass it down. A module's output depends on
its inputs and weights only; the trainer and ``pipe(..., sp_size=P)`` pass the group of their run or call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from vidgen.attention import attention3d
from vidgen.attention.masks import make_pattern
from vidgen.errors import ConfigError, InvalidInputError, UnsupportedError
from vidgen.parallel.collectives import all_gather, all_to_all
from vidgen.parallel.groups import SequenceParallel


def padded_length(n: int, size: int) -> int:
    return -(-n // size) * size


def split_tokens(tokens: torch.Tensor, sp: SequenceParallel) -> torch.Tensor:
    """(B, N, d) tokens, the same on every rank -> this rank's chunk (B, ceil(N / P), d), zero-padded at the end.
    Its backward is slicing's (zeros outside the chunk): each rank's gradient covers its own tokens."""
    n = tokens.shape[1]
    chunk = padded_length(n, sp.size) // sp.size
    tokens = F.pad(tokens, (0, 0, 0, chunk * sp.size - n))
    return tokens[:, sp.rank * chunk:(sp.rank + 1) * chunk].clone()  # a copy: the whole sequence is not kept alive


def gather_tokens(local: torch.Tensor, n: int, sp: SequenceParallel) -> torch.Tensor:
    """Every rank's chunk (B, N / P, d) -> the whole sequence (B, N, d) on every rank, padding removed."""
    full = all_gather(local, sp.group)  # (P, B, chunk, d)
    return rearrange(full, "p b n d -> b (p n) d")[:, :n]


def seq_to_heads(x: torch.Tensor, n: int, sp: SequenceParallel) -> torch.Tensor:
    """(B, chunk, S, H, D) this rank's tokens of S stacked tensors (q, k, v) -> (S, B, H / P, n, D): every token of
    this rank's heads, padding removed."""
    x = rearrange(x, "b c s (p h) d -> p b c s h d", p=sp.size)
    x = all_to_all(x, sp.group)  # chunk p: rank p's tokens of this rank's heads
    return rearrange(x, "p b c s h d -> s b h (p c) d")[:, :, :, :n]


def heads_to_seq(x: torch.Tensor, chunk: int, sp: SequenceParallel) -> torch.Tensor:
    """(B, H / P, n, D) every token of this rank's heads -> (B, chunk, H * D) this rank's tokens of every head."""
    x = F.pad(x, (0, 0, 0, chunk * sp.size - x.shape[2]))
    x = rearrange(x, "b h (p c) d -> p b c h d", p=sp.size)
    x = all_to_all(x, sp.group)  # chunk p: this rank's tokens of rank p's heads
    return rearrange(x, "p b c h d -> b c (p h d)")


def ulysses_attention(attn, x: torch.Tensor, grid, num_prefix_tokens: int, sp: SequenceParallel) -> torch.Tensor:
    """:class:`~vidgen.attention.Attention3D` ``attn`` on this rank's chunk ``x`` (B, chunk, dim) of a sequence of
    ``num_prefix_tokens + T*H*W`` tokens split over ``sp``; returns this rank's chunk of the output. Equal to the
    chunk of ``attn(whole sequence, grid, num_prefix_tokens)`` up to float rounding."""
    cfg = attn.config
    check_heads(cfg.num_heads, sp.size)
    pattern = make_pattern(grid, cfg.window, cfg.causal, num_prefix_tokens)
    n, chunk = pattern.num_tokens, x.shape[1]
    if chunk * sp.size != padded_length(n, sp.size):
        raise InvalidInputError(f"sequence parallel: a chunk of {chunk} tokens on {sp.size} ranks does not hold the "
                          f"{n} tokens of grid {tuple(grid)} with {num_prefix_tokens} prefix tokens")
    qkv = rearrange(attn.qkv(x), "b c (s h d) -> b c s h d", s=3, h=cfg.num_heads)
    q, k, v = seq_to_heads(qkv, n, sp).unbind(0)  # (B, H / P, n, D) each
    q, k = attn.q_norm(q), attn.k_norm(k)
    if attn.rope is not None:
        q, k = attn.rope(q, k, pattern.grid, num_prefix_tokens)
    out = attention3d(q, k, v, backend=cfg.backend, **pattern.as_kwargs())
    return attn.proj(heads_to_seq(out, chunk, sp))


def check_heads(num_heads: int, size: int) -> None:
    if num_heads % size:
        raise ConfigError(f"sp_size={size} does not divide num_heads={num_heads}: Ulysses sequence parallelism gives "
                          f"each rank num_heads / sp_size heads; choose an sp_size that divides {num_heads}")


def check_split(sp: SequenceParallel, num_heads: int, kv_cache=None, attend=None) -> None:
    """What the backbone checks before it splits a forward over ``sp``: the heads divide, and nothing that keeps or
    chunks the whole sequence itself (a KV cache, an owner's own attention call) is asked to run split."""
    check_heads(num_heads, sp.size)
    if kv_cache is not None:
        raise UnsupportedError("sequence parallelism: KV-cached decoding is not split over processes; "
                               "sample the autoregressive generator without sequence parallelism")
    if attend is not None:
        raise UnsupportedError("sequence parallelism: a generator that calls the blocks' attention itself (the "
                               "block-causal model's chunked attention) is not split over processes; run it with "
                               "sp=None")


def check_sequence_parallel(model, sp) -> None:
    """Whether ``model`` (a generator, or its backbone) can run split over ``sp`` (a :class:`SequenceParallel`;
    None: nothing to check), before a run starts: raises :class:`~vidgen.errors.UnsupportedError` for a model without
    a vidgen backbone and :class:`~vidgen.errors.ConfigError` when ``sp.size`` does not divide its number of heads.
    Nothing is stored: the split is the ``sp`` argument of each forward (``model(..., sp=sp)``,
    ``model.loss(..., sp=sp)``, ``generate_latents(..., sp=sp)``)."""
    backbone = model if hasattr(model, "blocks") else getattr(model, "backbone", None)
    if not (hasattr(backbone, "blocks") and hasattr(backbone, "cfg") and hasattr(backbone.cfg, "num_heads")):
        raise UnsupportedError(f"sequence parallelism: {type(model).__name__} has no vidgen video transformer "
                               "backbone whose attention can be split over processes (vidgen's masked, flow and "
                               "autoregressive generators have one; a diffusers transformer that has a context-"
                               "parallel plan splits with its own enable_parallelism(config=ContextParallelConfig("
                               "ulysses_degree=P)))")
    if sp is not None:
        check_heads(backbone.cfg.num_heads, sp.size)
