"""A portable checkpoint: what a run needs to be continued on another machine, small enough to commit to git.

``runs/`` holds a run's full checkpoints (:mod:`vidgen.training.checkpoint`: fp32 weights, optimizer moments, the
exact resume). A run with ``portable_dir`` set also keeps one folder, replaced in place every ``portable_every``
steps (never one file per step):

* ``weights.safetensors``: the model's and the EMA's weights in bf16 (``model/<key>``, ``ema/<key>``; integer
  buffers as they are), at most :data:`MAX_BYTES` in all, with the record in its metadata. It is the one file a
  continuation reads, written to a temporary name and renamed: a crash never leaves weights of one step with the
  record of another. ``portable_ema: false`` leaves the EMA out, for a model whose weights and EMA would not both
  fit: a continuation then restarts the average from the weights, and records that it did.
* ``config.json``: the model's configuration (a diffusers-style model's), so a run whose starting folder is not on
  the next machine (a distillation's ``distill.student``) can still build the model the weights fill.
* ``state.json``: the same record, readable in a diff: the step, the data position (the sampler's state; every
  random draw of a step comes from ``step_generator(seed, step)``, so the seed and the step are the rest of the RNG
  state), the hash of the settings that must not change (:func:`config_hash`, with those settings), the commit,
  and one entry per machine the run trained on (``segments``: its CPU, threads, precision and measured seconds
  per step).

A run that finds no checkpoint in ``run_dir/checkpoints`` continues from this folder if it exists
(:func:`continue_from`): the weights from bf16, the optimizer rebuilt with zero moments, and the learning
rate warmed up again over ``portable_warmup`` steps (recorded in the record and in every later checkpoint). A
checkpoint in ``runs/`` takes precedence: there the resume stays bit-identical.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from vidgen.errors import ConfigError, UnsupportedError
from vidgen.precision import cpu_description
from vidgen.training.config import OptimConfig
from vidgen.training.repa import RepaConfig
from vidgen.training.routing import RoutingConfig

#: the most the weights file of a portable checkpoint may hold (16 MB): it is committed to git
MAX_BYTES = 16_000_000
WEIGHTS, RECORD, CONFIG = "weights.safetensors", "state.json", "config.json"
FORMAT = 1
#: settings that may differ between the machines a run continues on (how it runs, not what it trains)
FREE_KEYS = frozenset({
    "run_dir", "resume", "threads", "precision", "mixed_precision", "compile", "deterministic", "sp_size",
    "log_every", "sample_every", "eval_every", "ckpt_every", "keep_checkpoints", "keep_every", "portable_dir",
    "portable_every", "portable_warmup", "portable_ema", "sample", "data.cache_dir", "data.encode_batch",
    "data.render_workers",
})


def _defaults(section: str, cls, names=None) -> dict:
    return {f"{section}.{f.name}": f.default for f in dataclasses.fields(cls) if names is None or f.name in names}


#: settings left out of the hash while they hold their default values (options that leave training as it is; a record
#: without them matches a run that keeps their defaults): the optimizer choice and Muon's settings, token routing,
#: representation alignment, the causal context swap
NEUTRAL = {**_defaults("optim", OptimConfig, ("optimizer", "muon_lr", "muon_momentum", "muon_weight_decay",
                                              "muon_adjust_lr")),
           **_defaults("routing", RoutingConfig), **_defaults("repa", RepaConfig), "context_swap": 0.0,
           "data.motion_frames": None}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = prefix + key
        if isinstance(value, dict) and value and key != "overrides":
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def hashed_settings(config: dict) -> dict:
    """The flattened settings :func:`config_hash` covers: all but :data:`FREE_KEYS` (and keys under them) and
    those at their :data:`NEUTRAL` value."""
    flat = _flat(config)
    free = tuple(FREE_KEYS)
    return {k: json.loads(json.dumps(v, default=str)) for k, v in sorted(flat.items())
            if not any(k == f or k.startswith(f + ".") for f in free) and not (k in NEUTRAL and v == NEUTRAL[k])}


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(hashed_settings(config), sort_keys=True).encode()).hexdigest()[:16]


def _tensors(model, ema) -> dict[str, torch.Tensor]:
    def low(v):
        v = v.detach().cpu()
        return v.to(torch.bfloat16).contiguous() if v.is_floating_point() else v.contiguous()
    out = {f"model/{k}": low(v) for k, v in model.state_dict().items()}
    if ema is not None:
        out.update({f"ema/{k}": low(v) for k, v in ema.shadow.items()})
    return out


def portable_bytes(model, ema=None) -> int:
    """What the weights file's tensors take: floating-point ones in bf16, the others as they are."""
    total = 0
    for v in list(model.state_dict().values()) + (list(ema.shadow.values()) if ema is not None else []):
        total += v.numel() * (2 if v.is_floating_point() else v.element_size())
    return total


