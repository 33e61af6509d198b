"""vidgen's 3D window attention inside a diffusers video transformer (of a family with a window processor, see
:class:`~vidgen.families.Family`): a training-free sliding window over the latent token grid, as STA does, in one
call::

    handle = window_attention(pipe.transformer, window=(3, 7, 7), layers=range(2, 30), dense_steps=5)
    frames = pipe(prompt).frames      # self-attention of those layers runs attention3d with the window
    handle.remove()                   # the model's own processors again

``window=(wt, wh, ww)`` counts tokens of the transformer's grid (latent cells / patch size) along t, h, w; a
``None`` entry leaves that axis whole. ``tile=(tt, th, tw)``: tile-aligned windows instead (the window then counts
tiles of that many tokens, STA's layout; :mod:`vidgen.attention.masks`). ``layers``: block indices (default all). ``dense_steps=k``: the first ``k``
denoising steps of each sampling run stay dense (a step is a new timestep value; a larger timestep than the last
starts a new run); in training mode every call is windowed. A family whose self-attention also holds the text
tokens passes them as ``attention3d``'s prefix tokens (they see, and are seen by, every token). Each family's
processor (``family.window_processor``) computes q, k, v as its own attention does and calls
:meth:`WindowState.attend`; the grid of each call is read from the transformer's inputs (``family.token_grid``) by a
forward pre-hook, so diffusers' own pipeline runs the swapped model too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from vidgen.adapters.transformer import DiffusersVideoTransformer
from vidgen.attention import attention3d
from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.families import PIPELINE_FAMILIES, WindowProcessor, transformer_family


@dataclass
class WindowState:
    """What the processors read at each call: the token grid, the step, the settings."""

    window: tuple
    dense_steps: int = 0
    tile: Optional[tuple] = None
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
        if not torch.compiler.is_compiling():  # eager calls only: a counter in a compiled block recompiles it
            self.windowed_calls += 1
        return attention3d(q, k, v, grid=self.grid, window=self.window, num_prefix_tokens=prefix,
                           backend=self.backend, tile=self.tile)


def _blocks(model) -> list:
    return list(model.blocks if hasattr(model, "blocks") else model.transformer_blocks)


class WindowAttention:
    """The handle :func:`window_attention` returns: ``.state`` (settings, grid, step, windowed calls made eagerly) and
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


def window_attention(transformer, window, layers=None, dense_steps: int = 0, backend: str = "auto", tile=None):
    """Swap the self-attention of ``layers`` (block indices; default all) of a diffusers video transformer (or a
    :class:`DiffusersVideoTransformer`) for ``attention3d`` with ``window``; see the module docstring. Returns a
    :class:`WindowAttention` handle."""
    model = transformer.model if isinstance(transformer, DiffusersVideoTransformer) else transformer
    family = transformer_family(model)
    if family is None:
        raise InvalidInputError(f"transformer: {type(model).__name__} is not a supported diffusers video transformer "
                                f"({', '.join(f.transformer for f in PIPELINE_FAMILIES)})")
    if family.window_processor is None:
        family.refuse("window_attention")
        raise UnsupportedError(f"window_attention: no window processor for {type(model).__name__}")
    window = _check_window(window)
    if tile is not None:
        from vidgen.attention.masks import make_pattern
        make_pattern((1, 1, 1), window, False, 0, tile)  # a named error for a bad tile, before any processor changes
        tile = tuple(tile)
    if isinstance(dense_steps, bool) or not isinstance(dense_steps, int) or dense_steps < 0:
        raise InvalidInputError(f"dense_steps must be an int >= 0, got {dense_steps!r}")
    blocks = _blocks(model)
    chosen = list(range(len(blocks))) if layers is None else list(layers)
    bad = [i for i in chosen if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(blocks)]
    if bad or not chosen:
        raise InvalidInputError(f"layers: {bad or chosen!r} are not block indices of this {type(model).__name__} "
                                f"(0..{len(blocks) - 1})")
    if any(isinstance(blocks[i].attn1.processor, WindowProcessor) for i in chosen):
        raise InvalidInputError("layers: window attention is already on in some of them; remove() that first")
    state = WindowState(window, dense_steps, tile, backend, model=model)
    originals = {}
    for i in chosen:
        originals[i] = blocks[i].attn1.processor
        blocks[i].attn1.set_processor(family.window_processor(state))

    def hook(module, args, kwargs):
        state.grid = family.token_grid(module, args, kwargs)
        state.observe(kwargs.get("timestep", args[1] if len(args) > 1 else None))

    return WindowAttention(model, state, originals, model.register_forward_pre_hook(hook, with_kwargs=True))
