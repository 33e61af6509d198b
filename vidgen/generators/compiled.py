"""Optional ``torch.compile`` (inductor) for sampling: ``generate_ids / generate_latents / generate_tokens(...,
compile=True)`` and the models' ``.sample(..., compile=True)``.

What is compiled: the model's forward for masked and flow sampling (every step has the same shapes), the one-token
decode step for autoregressive sampling (:class:`~vidgen.generators.kv_decode.KVDecodeStep` with ``static=True``:
it attends all cache positions with the pattern's mask row, so the shapes do not change from token to token).
Compiled callables are cached per model (weakly: they go with the model), so the first call of a shape pays the
compile time (tens of seconds on 2 cores; ``eval/bench_generators.py`` reports it apart from the steady state) and
later calls reuse it. Eager stays the default and the reference: the tests compare both.

Inductor keeps its on-disk cache where torch puts it: ``TORCHINDUCTOR_CACHE_DIR``, else ``torchinductor_<user>`` in the
temporary directory (the Makefile's targets set ``.cache/inductor`` in the repository).
"""
from __future__ import annotations

import weakref

import torch

_FORWARDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def compiled_forward(model):
    """``torch.compile(model)`` (shares the model's parameters; nothing is registered on the model), made once per
    model. Input checks with data-dependent branches become graph breaks; the backbone compiles as one graph."""
    fn = _FORWARDS.get(model)
    if fn is None:
        fn = _FORWARDS[model] = torch.compile(model, dynamic=False)
    return fn


_DECODE_STEP = None


def compiled_decode_step(decoder):
    """``decoder.step`` compiled (static shapes; ``pos`` passed as a 0-d tensor so one graph serves every
    position). The compiled function is shared: dynamo keys its graphs on the code and guards on shapes / dtypes."""
    global _DECODE_STEP
    if _DECODE_STEP is None:
        from vidgen.generators.kv_decode import KVDecodeStep
        _DECODE_STEP = torch.compile(KVDecodeStep.step, dynamic=False)
    return lambda token, pos: _DECODE_STEP(decoder, token, pos)
