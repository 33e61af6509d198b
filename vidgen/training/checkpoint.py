"""Atomic, resumable training checkpoints.

A checkpoint is a folder ``step_XXXXXXXX`` holding ``model.safetensors`` (+ the model's config via
``save_pretrained``), and ``state.pt`` with optimizer / scheduler / discriminator / EMA / RNG / data position
(loaded with ``torch.load(weights_only=True)``). It is written into a temporary folder and renamed into place,
so a crash mid-write never leaves a half checkpoint; ``latest`` names the newest complete one.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from vidgen.errors import ConfigError


def save_checkpoint(run_dir: Path, step: int, model, state: dict, keep: int = 2, keep_every: int = 0) -> Path:
    """Write ``step_XXXXXXXX`` atomically, then remove all but the newest ``keep`` (0: none removed); a checkpoint
    whose step is a multiple of ``keep_every`` (> 0) is never removed, so a run keeps the steps it is read at."""
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:08d}"
    tmp = ckpt_root / f".tmp_step_{step:08d}_{os.getpid()}"
    for stale in ckpt_root.glob(".tmp_step_*"):  # this write's folder and any left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
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
            if not (keep_every > 0 and old.name[5:].isdigit() and int(old.name[5:]) % keep_every == 0):
                shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(resume: str, run_dir: Path) -> Path | None:
    """``resume`` is a checkpoint folder, ``"auto"`` (latest in ``run_dir`` if any) or ``""`` (none)."""
    if not resume:
        return None
    if resume == "auto":
        root = Path(run_dir) / "checkpoints"
        latest = root / "latest"
        named = root / latest.read_text().strip() if latest.exists() else None
        if named is not None and _complete(named):
            return named
        # no pointer, or it names a folder a crash removed: the newest complete checkpoint (temporary folders of an
        # interrupted write are never candidates)
        complete = [p for p in sorted(root.glob("step_*")) if _complete(p)]
        return complete[-1] if complete else None
    path = Path(resume)
    if not (path / "state.pt").exists():
        raise ConfigError(f"resume: {path} is not a checkpoint folder (no state.pt)")
    return path


def _complete(path: Path) -> bool:
    return (path / "state.pt").is_file() and (path / "diffusion_pytorch_model.safetensors").is_file()


def load_state(path: Path) -> dict:
    return torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=True)


def load_trained(model_class, folder: str | Path, ema: bool = True):
    """A generator or tokenizer from a run's ``final`` folder or from one of its checkpoints, in eval mode. From a
    checkpoint with an EMA, the EMA weights (what ``final`` would hold had the run ended there) unless ``ema=False``;
    so a run can be evaluated part-way without stopping it."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder}: not a model folder (no config.json); pass a run's final/ or checkpoints/step_*")
    model = model_class.from_pretrained(folder)
    shadow = (load_state(folder).get("ema") or {}).get("shadow") if ema and (folder / "state.pt").is_file() else None
    if shadow:
        own = model.state_dict()
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in shadow.items()})
    return model.eval()


def training_state(step: int, opt, sched, sampler, config: dict, ema=None, extra: dict | None = None,
                   rewarm=None) -> dict:
    """What :func:`restore` reads back: the ``state.pt`` payload of a checkpoint (``extra`` as in ``restore``).
    ``rewarm``: the LR warm-up ``[first step, steps]`` of a run continued from a portable checkpoint
    (:mod:`vidgen.training.portable`), which the schedule's factor includes from then on."""
    state = {"step": step, "opt": opt.state_dict(), "sched": sched.state_dict(), "sampler": sampler.state_dict(),
             "config": config, "ema": ema.state_dict() if ema else None}
    state.update({key: obj.state_dict() if obj is not None else None for key, obj in (extra or {}).items()})
    if rewarm:
        state["rewarm"] = list(rewarm)
    return state


def restore(ckpt: Path, model, opt, sched, sampler, ema=None, extra: dict | None = None,
            state: dict | None = None) -> int:
    """Load a checkpoint written by :func:`save_checkpoint` into the training objects; returns its step.
    ``extra`` maps state keys to objects with ``load_state_dict`` (e.g. the discriminator and its optimizer);
    ``state``: its ``state.pt`` if already loaded."""
    from safetensors.torch import load_file

    state = load_state(ckpt) if state is None else state
    weights = load_file(str(Path(ckpt) / "diffusion_pytorch_model.safetensors"))
    check_same_model(ckpt, model, weights)
    model.load_state_dict(weights)
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    sampler.load_state_dict(state["sampler"])
    if ema is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
    for key, obj in (extra or {}).items():
        if obj is not None and state.get(key) is not None:
            obj.load_state_dict(state[key])
    return int(state["step"])


