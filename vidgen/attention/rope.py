"""3D rotary position embedding over (t, h, w): the head dim is split in three bands, one rotated per axis.

Rotating q and k makes the score q.k depend only on the (dt, dh, dw) offset between tokens. Prefix tokens
(text / class / register) are left unrotated: they have no position in the grid.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from vidgen.errors import InvalidInputError


def rope_axis_dims(head_dim: int) -> Tuple[int, int, int]:
    """Channels given to (t, h, w). h and w get equal even shares; t gets the (even) rest."""
    if head_dim % 2 or head_dim < 6:
        raise InvalidInputError(f"3D RoPE needs an even head_dim >= 6, got {head_dim}")
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def rope3d_angles(grid, head_dim: int, theta: float = 10000.0, device=None) -> torch.Tensor:
    """(T*H*W, head_dim // 2) rotation angles, tokens in (t, h, w) row-major order."""
    t, h, w = grid
    coords = torch.stack(torch.meshgrid(torch.arange(t, device=device), torch.arange(h, device=device),
                                        torch.arange(w, device=device), indexing="ij"), dim=-1).reshape(-1, 3)
    angles = []
    for axis, dims in enumerate(rope_axis_dims(head_dim)):
        freqs = theta ** (-torch.arange(0, dims, 2, device=device, dtype=torch.float64) / dims)  # (dims/2,)
        angles.append(coords[:, axis, None].double() * freqs)
    return torch.cat(angles, dim=-1).float()


def apply_rope(x: torch.Tensor, angles: torch.Tensor, num_prefix_tokens: int = 0, start: int = 0) -> torch.Tensor:
    """Rotate the video tokens of x (B, heads, L, D) by angles (T*H*W, D // 2) of the whole grid.

    x holds the L tokens at sequence positions ``[start, start + L)`` of prefix + video (``start=0`` and
    ``L = N``: the whole sequence); positions ``< num_prefix_tokens`` stay unrotated, position ``p`` of a
    video token is rotated by ``angles[p - num_prefix_tokens]``. Equal to slicing the whole-sequence rotation.
    """
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise InvalidInputError(f"start must be an int >= 0, got {start!r}")
    length = x.shape[2]
    if start + length > num_prefix_tokens + angles.shape[0]:
        raise InvalidInputError(f"start + L = {start} + {length} exceeds num_prefix_tokens + T*H*W = "
                                f"{num_prefix_tokens} + {angles.shape[0]}")
    unrotated = min(max(num_prefix_tokens - start, 0), length)  # prefix tokens among the L
    prefix, video = x[:, :, :unrotated], x[:, :, unrotated:]
    first = start + unrotated - num_prefix_tokens  # video index of the first video token of x
    angles = angles[first:first + video.shape[2]]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = video.chunk(2, dim=-1)  # rotate-half pairing: channel i with channel i + D/2
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return torch.cat([prefix, rotated], dim=2) if unrotated else rotated


class RotaryEmbedding3D(nn.Module):
    """Caches the angles of the last grid seen (models reuse one grid for every layer and step)."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        rope_axis_dims(head_dim)  # validate early
        self.head_dim, self.theta = head_dim, theta
        self._cache: Tuple = (None, None)

    def angles(self, grid, device) -> torch.Tensor:
        key = (tuple(grid), str(device))
        if self._cache[0] != key:
            self._cache = (key, rope3d_angles(grid, self.head_dim, self.theta, device))
        return self._cache[1]

    def forward(self, q: torch.Tensor, k: torch.Tensor, grid, num_prefix_tokens: int = 0, start: int = 0):
        """Rotate q, k (B, heads, L, D) holding sequence positions ``[start, start + L)`` (see :func:`apply_rope`)."""
        angles = self.angles(grid, q.device)
        return apply_rope(q, angles, num_prefix_tokens, start), apply_rope(k, angles, num_prefix_tokens, start)
