"""Turning finished runs into shipped weights: run summaries for model cards and float16 storage.

``run_summary`` reads a run's ``log.jsonl`` (steps, wall time without the pauses between resumed segments, last
evaluation); ``run_stages`` follows ``init_from`` back through earlier runs, so a card can list every stage that
made a model; ``store_half`` halves the bytes a folder adds to git (loading upcasts to the model's float32).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from vidgen.errors import ConfigError

PAUSE_S = 300.0  # a gap this long between two log lines is a pause (resume, session break), not training: log lines
# come every 20-60 s while training


def run_summary(run_dir: str | Path) -> dict:
    """Steps, threads, wall time in minutes (sum of logged intervals shorter than ``PAUSE_S``), the model's size in
    millions of parameters as the trainer logged it, the last held-out PSNR and training loss, and the precision it
    trained in, of a run directory."""
    run_dir = Path(run_dir)
    log_file = run_dir / "log.jsonl"
    if not log_file.is_file():
        raise ConfigError(f"{run_dir}: no log.jsonl; is this a training run directory?")
    lines = [json.loads(s) for s in log_file.read_text().splitlines() if s.strip()]
    steps = [x for x in lines if "step" in x and "time" in x]
    wall, previous = 0.0, None
    for x in lines:
        if "time" not in x:
            continue
        if previous is not None and 0.0 <= x["time"] - previous < PAUSE_S:
            wall += x["time"] - previous
        previous = x["time"]
    evals = [x for x in steps if "eval_psnr" in x]
    losses = [x for x in steps if "loss" in x]
    sizes = [re.search(r"([0-9.]+) M parameters", x.get("info", "")) for x in lines]
    # the trainer logs the precision it chose; a log without that line is of a run in fp32
    chosen = [m.group(1) for x in lines if (m := re.match(r"precision: (\w+)", x.get("info", "")))]
    config_file = run_dir / "config.yaml"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    return {"run_dir": str(run_dir), "steps": max((x["step"] for x in steps), default=0),
            "threads": int(config.get("threads", 1)), "wall_time_min": wall / 60,
            "parameters_m": next((float(m.group(1)) for m in reversed(sizes) if m), None),
            "eval_psnr": evals[-1]["eval_psnr"] if evals else None,
            "final_loss": losses[-1]["loss"] if losses else None, "precision": chosen[-1] if chosen else "fp32",
            "config": config}


def run_stages(run_dir: str | Path) -> list[dict]:
    """``run_summary`` of ``run_dir`` and of every run it was initialised from (``init_from: <run>/final``),
    first stage first."""
    stages, seen = [], set()
    current: Path | None = Path(run_dir)
    while current is not None and current.resolve() not in seen:
        seen.add(current.resolve())
        summary = run_summary(current)
        stages.insert(0, summary)
        source = summary["config"].get("init_from", "")
        parent = Path(source).parent if source else None
        current = parent if parent is not None and (parent / "log.jsonl").is_file() else None
    return stages


def store_half(folder: str | Path) -> None:
    """Rewrite every float32 tensor of the safetensors files under ``folder`` as float16, metadata kept."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    for path in Path(folder).rglob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        save_file({k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}, str(path), metadata)
