"""The one training loop of vidgen: what a run does around its model's step, for tokenizers and generators alike.

:func:`run_training` owns the accelerator (``make_accelerator``, process-global torch state restored afterwards), the
optimizer (AdamW, or Muon for the hidden matrices: :mod:`vidgen.training.optimizers`) and warm-up + cosine schedule,
resume from a checkpoint, the EMA, atomic checkpoints, periodic hooks on the main process (evaluation, samples),
``log.jsonl`` and the progress bar, the final save, and the run's ``status.json`` (:func:`run_status`: whoever waits on
a run reads that, not its log). A kind of model
brings a :class:`TrainingTask`: its model, the module that computes its loss, one :meth:`~TrainingTask.step`
function, its hooks and what its final folder needs. So a fix to resume or checkpointing lands once for both.

Every random draw of a step comes from a generator seeded by ``(seed, step)`` (:func:`step_generator`) and the data
position is checkpointed: a resumed run is bit-identical to an uninterrupted one. With ``portable_dir`` set, a run also
keeps a small committed checkpoint (:mod:`vidgen.training.portable`) and, when ``run_dir`` has no checkpoint, continues
from it on any machine (weights from bf16, optimizer moments from zero, a recorded LR warm-up).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from vidgen.errors import UnsupportedError
from vidgen.io import make_folder
from vidgen.parallel import check_sequence_parallel
from vidgen.training.checkpoint import (RunLog, find_checkpoint, load_state, restore, save_checkpoint,
                                        training_state)
from vidgen.training.data import EpochSampler, step_generator
from vidgen.training.ema import EMA
from vidgen.training.optimizers import build_optimizer, check_resume
from vidgen.training.resume import check_run_dir
from vidgen.training.runtime import FirstStepTimer, compile_module, make_accelerator, torch_state
from vidgen.training.sequence_parallel import data_rank_world, sequence_parallel_run


#: ``run_dir/status.json``, rewritten atomically by the main process: ``{"state": "preparing"}`` when a run starts,
#: ``"training"`` once its task (model and data, e.g. a generator's pre-encoded clips) is ready, ``"complete"`` after
#: ``final/`` is saved; with ``step`` and ``time``
RUN_STATUS = "status.json"


def write_run_status(run_dir: str | Path, state: str, **info) -> None:
    path = Path(run_dir) / RUN_STATUS
    tmp = path.with_name(f".{RUN_STATUS}.{os.getpid()}")
    tmp.write_text(json.dumps({"state": state, **info, "time": round(time.time(), 3)}) + "\n")
    os.replace(tmp, path)


def run_status(run_dir: str | Path) -> str | None:
    """Where the run in ``run_dir`` is: ``"preparing"``, ``"training"`` (with the step of the last logged line),
    ``"complete"``, ``"failed"`` (an error ended it; the file holds the error), or None (never started by this
    trainer). A run killed part-way keeps the state it had reached."""
    path = Path(run_dir) / RUN_STATUS
    return json.loads(path.read_text())["state"] if path.is_file() else None


@dataclass
class StepOutput:
    """What one training step gives the loop. ``logs`` go into the metrics line after ``loss`` and ``tail_logs``
    after ``processes`` (tensors are read only when a line is logged); ``units`` counts what this process consumed
    (frames or tokens) for the throughput."""

    loss: torch.Tensor
    logs: dict = field(default_factory=dict)
    units: int = 0
    tail_logs: dict = field(default_factory=dict)


class TrainingTask:
    """What a kind of model brings to :func:`run_training`; subclasses set the attributes in their constructor.

    ``model`` is trained, averaged, checkpointed and saved; ``module`` computes its loss (one forward per step, so
    DDP/FSDP see one) and is compiled and prepared; ``params`` are the optimized parameters; ``num_items`` is the
    length of the epoch the sampler walks; ``extra_state`` maps checkpoint keys to further objects with
    ``state_dict`` (e.g. a discriminator); ``hooks`` are ``(every, fn(step, model))`` run on the main process with
    the EMA weights when there is an EMA (``every`` 0 = never)."""

    rate_key, rate_label, rate_format = "frames_per_s", "fps", "{:.1f}"
    description: str | None = None
    model: nn.Module
    module: nn.Module
    params: list
    num_items: int
    extra_state: Mapping = MappingProxyType({})
    hooks: Sequence = ()
    clipped_params: Sequence = ()  # parameters of ``params`` outside ``model`` clipped with it (REPA's projector)

    def make_sampler(self, seed: int, rank: int, world: int):
        """The run's data position (checkpointed through ``state_dict``): by default an :class:`EpochSampler` over
        ``num_items``."""
        return EpochSampler(self.num_items, seed, rank, world)

    def prepare(self, acc) -> None:
        """Prepare any further module and optimizer with ``acc`` (after the main ones)."""

    def muon_params(self) -> list:
        """The parameters of ``params`` that ``optim.optimizer: muon`` gives to Muon (the hidden matrices); a task
        that cannot name them refuses the option."""
        raise UnsupportedError(f"optim.optimizer=muon: {type(self).__name__} does not train with Muon (only generator "
                               "training names its hidden matrices); set optim.optimizer=adamw")

    def step(self, module: nn.Module, sampler: EpochSampler, step: int, g) -> StepOutput:
        """Draw this step's batch with ``sampler`` / ``g`` and compute the loss with ``module``."""
        raise NotImplementedError

    def after_optimizer_step(self, out: StepOutput) -> None:
        """Runs after the model's optimizer step (e.g. a discriminator update that fills ``out.logs``)."""

    def finish(self, final: nn.Module) -> dict:
        """Last changes to the final model before it is saved; returns entries for the final log line."""
        return {}


