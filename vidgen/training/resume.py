"""What a run may change when it resumes from its ``run_dir``, checked on every process before the run writes anything.

A checkpoint goes on with the settings that wrote it: a resumed run may change how long it trains (``steps``,
``max_train_minutes``, ``optim.schedule_steps``) and how it runs (the keys a portable checkpoint lets differ:
threads, precision, cadences, ``run_dir`` / ``portable_dir`` / ``data.cache_dir``;
:data:`vidgen.training.portable.FREE_KEYS`), nothing else. The checkpoint's settings are read through this version's
config schema first, so a renamed key or value, or a key this version added at its default, is not a change. ``steps``
below the checkpoint's step, and ``resume=''`` over a ``run_dir`` that holds another run's checkpoints, are refused
too: the first would silently re-save ``final/``, the second would mix two runs' checkpoints.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from vidgen.errors import ConfigError, VidgenError
from vidgen.io import check_folder
from vidgen.training.checkpoint import find_checkpoint
from vidgen.training.config import _build
from vidgen.training.portable import FREE_KEYS, _flat

#: how long a run trains: a resumed run may change these
LENGTH_KEYS = ("steps", "max_train_minutes", "optim.schedule_steps")


def _settings(config: dict) -> dict:
    """The flattened settings a resume must keep: all but :data:`FREE_KEYS` (and keys under them), JSON values."""
    return {k: json.loads(json.dumps(v, default=str)) for k, v in _flat(config).items()
            if not any(k == f or k.startswith(f + ".") for f in (*FREE_KEYS, *LENGTH_KEYS))}


def _as_this_version(cfg, saved: dict) -> dict:
    """The checkpoint's config read through ``cfg``'s schema (renames, value aliases, defaults of keys it lacks); as
    written when this version cannot read it (a removed key), so its settings are still compared."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # renamed keys: the run's own config warned already
            return _build(type(cfg), saved, "").to_dict()
    except VidgenError:
        return saved


def check_run_dir(cfg) -> None:
    """Refuse (``ConfigError``) a resume that would change what the checkpoint in ``cfg.run_dir`` trains, end it
    before its own step, or a fresh start over another run's checkpoints; ``run_dir`` on a file is refused by name."""
    run_dir = check_folder(cfg.run_dir, "run_dir")
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
    theirs, mine = _settings(_as_this_version(cfg, state["config"])), _settings(cfg.to_dict())
    filled = getattr(type(cfg), "_filled", ())  # keys the task fills in when left empty: the checkpoint holds the value
    differ = [k for k in sorted(theirs.keys() & mine.keys())
              if theirs[k] != mine[k] and not (k in filled and mine[k] == "")]
    if differ:
        shown = "; ".join(f"{k} ({theirs[k]!r} in the checkpoint, {mine[k]!r} in this run)" for k in differ[:6])
        more = f" and {len(differ) - 6} more" if len(differ) > 6 else ""
        raise ConfigError(f"resume from {ckpt}: this run changes what it trains: {shown}{more}. Resume with the "
                          "checkpoint's settings (a resumed run may change steps, max_train_minutes, "
                          "optim.schedule_steps and how it runs), or start a new run in an empty run_dir "
                          f"(init_from={ckpt} starts it from these weights)")
