"""Helpers for testing models on live weights.

Zero-initialised residual branches (DiT gates, the tokenizers' residual blocks) make a fresh model the identity, so
a guarantee tested on a fresh model can hold while the claim is false. :func:`perturb_weights` makes every layer
contribute before such a test.
"""
from __future__ import annotations

import torch


def perturb_weights(*models: torch.nn.Module, seed: int = 1, scale: float = 0.05):
    """Add ``scale * N(0, 1)`` noise (seeded) to every parameter of ``models``, in place; returns the first model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for model in models:
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return models[0] if models else None


def accelerate_launch(script, args: list[str], num_processes: int, timeout: float = 600, popen: bool = False):
    """Run ``script args`` under ``accelerate launch`` on CPU (``num_processes`` > 1: torchrun + gloo DDP) with one
    thread per process and a free rendezvous port; returns the finished ``subprocess.CompletedProcess``, or with
    ``popen`` the running ``subprocess.Popen`` in a session of its own (``os.killpg(p.pid, ...)`` reaches every
    process it started), output discarded."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:  # a free rendezvous port, so a busy 29500 cannot break the run
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    multi = ["--multi_gpu", "--num_processes", str(num_processes)] if num_processes > 1 else ["--num_processes", "1", "--cpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *multi, "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(port), str(script), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