def check_size(folder: str | Path, model, ema=None, limit: int | None = None) -> int:
    """Refuse (``ConfigError``) a portable checkpoint whose weights would exceed ``limit`` (:data:`MAX_BYTES`)."""
    limit = MAX_BYTES if limit is None else limit
    size = portable_bytes(model, ema)
    if size > limit:
        what = "model + EMA" if ema is not None else "model"
        raise ConfigError(f"portable_dir={folder}: the {what} weights in bf16 take {size / 1e6:.1f} MB, over the "
                          f"{limit / 1e6:.0f} MB a committed portable checkpoint may hold; "
                          + ("set portable_ema: false (the model's weights alone take "
                             f"{portable_bytes(model) / 1e6:.1f} MB; a continuation restarts the EMA from them), "
                             if ema is not None else "") + "unset portable_dir, or train a smaller model")
    return size


def source_commit() -> dict:
    """The git commit of the code that runs, and whether tracked files differ from it (None outside a checkout)."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": os.environ.get("VIDGEN_SOURCE_COMMIT") or None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def read_record(folder: str | Path) -> dict | None:
    """The record stored with the weights in ``folder`` (None if there is no portable checkpoint there)."""
    path = Path(folder) / WEIGHTS
    if not path.is_file():
        return None
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for a truncated or foreign file
        raise ConfigError(f"portable_dir={folder}: {WEIGHTS} cannot be read ({err})") from err
    if "vidgen_portable" not in meta:
        raise ConfigError(f"portable_dir={folder}: {WEIGHTS} is not a vidgen portable checkpoint (no record in its "
                          "metadata)")
    return json.loads(meta["vidgen_portable"])


def save(folder: str | Path, model, ema, record: dict) -> Path:
    """Write the weights (bf16) with ``record`` in their metadata, then ``state.json``, each replaced atomically."""
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = _tensors(model, ema)
    tmp = folder / f".{WEIGHTS}.{os.getpid()}.tmp"
    save_file(tensors, str(tmp), metadata={"vidgen_portable": json.dumps(record, sort_keys=True)})
    os.replace(tmp, folder / WEIGHTS)
    texts = {RECORD: json.dumps(record, indent=2, sort_keys=True) + "\n"}
    if hasattr(model, "to_json_string"):
        texts[CONFIG] = model.to_json_string()
    for name, text in texts.items():
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, folder / name)
    return folder / WEIGHTS


def _jsonable(state, where: str):
    try:
        return json.loads(json.dumps(state))
    except TypeError as err:
        raise UnsupportedError(f"portable_dir: {where} is not JSON ({err}); this data source cannot be continued "
                               "from a portable checkpoint") from err


class PortableCheckpoint:
    """The portable checkpoint of one training run (``cfg.portable_dir``): its record across saves and machines."""

    def __init__(self, cfg, model, ema, precision: str, log=print):
        self.folder, self.cfg, self.log = Path(cfg.portable_dir), cfg, log
        self.every = cfg.portable_every or cfg.ckpt_every
        self.kept_ema = ema is not None and cfg.portable_ema  # whether the EMA travels
        self.size = check_size(self.folder, model, ema if self.kept_ema else None)
        self.config = cfg.to_dict()
        self.hash = config_hash(self.config)
        self.source = source_commit()
        self.rewarm: list | None = None  # [first step, steps] of the warm-up after a continuation
        self.segments: list = []
        self.segment = {"cpu": cpu_description(), "threads": cfg.threads, "precision": precision,
                        "host": platform.node(),
                        "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.step_times: list[float] = []

    def record(self) -> dict | None:
        return read_record(self.folder)

    def check_folder(self) -> None:
        """Refuse to overwrite a portable checkpoint another run (other settings) wrote."""
        record = self.record()
        if record is not None:
            self.check(record)

    def check(self, record: dict) -> None:
        """Refuse (``ConfigError``) a record written by a run with other settings, naming them."""
        if record.get("format") != FORMAT:
            raise ConfigError(f"portable_dir={self.folder}: format {record.get('format')!r}, this vidgen reads "
                              f"{FORMAT}")
        if record["config_hash"] != self.hash:
            theirs, mine = record.get("settings", {}), hashed_settings(self.config)
            differ = sorted(k for k in theirs.keys() | mine.keys() if k not in theirs or k not in mine
                            or theirs[k] != mine[k])
            shown = "; ".join(f"{k}: {theirs.get(k, '(unset)')!r} there, {mine.get(k, '(unset)')!r} here"
                              for k in differ[:6])
            raise ConfigError(f"portable_dir={self.folder}: written by a run with other settings ({shown or 'hash '}"
                              f"{' ...' if len(differ) > 6 else ''}); continue it with the config that wrote it, or "
                              "point portable_dir at a new folder")

    def start(self, step: int, rewarm=None) -> None:
        """Called once the run knows its first step (and, after a resume from ``runs/``, the warm-up that run
        recorded): keeps the segments of the machines the run trained on before."""
        self.rewarm = list(rewarm) if rewarm else None
        record = self.record()
        if record is not None and record.get("config_hash") == self.hash:
            self.segments = [s for s in record.get("segments", []) if s["to_step"] <= step]
        self.segment["from_step"] = step

    def continue_from(self, model, ema, sampler, log=print) -> int | None:
        """Load the portable checkpoint into ``model``, ``ema`` and ``sampler`` if there is one; returns its step
        (None if there is none). The optimizer's moments are not in it: the caller starts them at zero and warms
        the learning rate up again over ``cfg.portable_warmup`` steps (:attr:`rewarm`)."""
        from safetensors.torch import load_file
        record = self.record()
        if record is None:
            return None
        self.check(record)
        tensors = load_file(str(self.folder / WEIGHTS))
        own = model.state_dict()
        theirs = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        if theirs.keys() != own.keys():
            missing, extra = sorted(own.keys() - theirs.keys()), sorted(theirs.keys() - own.keys())
            raise ConfigError(f"portable_dir={self.folder}: its weights do not fit this model (missing "
                              f"{missing[:4]}, unexpected {extra[:4]})")
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in theirs.items()})
        if ema is not None:
            shadow = {k[len("ema/"):]: v for k, v in tensors.items() if k.startswith("ema/")}
            if shadow.keys() == ema.shadow.keys():
                ema.shadow = {k: v.to(ema.shadow[k].dtype).to(ema.shadow[k].device) for k, v in shadow.items()}
            else:  # written without an EMA (portable_ema: false): the average restarts from the weights
                log(f"portable checkpoint {self.folder} holds no EMA: the EMA restarts from its weights, its decay "
                    "warmed up again")
                ema.restart(model)
                self.segment["ema_restarted_at"] = int(record["step"])
        sampler.load_state_dict(record["data"]["sampler"])
        step = int(record["step"])
        self.start(step, [step, int(self.cfg.portable_warmup)] if self.cfg.portable_warmup > 0 else None)
        self.segment["continued_from"] = {"step": step, "cpu": (record.get("segments") or [{}])[-1].get("cpu"),
                                          "commit": record.get("source", {}).get("commit")}
        return step

    def timed(self, seconds: float) -> None:
        """One step's compute time (the first step of a run, which includes warm-up and compilation, is not
        passed in). The record keeps their median: a step during which the process was paused (or shared the
        machine for a while) does not move it."""
        self.step_times.append(float(seconds))

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.cfg.steps

    def save(self, step: int, model, ema, sampler, not_carried=()) -> Path:
        times = sorted(self.step_times)
        seg = dict(self.segment, to_step=step, timed_steps=len(times), seconds_per_step_is="median",
                   seconds_per_step=round(times[len(times) // 2], 4) if times else None)
        record = {
            "format": FORMAT, "step": step, "steps": self.cfg.steps,
            "data": {"sampler": _jsonable(sampler.state_dict(), "the sampler's state"), "seed": self.cfg.seed,
                     "rng": "every random draw of step s comes from step_generator(seed, s): seed and step are the "
                            "whole RNG state"},
            "config_hash": self.hash, "settings": hashed_settings(self.config), "source": self.source,
            "rewarm": self.rewarm, "warmup_note": "continuing starts the optimizer's moments at zero and warms the "
                                                  "learning rate up again over portable_warmup steps",
            "not_carried": sorted(not_carried) + ([] if self.kept_ema or ema is None else ["ema"]),
            "weights_dtype": "bfloat16", "weights_bytes": self.size,
            "segments": self.segments + [seg], "torch": torch.__version__,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        return save(self.folder, model, ema if self.kept_ema else None, record)


def rewarmed(base, rewarm):
    """The LR factor ``base`` with a linear warm-up of ``rewarm = [first, steps]`` over steps ``first ...``."""
    if not rewarm:
        return base
    first, steps = int(rewarm[0]), max(1, int(rewarm[1]))

    def f(step: int) -> float:
        scale = 1.0 if step < first else min(1.0, (step - first + 1) / steps)
        return base(step) * scale
    return f
