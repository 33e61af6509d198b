"""vidgen's 3D window attention inside a diffusers video transformer (Wan, CogVideoX, LTX-Video): a training-free
sliding window over the latent token grid, as STA does, in one call::

    handle = window_attention(pipe.transformer, window=(3, 7, 7), layers=range(2, 30), dense_steps=5)
    frames = pipe(prompt).frames      # self-attention of those layers runs attention3d with the window
    handle.remove()                   # the model's own processors again

``window=(wt, wh, ww)`` counts tokens of the transformer's grid (latent cells / patch size) along t, h, w; a
``None`` entry leaves that axis whole. ``layers``: block indices (default all). ``dense_steps=k``: the first ``k``
denoising steps of each sampling run stay dense (a step is a new timestep value; a larger timestep than the last
starts a new run); in training mode every call is windowed. CogVideoX attends text and video tokens jointly: its
text tokens are ``attention3d``'s prefix tokens (they see, and are seen by, every token). The grid of each call is
read from the transformer's inputs by a forward pre-hook, so diffusers' own pipeline runs the swapped model too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from vidgen.attention import attention3d
from vidgen.errors import InvalidInputError
from vidgen.generators.diffusers_transformer import DiffusersFlowTransformer, patch_size_of, transformer_family


@dataclass
class WindowState:
    """What the processors read at each call: the token grid, the step, the settings."""

    window: tuple
    dense_steps: int = 0
    backend: str = "auto"
    grid: Optional[tuple] = None
    step: int = -1
    last_t: Optional[float] = None
    windowed_calls: int = 0
    model: Optional[torch.nn.Module] = field(default=None, repr=False)

    def observe(self, timestep) -> None:
        if timestep is None:
            return
        t = float(torch.as_tensor(timestep).detach().reshape(-1)[0])
        if self.last_t is None or t > self.last_t:
            self.step = 0
        elif t != self.last_t:
            self.step += 1
        self.last_t = t

    @property
    def active(self) -> bool:
        return (self.model is not None and self.model.training) or self.step >= self.dense_steps

    def attend(self, q, k, v, prefix: int = 0) -> torch.Tensor:
        """(B, heads, N, D) -> (B, heads, N, D): windowed once past the dense steps, else dense SDPA."""
        if not self.active or self.grid is None:
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)
        self.windowed_calls += 1
        return attention3d(q, k, v, grid=self.grid, window=self.window, num_prefix_tokens=prefix,
                           backend=self.backend)


def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on interleaved (even, odd) channel pairs, x (B, S, H, D), cos / sin broadcastable."""
    even, odd = x[..., 0::2], x[..., 1::2]
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).flatten(-2).type_as(x)


class _WanWindowProcessor:
    def __init__(self, state: WindowState):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections
        q, k, v = _get_qkv_projections(attn, hidden_states, hidden_states)
        q, k = attn.norm_q(q), attn.norm_k(k)
        q, k, v = (x.unflatten(2, (attn.heads, -1)) for x in (q, k, v))
        if rotary_emb is not None:
            q, k = _rotate_pairs(q, *rotary_emb), _rotate_pairs(k, *rotary_emb)
        out = self.state.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        out = out.flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))


class _LTXWindowProcessor:
    def __init__(self, state: WindowState):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        from diffusers.models.transformers.transformer_ltx import apply_rotary_emb
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        q, k = attn.norm_q(q), attn.norm_k(k)
        if image_rotary_emb is not None:
            q, k = apply_rotary_emb(q, image_rotary_emb), apply_rotary_emb(k, image_rotary_emb)
        q, k, v = (x.unflatten(2, (attn.heads, -1)).transpose(1, 2) for x in (q, k, v))
        out = self.state.attend(q, k, v).transpose(1, 2).flatten(2, 3).to(q.dtype)
        return attn.to_out[1](attn.to_out[0](out))