def lr_lambda(cfg, rewarm=None) -> Callable[[int], float]:
    """Linear warm-up over ``optim.warmup_steps``, then cosine decay to ``lr * optim.min_lr_ratio`` at
    ``optim.schedule_steps`` (default: ``steps``); times a second linear warm-up ``rewarm = [first step, steps]``
    after a continuation from a portable checkpoint."""
    if rewarm:
        from vidgen.training.portable import rewarmed
        return rewarmed(lr_lambda(cfg), rewarm)
    warm, floor = cfg.optim.warmup_steps, cfg.optim.min_lr_ratio
    total = max(cfg.optim.schedule_steps or cfg.steps, 1)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def optimizer_step(acc, loss, model, opt, sched, grad_clip: float, ema=None, extra_params=()):
    """Backward, clip, step the optimizer and LR schedule, update the EMA; returns the gradient norm. The norm is
    clipped and reported over the model's parameters and ``extra_params`` (trained parameters outside the model,
    e.g. REPA's projector), as one vector."""
    opt.zero_grad(set_to_none=True)
    acc.backward(loss)
    gnorm = acc.clip_grad_norm_([*model.parameters(), *extra_params] if extra_params else model.parameters(), grad_clip)
    opt.step()
    sched.step()
    if ema is not None:
        ema.update(model)
    return gnorm


def _num(value) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _logged(logs: dict) -> dict:
    return {k: _num(v) if isinstance(v, torch.Tensor) else v for k, v in logs.items()}


def start_run(cfg, **accelerator_kwargs):
    """The accelerator, the precision it computes in and the run's log; the main process creates ``run_dir`` and
    writes the resolved configuration to ``run_dir/config.yaml`` (JSON, which YAML reads)."""
    acc, chosen = make_accelerator(cfg.precision, **accelerator_kwargs)
    run_dir = Path(cfg.run_dir)
    log = RunLog(run_dir, acc.is_main_process)
    if acc.is_main_process:
        make_folder(run_dir, "run_dir")
        (run_dir / "config.yaml").write_text(json.dumps(cfg.to_dict(), indent=2))
        write_run_status(run_dir, "preparing")
    log(f"precision: {chosen} (precision={cfg.precision})")
    return acc, log


