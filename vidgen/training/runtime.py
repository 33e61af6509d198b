"""What both training loops set up around a run: process-global torch state, the accelerator and its precision,
and optional compilation.

A training call is a library call: it sets the thread count and deterministic flags it was configured with and puts
back what it found when it returns or raises (an in-process training test used to leave the rest of the test suite
on another thread count, which changed later results in the last bits).
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from vidgen.precision import accelerate_mixed_precision, resolve_precision


@contextlib.contextmanager
def torch_state(threads: int, deterministic: bool = False):
    """Run with ``threads`` intra-op threads (and deterministic kernels if asked); restore both afterwards."""
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
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


def make_accelerator(precision, log=None, **kwargs) -> tuple[Accelerator, str]:
    """An ``Accelerator`` computing in ``precision`` (``auto`` decided for the device it will use) and the
    precision chosen (``"fp32"`` or ``"bf16"``). bf16 is autocast over fp32 master weights: the optimizer, its
    state, gradients and the EMA stay fp32."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = resolve_precision(precision, device, "precision")
    acc = Accelerator(mixed_precision=accelerate_mixed_precision(chosen), cpu=device == "cpu", **kwargs)
    if log is not None:
        log(f"precision: {chosen}" + (" (auto)" if precision == "auto" else ""))
    return acc, chosen


def compile_module(module: torch.nn.Module, enabled: bool, log=None) -> torch.nn.Module:
    """``module`` compiled with inductor if ``enabled`` (in place, so its parameters stay the same objects); the
    compile cache goes to ``.cache/inductor`` unless ``TORCHINDUCTOR_CACHE_DIR`` is set. Compilation happens at the
    first call: the loops log the first step's time apart from the steady-state throughput."""
    if not enabled:
        return module
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(".cache/inductor").resolve()))
    module.compile()
    if log is not None:
        log("compile: torch.compile (inductor); the first step includes compilation")
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