class _CogVideoXWindowProcessor:
    def __init__(self, state: WindowState):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        from diffusers.models.embeddings import apply_rotary_emb
        n_text = encoder_hidden_states.size(1)
        x = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        q, k, v = (proj(x).unflatten(2, (attn.heads, -1)).transpose(1, 2) for proj in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        if image_rotary_emb is not None:
            q = torch.cat([q[:, :, :n_text], apply_rotary_emb(q[:, :, n_text:], image_rotary_emb)], dim=2)
            k = torch.cat([k[:, :, :n_text], apply_rotary_emb(k[:, :, n_text:], image_rotary_emb)], dim=2)
        out = self.state.attend(q, k, v, prefix=n_text).transpose(1, 2).flatten(2, 3)
        out = attn.to_out[1](attn.to_out[0](out))
        return out[:, n_text:], out[:, :n_text]


_PROCESSORS = {"wan": _WanWindowProcessor, "ltx": _LTXWindowProcessor, "cogvideox": _CogVideoXWindowProcessor}


def _blocks(model) -> list:
    return list(model.blocks if hasattr(model, "blocks") else model.transformer_blocks)


def _token_grid(model, family: str, args, kwargs) -> Optional[tuple]:
    """The token grid of a forward call, from its inputs."""
    x = kwargs.get("hidden_states", args[0] if args else None)
    if family == "ltx":
        return tuple(int(kwargs[k]) for k in ("num_frames", "height", "width")) if "num_frames" in kwargs else None
    # CogVideoX's latents are (B, t, C, h, w)
    grid = (x.shape[1], x.shape[3], x.shape[4]) if family == "cogvideox" else tuple(x.shape[2:])
    return tuple(int(g) // p for g, p in zip(grid, patch_size_of(model)))


class WindowAttention:
    """The handle :func:`window_attention` returns: ``.state`` (settings, grid, step, windowed calls) and
    ``.remove()`` (the original processors back)."""

    def __init__(self, model, state: WindowState, originals: dict, hook):
        self.model, self.state, self._originals, self._hook = model, state, originals, hook

    def remove(self) -> None:
        blocks = _blocks(self.model)
        for i, processor in self._originals.items():
            blocks[i].attn1.set_processor(processor)
        self._hook.remove()
        self._originals = {}


def _check_window(window) -> tuple:
    ok = isinstance(window, (tuple, list)) and len(window) == 3 and all(
        w is None or (isinstance(w, int) and not isinstance(w, bool) and w >= 1) for w in window)
    if not ok:
        raise InvalidInputError(f"window must be (wt, wh, ww): three ints >= 1 or None (tokens of the transformer's "
                                f"grid along t, h, w), got {window!r}")
    return tuple(window)


def window_attention(transformer, window, layers=None, dense_steps: int = 0, backend: str = "auto"):
    """Swap the self-attention of ``layers`` (block indices; default all) of a diffusers video transformer (or a
    :class:`DiffusersFlowTransformer`) for ``attention3d`` with ``window``; see the module docstring. Returns a
    :class:`WindowAttention` handle."""
    model = transformer.model if isinstance(transformer, DiffusersFlowTransformer) else transformer
    family = transformer_family(model)
    if family is None:
        raise InvalidInputError(f"transformer: {type(model).__name__} is not a supported diffusers video transformer")
    window = _check_window(window)
    if isinstance(dense_steps, bool) or not isinstance(dense_steps, int) or dense_steps < 0:
        raise InvalidInputError(f"dense_steps must be an int >= 0, got {dense_steps!r}")
    blocks = _blocks(model)
    chosen = list(range(len(blocks))) if layers is None else list(layers)
    bad = [i for i in chosen if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(blocks)]
    if bad or not chosen:
        raise InvalidInputError(f"layers: {bad or chosen!r} are not block indices of this {type(model).__name__} "
                                f"(0..{len(blocks) - 1})")
    if any(isinstance(blocks[i].attn1.processor, tuple(_PROCESSORS.values())) for i in chosen):
        raise InvalidInputError("layers: window attention is already on in some of them; remove() that first")
    state = WindowState(window, dense_steps, backend, model=model)
    originals = {}
    for i in chosen:
        originals[i] = blocks[i].attn1.processor
        blocks[i].attn1.set_processor(_PROCESSORS[family.name](state))

    def hook(module, args, kwargs):
        state.grid = _token_grid(module, family.name, args, kwargs)
        state.observe(kwargs.get("timestep", args[1] if len(args) > 1 else None))

    return WindowAttention(model, state, originals, model.register_forward_pre_hook(hook, with_kwargs=True))