def run_training(cfg, make_task: Callable, **accelerator_kwargs) -> dict:
    """Train the task ``make_task(acc, log, sp)`` builds for ``cfg`` (a :class:`~vidgen.training.TrainConfig` or
    :class:`~vidgen.training.GeneratorTrainConfig`); checkpoints go to ``run_dir/checkpoints`` and the model (EMA
    weights if any) to ``run_dir/final``. Returns the last logged metrics. Threads and deterministic flags are set
    for the run and restored afterwards. ``sp`` is the run's :class:`~vidgen.parallel.SequenceParallel` (None
    for ``sp_size`` 1): the task passes it to each loss call (``loss(..., sp=sp)``), and a task that loads its own
    data takes the data-parallel rank and size from :func:`~vidgen.training.sequence_parallel.data_rank_world`
    ``(acc, sp)``."""
    check_run_dir(cfg)  # before start_run writes config.yaml: a refused resume leaves run_dir as it was
    with torch_state(cfg.threads, cfg.deterministic):
        acc, log = start_run(cfg, **accelerator_kwargs)
        try:
            with sequence_parallel_run(cfg.sp_size) as sp:
                if sp is not None:
                    log(f"sequence parallel: {sp.size} processes per clip, {sp.data_world} data-parallel groups")
                return _loop(cfg, acc, log, make_task(acc, log, sp), sp)
        except Exception as err:
            if acc.is_main_process:
                write_run_status(cfg.run_dir, "failed", error=f"{type(err).__name__}: {err}"[:2000])
            raise


def time_is_up(acc, minutes: float, seconds: float) -> bool:
    """Whether ``seconds`` of steps reached ``minutes`` (0: no limit); every process takes the slowest's answer, so
    all stop at the same step."""
    if not minutes:
        return False
    up = torch.tensor(float(seconds >= 60 * minutes), device=acc.device)
    if acc.num_processes > 1:
        up = acc.reduce(up, reduction="max")
    return bool(up.item())


