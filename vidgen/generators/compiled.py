"""Optional ``torch.compile`` (inductor) for sampling: ``generate_ids / generate_latents / generate_tokens(...,
compile=True)`` and the models' ``.sample(..., compile=True)``.

What is compiled: the model's forward for masked and flow sampling (every step has the same shapes), the one-token
decode step for autoregressive sampling (:class:`~vidgen.generators.kv_decode.KVDecodeStep` with ``static=True``:
it attends all cache positions with the pattern's mask row, so the shapes do not change from token to token).
Compiled callables are cached per model (weakly: they go with the model), so the first call of a shape pays the
compile time (tens of seconds on 2 cores; ``eval/bench_generators.py`` reports it apart from the steady state) and
later calls reuse it. Eager stays the default and the reference: the tests compare both.

Inductor's on-disk cache goes to ``<repo>/.cache/torchinductor`` unless ``TORCHINDUCTOR_CACHE_DIR`` is already set.
"""
from __future__ import annotations

import os
import weakref
from pathlib import Path

import torch

CACHE_DIR = Path(__file__).resolve().parents[2] / ".cache" / "torchinductor"
_FORWARDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def use_repo_cache_dir() -> None:
    """Point inductor's cache at the repository's ``.cache/`` (only if the user has not chosen one)."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(CACHE_DIR))


def compiled_forward(model):
    """``torch.compile(model)`` (shares the model's parameters; nothing is registered on the model), made once per
    model. Input checks with data-dependent branches become graph breaks; the backbone compiles as one graph."""
    fn = _FORWARDS.get(model)
    if fn is None:
        use_repo_cache_dir()
        fn = _FORWARDS[model] = torch.compile(model, dynamic=False)
    return fn


_DECODE_STEP = None


def compiled_decode_step(decoder):
    """``decoder.step`` compiled (static shapes; ``pos`` passed as a 0-d tensor so one graph serves every
    position). The compiled function is shared: dynamo keys its graphs on the code and guards on shapes / dtypes."""
    global _DECODE_STEP
    if _DECODE_STEP is None:
        use_repo_cache_dir()
        from vidgen.generators.kv_decode import KVDecodeStep
        _DECODE_STEP = torch.compile(KVDecodeStep.step, dynamic=False)
    return lambda token, pos: _DECODE_STEP(decoder, token, pos)
