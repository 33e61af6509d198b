"""Key/value caches for autoregressive decoding, owned by the caller (never module buffers, never in a state_dict).

gpt-fast style: each layer's keys and values live in one preallocated ``(B, heads, max_tokens, D)`` tensor
pair; a step writes its new tokens in place at their sequence positions and attends over the prefix
``[0, end)`` of the cache::

    cache = ModelKVCache.allocate(num_layers, batch, heads, max_tokens, head_dim, compute_dtype, device)
    y = layer(x, grid, num_prefix_tokens, kv_cache=cache.layers[i], start=cache.length)  # in every layer
    cache.length += x.shape[1]                                                          # once per step

The cache holds the *compute* dtype: autocast's dtype while autocast is on, else the weights' (see
:func:`cache_dtype`). Under autocast a layer's keys may come out of an op autocast keeps in fp32 (e.g. a norm);
:meth:`KVCache.write` then accepts any float dtype and the in-place copy casts it to the cache's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from vidgen.errors import InvalidInputError
from vidgen.precision import autocast_dtype


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def cache_dtype(weights_dtype: torch.dtype, device_type: str) -> torch.dtype:
    """The dtype a KV cache is allocated in: autocast's on ``device_type`` when it is on, else ``weights_dtype``."""
    return autocast_dtype(device_type) or weights_dtype


@dataclass
class KVCache:
    """One layer's cache: ``k``, ``v`` of shape ``(B, heads, max_tokens, D)``; positions ``[0, length)`` are
    written. Writing at ``start`` (``<= length``) makes ``start + L`` the new length: later positions were
    computed from a history that has just changed (e.g. a rollback), so they are dropped."""

    k: torch.Tensor
    v: torch.Tensor
    length: int = 0

    def __post_init__(self):
        if not isinstance(self.k, torch.Tensor) or not isinstance(self.v, torch.Tensor) or self.k.dim() != 4:
            raise InvalidInputError("k and v must be tensors of shape (B, heads, max_tokens, D)")
        if self.k.shape != self.v.shape or self.k.dtype != self.v.dtype or self.k.device != self.v.device:
            raise InvalidInputError(f"k and v must share shape, dtype and device, got {tuple(self.k.shape)} "
                                    f"{self.k.dtype} {self.k.device} and {tuple(self.v.shape)} {self.v.dtype} "
                                    f"{self.v.device}")
        if not _is_int(self.length) or not 0 <= self.length <= self.max_tokens:
            raise InvalidInputError(f"length must be an int in [0, {self.max_tokens}], got {self.length!r}")

    @classmethod
    def allocate(cls, batch: int, heads: int, max_tokens: int, head_dim: int, dtype: torch.dtype = torch.float32,
                 device: Optional[torch.device] = None) -> "KVCache":
        """An empty cache (zeros) for up to ``max_tokens`` positions."""
        for name, value in (("batch", batch), ("heads", heads), ("max_tokens", max_tokens), ("head_dim", head_dim)):
            if not _is_int(value) or value < 1:
                raise InvalidInputError(f"{name} must be a positive int, got {value!r}")
        shape = (batch, heads, max_tokens, head_dim)
        return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))

    @property
    def max_tokens(self) -> int:
        return self.k.shape[2]

    def write(self, start: int, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        """Store ``k_new``, ``v_new`` (B, heads, L, D) at positions ``[start, start + L)``, in place."""
        if not _is_int(start) or not 0 <= start <= self.length:
            raise InvalidInputError(f"start must be an int in [0, length={self.length}] (positions before it must "
                                    f"be written first), got {start!r}")
        b, h, _, d = self.k.shape
        for name, x in (("k_new", k_new), ("v_new", v_new)):
            if not isinstance(x, torch.Tensor) or x.dim() != 4 or (x.shape[0], x.shape[1], x.shape[3]) != (b, h, d):
                raise InvalidInputError(f"{name} must have shape ({b}, {h}, L, {d}), "
                                        f"got {tuple(getattr(x, 'shape', ()))}")
            # under autocast any float dtype is a compute dtype (fp32-kept ops); the copy below casts it
            amp = autocast_dtype(self.k.device.type) is not None and x.is_floating_point()
            if (x.dtype != self.k.dtype and not amp) or x.device != self.k.device:
                raise InvalidInputError(f"{name} must be {self.k.dtype} on {self.k.device} like the cache, "
                                        f"got {x.dtype} on {x.device}")
        if k_new.shape != v_new.shape:
            raise InvalidInputError(f"k_new and v_new must have the same shape, got {tuple(k_new.shape)} and "
                                    f"{tuple(v_new.shape)}")
        end = start + k_new.shape[2]
        if end > self.max_tokens:
            raise InvalidInputError(f"start + L = {start} + {k_new.shape[2]} = {end} exceeds the cache's "
                                    f"max_tokens={self.max_tokens}")
        self.k[:, :, start:end] = k_new
        self.v[:, :, start:end] = v_new
        self.length = end

    def view(self, end: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of positions ``[0, end)``: views ``(B, heads, end, D)`` into the cache (no copy)."""
        if not _is_int(end) or not 0 < end <= self.length:
            raise InvalidInputError(f"end must be an int in [1, length={self.length}], got {end!r}")
        return self.k[:, :, :end], self.v[:, :, :end]

    def reset(self) -> None:
        """Forget every position (the memory is kept and overwritten by later writes)."""
        self.length = 0


@dataclass
class ModelKVCache:
    """One :class:`KVCache` per attention layer, plus ``length``: the number of tokens consumed so far, i.e. the
    ``start`` of the next step. The model passes it to every layer, then adds the step's token count."""

    layers: List[KVCache]
    length: int = 0

    @classmethod
    def allocate(cls, num_layers: int, batch: int, heads: int, max_tokens: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> "ModelKVCache":
        if not _is_int(num_layers) or num_layers < 1:
            raise InvalidInputError(f"num_layers must be a positive int, got {num_layers!r}")
        return cls([KVCache.allocate(batch, heads, max_tokens, head_dim, dtype, device) for _ in range(num_layers)])

    @property
    def max_tokens(self) -> int:
        return min(layer.max_tokens for layer in self.layers)

    def reset(self) -> None:
        """Start a new sequence: length 0 in the container and in every layer."""
        self.length = 0
        for layer in self.layers:
            layer.reset()