def _loop(cfg, acc, log, task: TrainingTask, sp) -> dict:
    run_dir, is_main = Path(cfg.run_dir), acc.is_main_process
    model = task.model
    if sp is not None:  # refused by name before anything runs: a model whose attention cannot be split
        check_sequence_parallel(model, sp)
    rank, world = data_rank_world(acc, sp)  # every rank of a sequence-parallel group takes the same clips and draws
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    opt = build_optimizer(cfg, task, acc, log)  # AdamW, or Muon + AdamW as one optimizer (optim.optimizer)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    sampler = task.make_sampler(cfg.seed, rank, world)
    batch, share = getattr(cfg.data, "batch", None) or getattr(cfg.data, "video_batch", 0), task.num_items // world
    if batch > share:  # allowed (a tiny folder trains), but said: each step sees some clips twice
        log(f"data: batches of {batch} clips from {share} clips per process, so a batch repeats clips")
    step, rewarm, portable = 0, None, None
    if cfg.portable_dir:
        from vidgen.training.portable import PortableCheckpoint
        portable = PortableCheckpoint(cfg, model, ema, "fp32" if acc.mixed_precision == "no" else acc.mixed_precision)
        portable.check_folder()  # another run's portable checkpoint is never overwritten
    ckpt = find_checkpoint(cfg.resume, run_dir)
    if ckpt is not None:  # run_dir's checkpoint first: the exact resume
        state = load_state(ckpt)
        check_resume(state.get("config"), cfg)
        step = restore(ckpt, model, opt, sched, sampler, ema, task.extra_state, state=state)
        rewarm = state.get("rewarm")
        moved = log.rewind(step)
        log(f"resumed from {ckpt} at step {step}" + (f" ({moved} lines logged after it moved to log.rewound.jsonl)"
                                                       if moved else ""))
        if portable is not None:
            portable.start(step, rewarm)
    elif portable is not None and cfg.resume == "auto" and portable.continue_from(model, ema, sampler, log) is not None:
        step, rewarm = portable.segment["from_step"], portable.rewarm
        log(f"continued from the portable checkpoint {cfg.portable_dir} at step {step} (weights from bf16, optimizer "
            f"moments from zero, LR warm-up {rewarm or 'none'}; not carried: "
            f"{', '.join(task.extra_state) or 'nothing else'})")
    elif portable is not None:
        portable.start(step)
    if rewarm:  # the schedule's factor from here on; after a continuation the LR is set for its step
        sched.lr_lambdas = [lr_lambda(cfg, rewarm) for _ in sched.lr_lambdas]
        if ckpt is None:
            sched.last_epoch = step
            for group, base, f in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
                group["lr"] = base * f(step)
            sched._last_lr = [group["lr"] for group in opt.param_groups]
    # the LR schedule is not prepared: accelerate would step it once per process per step (a 2-process run would
    # decay twice as fast). It counts optimizer steps.
    module, opt = acc.prepare(compile_module(task.module, cfg.compile, log), opt)
    task.prepare(acc)
    if is_main:
        write_run_status(run_dir, "training", step=step)

    bar = tqdm(total=cfg.steps, initial=step, disable=not is_main, dynamic_ncols=True, desc=task.description)
    metrics: dict = {}
    t_last, units = time.time(), 0
    first_step = FirstStepTimer(log)
    trained_s = 0.0  # this segment's seconds in steps, for max_train_minutes
    try:
        while step < cfg.steps:
            t_step = time.perf_counter()
            out = task.step(module, sampler, step, step_generator(cfg.seed, step, rank, world))
            gnorm = optimizer_step(acc, out.loss, model, opt, sched, cfg.optim.grad_clip, ema, task.clipped_params)
            task.after_optimizer_step(out)
            step_s = time.perf_counter() - t_step
            step, trained_s = step + 1, trained_s + step_s
            units += out.units * world
            bar.update(1)
            if first_step(step):  # throughput from here on excludes compilation and warm-up
                t_last, units = time.time(), 0
            elif portable is not None:
                portable.timed(step_s)
            if step % cfg.log_every == 0 or step == cfg.steps:
                rate = units / (time.time() - t_last) if units else None  # None: no timed step yet (the first)
                metrics = {"step": step, "loss": _num(out.loss), **_logged(out.logs), "grad_norm": _num(gnorm),
                           "lr": sched.get_last_lr()[0], task.rate_key: rate,
                           "processes": acc.num_processes, **_logged(out.tail_logs)}
                bar.set_postfix({"loss": f"{metrics['loss']:.4f}",
                                 task.rate_label: "-" if rate is None else task.rate_format.format(rate)})
                log(metrics)
                if is_main:
                    write_run_status(run_dir, "training", step=step)
                t_last, units = time.time(), 0
            due = [fn for every, fn in task.hooks if every and (step % every == 0 or step == cfg.steps)]
            if is_main and due:
                current = ema.copy_model(model) if ema else model
                for fn in due:
                    fn(step, current)
            out_of_time = time_is_up(acc, cfg.max_train_minutes, trained_s)
            if step % cfg.ckpt_every == 0 or step == cfg.steps or out_of_time:
                acc.wait_for_everyone()
                if is_main:
                    state = training_state(step, opt, sched, sampler, cfg.to_dict(), ema, task.extra_state, rewarm)
                    save_checkpoint(run_dir, step, model, state, cfg.keep_checkpoints, cfg.keep_every)
            if portable is not None and (portable.due(step) or out_of_time):
                acc.wait_for_everyone()
                if is_main:
                    portable.save(step, model, ema, sampler, not_carried=task.extra_state)
            if out_of_time:
                log(f"stopped at step {step} of {cfg.steps}: the steps took {trained_s / 60:.1f} minutes "
                    f"(max_train_minutes={cfg.max_train_minutes})")
                break
    finally:
        bar.close()
        getattr(sampler, "close", lambda: None)()  # e.g. a reader thread, also when a step raises
    acc.wait_for_everyone()
    if is_main:
        final = ema.copy_model(model) if ema else model
        entries = task.finish(final)
        final.save_pretrained(run_dir / "final", safe_serialization=True)
        log({"final": str(run_dir / "final"), **entries})
        write_run_status(run_dir, "complete", step=step)
    return metrics