def check_same_model(ckpt: Path, model, weights: dict) -> None:
    """Refuse, by name, to load a checkpoint written by a run with another model: a ConfigError listing the model
    settings that differ (the checkpoint's ``config.json`` against this run's model) and the weights whose shapes
    differ or that this model does not have, in place of a state-dict size mismatch. Weights the checkpoint leaves
    out are the model's own business (a LoRA fine-tune saves its trained weights only)."""
    import json

    own = model.state_dict()
    shapes = [f"{k} {tuple(weights[k].shape)} in the checkpoint, {tuple(own[k].shape)} in this run"
              for k in sorted(weights) if k in own and tuple(weights[k].shape) != tuple(own[k].shape)]
    unexpected = sorted(set(weights) - set(own))
    if not (shapes or unexpected):
        return
    config = Path(ckpt) / "config.json"
    theirs = json.loads(config.read_text()) if config.is_file() else {}
    ours = json.loads(json.dumps(dict(getattr(model, "config", {}) or {}), default=str))  # tuples as JSON lists
    settings = [f"{k} ({theirs.get(k, 'unset')!r} in the checkpoint, {ours.get(k, 'unset')!r} in this run)"
                for k in sorted(set(theirs) | set(ours)) if not k.startswith("_") and theirs.get(k) != ours.get(k)]
    weights_differ = shapes[:5] + [f"{len(unexpected)} this model does not have, e.g. {unexpected[:3]}"] * \
        bool(unexpected)
    raise ConfigError(f"resume: the checkpoint {ckpt} was written by a run with another model; differing settings: "
                      f"{'; '.join(settings) or 'none'}; differing weights: {'; '.join(weights_differ)}. Resume with "
                      "the checkpoint's settings, or start a fresh run in another run_dir")


class RunLog:
    """Prints a message or a metrics dict (main process only); ``log.jsonl`` stays JSON Lines (messages as
    ``{"info": ...}``), every line stamped with the wall-clock ``time`` (so training time survives resumes)."""

    def __init__(self, run_dir: Path, is_main: bool):
        self.path, self.is_main = Path(run_dir) / "log.jsonl", is_main
        self.earlier = self.path.stat().st_size if is_main and self.path.is_file() else 0  # bytes of earlier runs

    def __call__(self, msg) -> None:
        import json
        import time

        from tqdm import tqdm
        if self.is_main:
            tqdm.write(msg if isinstance(msg, str) else json.dumps(msg))
            with open(self.path, "a") as fh:
                entry = {"info": msg} if isinstance(msg, str) else dict(msg)
                fh.write(json.dumps({**entry, "time": round(time.time(), 3)}) + "\n")

    def rewind(self, step: int) -> int:
        """Before a resume at ``step``: the lines earlier runs logged after the checkpoint (and a line torn by a kill)
        move to ``log.rewound.jsonl``, so that ``log.jsonl`` holds each step once, in order; this run's own lines
        stay. Returns how many lines moved."""
        import json
        if not self.is_main or not self.earlier:
            return 0
        text = self.path.read_bytes()
        lines, own = text[:self.earlier].decode(errors="replace").splitlines(keepends=True), text[self.earlier:]
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"  # a line torn by a kill: ends before this run's first line

        def after(line: str) -> bool:
            try:
                return json.loads(line).get("step", -1) > step
            except ValueError:
                return True  # torn by a kill: the last line, unreadable
        cut = next((i for i, line in enumerate(lines) if line.strip() and after(line)), len(lines))
        if cut < len(lines):
            with open(self.path.with_name("log.rewound.jsonl"), "a") as fh:
                fh.writelines(lines[cut:])
            kept = "".join(lines[:cut]).encode()
            partial = self.path.with_name("log.jsonl.partial")
            partial.write_bytes(kept + own)
            partial.replace(self.path)
            self.earlier = len(kept)
        return len(lines) - cut


def copy_weights(model, source, folder, ignore=frozenset()) -> None:
    """Load ``source``'s weights into ``model`` (``init_from``: a fresh optimizer and schedule, unlike a resume) if
    both are the same class with the same configuration, apart from the ``ignore`` keys (or differences the model's
    ``load_related`` bridges, e.g. the flow model's patch size, or a block-causal model from a flow one); else a
    ``ConfigError`` naming the differing keys."""
    def arch(m):
        return {k: json.dumps(v, default=str, sort_keys=True) for k, v in dict(m.config).items()
                if not k.startswith("_") and k not in ignore}
    mine, theirs = arch(model), arch(source)
    differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if differ and hasattr(model, "load_related") and model.load_related(source, differ):
        return  # e.g. a 1x1x1-patch flow model started from a 1x2x2 one, a block-causal one from a flow model
    if type(source) is not type(model) or differ:
        raise ConfigError(f"init_from: {folder} holds a {type(source).__name__} that differs from the model this run "
                          f"builds ({type(model).__name__}) in: {', '.join(differ) or 'class'}")
    model.load_state_dict(source.state_dict())
