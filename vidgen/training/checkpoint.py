"""Atomic, resumable training checkpoints.

A checkpoint is a folder ``step_XXXXXXXX`` holding ``model.safetensors`` (+ the model's config via
``save_pretrained``), and ``state.pt`` with optimizer / scheduler / discriminator / EMA / RNG / data position
(loaded with ``torch.load(weights_only=True)``). It is written into a temporary folder and renamed into place,
so a crash mid-write never leaves a half checkpoint; ``latest`` names the newest complete one.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from vidgen.errors import ConfigError


def save_checkpoint(run_dir: Path, step: int, model, state: dict, keep: int = 2) -> Path:
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:08d}"
    tmp = ckpt_root / f".tmp_step_{step:08d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    torch.save(state, tmp / "state.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = ckpt_root / f".latest_{os.getpid()}"
    latest_tmp.write_text(final.name)
    os.replace(latest_tmp, ckpt_root / "latest")
    if keep > 0:
        for old in sorted(ckpt_root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(resume: str, run_dir: Path) -> Path | None:
    """``resume`` is a checkpoint folder, ``"auto"`` (latest in ``run_dir`` if any) or ``""`` (none)."""
    if not resume:
        return None
    if resume == "auto":
        latest = Path(run_dir) / "checkpoints" / "latest"
        return latest.parent / latest.read_text().strip() if latest.exists() else None
    path = Path(resume)
    if not (path / "state.pt").exists():
        raise ConfigError(f"resume: {path} is not a checkpoint folder (no state.pt)")
    return path


def load_state(path: Path) -> dict:
    return torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=True)
