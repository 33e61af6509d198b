"""What both training loops set up around a run: process-global torch state, the accelerator and its precision,
and optional compilation.

A training call is a library call: it sets the thread count and deterministic flags it was configured with and puts
back what it found when it returns or raises, so code that runs after it in the same process computes as before.
"""
from __future__ import annotations

import contextlib
import os
import time

import torch
from accelerate import Accelerator

from vidgen.precision import accelerate_mixed_precision, resolve_precision


@contextlib.contextmanager
def torch_state(threads: int, deterministic: bool = False):
    """Run with ``threads`` intra-op threads (and deterministic kernels if asked); restore both afterwards. An
    accelerate state created during the run is dropped at its end: accelerate keeps one per process and refuses a
    second run in another precision ("AcceleratorState has already been initialized")."""
    from accelerate.state import AcceleratorState

    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    accelerate_was_set = bool(AcceleratorState._shared_state)
    try:
        torch.set_num_threads(threads)
        if deterministic:
            from vidgen.rng import enable_deterministic
            enable_deterministic()
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[3], saved[4]
        if not accelerate_was_set:
            AcceleratorState._reset_state(reset_partial_state=True)


def make_accelerator(precision, **kwargs) -> tuple[Accelerator, str]:
    """An ``Accelerator`` computing in ``precision`` (``auto`` decided for the device it will use) and the
    precision chosen (``"fp32"`` or ``"bf16"``). bf16 is autocast over fp32 master weights: the optimizer, its
    state, gradients and the EMA stay fp32. ``auto`` defers to ``accelerate launch --mixed_precision`` (or an
    accelerate config) when one was given; fp16 is honoured there on CUDA only."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")  # set by `accelerate launch --mixed_precision` / config
    if precision == "auto" and launcher == "fp16" and device == "cuda":
        return Accelerator(mixed_precision="fp16", **kwargs), "fp16"
    # auto defers to an explicit launcher setting; an explicit precision in the config wins over it
    chosen = resolve_precision(launcher if precision == "auto" and launcher else precision, device, "precision")
    return Accelerator(mixed_precision=accelerate_mixed_precision(chosen), cpu=device == "cpu", **kwargs), chosen


def compile_module(module: torch.nn.Module, enabled: bool, log=None) -> torch.nn.Module:
    """``module``'s compute-heavy part compiled with inductor if ``enabled``, in place (parameters stay the same
    objects); inductor's cache is torch's (``TORCHINDUCTOR_CACHE_DIR``, else its temporary directory). Compilation
    happens at the first call: the loops log the first step's time apart from the steady-state throughput.

    What is compiled: a generator's transformer backbone (``model.backbone``), else the whole module. A generator's
    whole loss would recompile on every step (guards on Python state it changes: the RoPE table cache, the row-wise
    random draws)."""
    if not enabled:
        return module
    target = getattr(getattr(module, "model", module), "backbone", module)
    target.compile()
    if log is not None:
        log(f"compile: torch.compile (inductor) of {type(target).__name__}; the first step includes compilation")
    return module


class FirstStepTimer:
    """Logs how long the first step took (compilation, allocator warm-up) so throughput excludes it."""

    def __init__(self, log):
        self.log, self.start, self.done = log, time.time(), False

    def __call__(self, step: int) -> bool:
        """Call after each step; returns True right after the first step (restart throughput counters then)."""
        if self.done:
            return False
        self.done = True
        self.log({"step": step, "first_step_s": time.time() - self.start})
        return True
