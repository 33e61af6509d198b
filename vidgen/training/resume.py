"""What a run may change when it resumes from its ``run_dir``, checked before the run writes anything.

A checkpoint goes on with the settings that wrote it: a resumed run may change how long it trains (``steps``,
``max_train_minutes``, ``optim.schedule_steps``) and how it runs (the keys a portable checkpoint lets differ:
threads, precision, cadences, paths; :data:`vidgen.training.portable.FREE_KEYS`), nothing else. ``steps`` below the
checkpoint's step, and ``resume=''`` over a ``run_dir`` that holds another run's checkpoints, are refused too: the
first would silently re-save ``final/``, the second would mix two runs' checkpoints.
"""
from __future__ import annotations

from pathlib import Path

import torch

from vidgen.errors import ConfigError
from vidgen.training.checkpoint import find_checkpoint
from vidgen.training.portable import hashed_settings

#: how long a run trains: a resumed run may change these
LENGTH_KEYS = ("steps", "max_train_minutes", "optim.schedule_steps")
#: checked by content elsewhere (the tokenizer's fingerprint), so a moved folder is not refused by its path
CONTENT_CHECKED = ("video_tokenizer",)


def check_run_dir(cfg) -> None:
    """Refuse (``ConfigError``) a resume that would change what the checkpoint in ``cfg.run_dir`` trains, end it
    before its own step, or a fresh start over another run's checkpoints."""
    run_dir = Path(cfg.run_dir)
    if not cfg.resume:
        earlier = sorted((run_dir / "checkpoints").glob("step_*")) if (run_dir / "checkpoints").is_dir() else []
        if earlier:
            raise ConfigError(f"run_dir={cfg.run_dir} holds an earlier run's checkpoints (the newest "
                              f"{earlier[-1].name}); resume='' would mix this run's with them: give another run_dir, "
                              f"delete {run_dir / 'checkpoints'}, or continue that run (resume=auto)")
        return
    ckpt = find_checkpoint(cfg.resume, run_dir)
    if ckpt is None:
        return
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True, mmap=True)
    step = int(state["step"])
    if step > cfg.steps:
        raise ConfigError(f"steps={cfg.steps} is below the step of the checkpoint it resumes from ({step}, {ckpt}): "
                          f"give steps >= {step} to train on, or another run_dir for a new run")
    if not state.get("config"):
        return
    theirs, mine = hashed_settings(state["config"]), hashed_settings(cfg.to_dict())
    # not compared: a key one version lacks, and an empty setting ("" = the default the task fills in, e.g. a
    # fine-tune's text encoder from its pipeline folder: the checkpoint holds the filled-in value)
    differ = [k for k in sorted(theirs.keys() & mine.keys()) if theirs[k] != mine[k] and mine[k] != ""
              and k not in LENGTH_KEYS and not k.startswith(CONTENT_CHECKED)]
    if differ:
        shown = "; ".join(f"{k} ({theirs[k]!r} in the checkpoint, {mine[k]!r} in this run)" for k in differ[:6])
        more = f" and {len(differ) - 6} more" if len(differ) > 6 else ""
        raise ConfigError(f"resume from {ckpt}: this run changes what it trains: {shown}{more}. Resume with the "
                          "checkpoint's settings (a resumed run may change steps, max_train_minutes, "
                          "optim.schedule_steps and how it runs), or start a new run in another run_dir")
