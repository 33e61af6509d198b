#!/usr/bin/env python
"""What continuing a run from its portable checkpoint costs: the loss after such a continuation against an
uninterrupted run of the same steps, on one small run.

Three runs of one tiny flow-generator config on the shipped flow VAE's latents (class-conditioned shapes):

* ``straight``: all ``--steps`` steps in one process;
* ``first``: the same run, killed (SIGKILL) once its portable checkpoint holds step ``--split``; its ``run_dir`` is
  then deleted, as on a machine that does not keep ``runs/``;
* ``continued``: the same command with an empty ``run_dir``: it continues from the portable checkpoint (bf16
  weights, AdamW moments from zero, ``portable_warmup`` steps of LR warm-up) to ``--steps``.

Every step draws the same clips and noise in both runs (``step_generator(seed, step)``, the data position kept), so
the training losses of a step are paired: their difference is what the continuation changed. Also compared: the
loss of each final (EMA) model on held-out clips of the test split, at fixed noise.

    python eval/portable_continuation.py                  # writes docs/results/portable_continuation.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from eval.results import source_provenance, write_result  # noqa: E402

SOURCE_FILES = ("vidgen/training/portable.py", "vidgen/training/trainer.py", "vidgen/training/checkpoint.py",
                "eval/portable_continuation.py")
TOKENIZER = "pretrained/shapes-flow/vae"


def overrides(args, work: Path) -> list[str]:
    return [f"video_tokenizer={TOKENIZER}", "model.generator=flow", "model.preset=tiny",
            "model.overrides={max_grid: [3, 8, 8]}", "data.conditioning=class", "data.num_frames=9", "data.size=32",
            f"data.num_clips={args.clips}", "data.batch=8", "data.encode_batch=32",
            f"data.cache_dir={work / 'cache'}", f"steps={args.steps}", "log_every=1", "sample_every=0",
            f"ckpt_every={args.steps}", "optim.lr=1e-3", "optim.warmup_steps=20", "ema_decay=0.99", "seed=0",
            f"threads={args.threads}", f"portable_every={args.split}", f"portable_warmup={args.warmup}"]


def train(args, work: Path, run: str, portable: str, stop_at: int | None = None) -> Path:
    """Run the trainer in a subprocess (``run_dir=work/run``); with ``stop_at``, SIGKILL it once its portable
    checkpoint holds that step."""
    from vidgen.training.portable import read_record
    cmd = [sys.executable, str(ROOT / "pipelines" / "train_generator.py"), *overrides(args, work),
           f"run_dir={work / run}", f"portable_dir={work / portable}"]
    with open(work / f"{run}.out", "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "TQDM_DISABLE": "1"})
        while proc.poll() is None:
            if stop_at is not None and (record := _record(read_record, work / portable)) and \
                    record["step"] >= stop_at:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return work / run
            time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"{run} failed ({proc.returncode}): see {work / f'{run}.out'}")
    return work / run


def _record(read, folder):
    try:
        return read(folder)
    except Exception:  # the file is replaced atomically, but a half-written temporary is never read
        return None


def losses(run_dir: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())
            if "loss" in m}


def held_out_loss(args, work: Path, folder: Path) -> float:
    """The mean flow loss of the model in ``folder`` on the test split's clips, at fixed noise draws."""
    import torch
    from vidgen.generators import FlowVideoTransformer
    from vidgen.tokenizers import load_tokenizer
    from vidgen.training import GeneratorTrainConfig, load_config
    from vidgen.training.data import step_generator
    from vidgen.training.encode_cache import load_or_encode
    cfg = load_config(None, overrides(args, work) + ["data.split=test", f"data.num_clips={args.eval_clips}"],
                      schema=GeneratorTrainConfig)
    model = FlowVideoTransformer.from_pretrained(folder).eval()
    data = load_or_encode(model, load_tokenizer(TOKENIZER), cfg.data, log=lambda *_: None)
    total, n = 0.0, 0
    with torch.no_grad():
        for draw in range(args.eval_draws):
            for start in range(0, len(data), 16):
                index = torch.arange(start, min(start + 16, len(data)))
                loss, _ = model.loss(data.x[index], data.conditioning(index, "class"), step_generator(99, draw))
                total, n = total + float(loss) * len(index), n + len(index)
    return total / n


def _mean(values) -> float:
    return round(statistics.fmean(values), 5)


def window(a: dict, b: dict, lo: int, hi: int) -> dict:
    steps = [s for s in range(lo, hi + 1) if s in a and s in b]
    diff = [b[s] - a[s] for s in steps]
    return {"steps": [lo, hi], "straight": _mean(a[s] for s in steps), "continued": _mean(b[s] for s in steps),
            "gap": _mean(diff),
            "gap_relative": round(statistics.fmean(diff) / statistics.fmean(a[s] for s in steps), 4),
            "gap_stderr": round(statistics.stdev(diff) / len(diff) ** 0.5, 5) if len(diff) > 1 else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--split", type=int, default=300, help="the step the run is interrupted at")
    parser.add_argument("--warmup", type=int, default=50, help="portable_warmup of the continuation")
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--eval-clips", type=int, default=128)
    parser.add_argument("--eval-draws", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="runs/portable_continuation")
    parser.add_argument("--out", default="docs/results/portable_continuation.json")
    parser.add_argument("--analyse-only", action="store_true",
                        help="read the runs already in --work (from an earlier call with the same settings) again")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    work = (ROOT / args.work).resolve()
    from vidgen.training.portable import read_record
    if args.analyse_only:
        straight, continued = work / "straight", work / "continued"
        at_split = json.loads((work / "at_split.json").read_text())
    else:
        for old in work.glob("*"):  # earlier runs; the pre-encoded clips (cache/, keyed by their settings) are kept
            if old.name != "cache":
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        work.mkdir(parents=True, exist_ok=True)
        straight = train(args, work, "straight", "portable_straight")
        train(args, work, "first", "portable", stop_at=args.split)
        at_split = read_record(work / "portable")
        (work / "at_split.json").write_text(json.dumps(at_split))
        shutil.rmtree(work / "first")  # another machine: runs/ is empty
        continued = train(args, work, "continued", "portable")
    log = (continued / "log.jsonl").read_text()
    if "continued from the portable checkpoint" not in log:
        raise SystemExit("the continuation did not start from the portable checkpoint")
    a, b = losses(straight), losses(continued)
    s, n, w = args.split, args.steps, args.warmup
    windows = {"first_step_after": window(a, b, s + 1, s + 1), "warmup": window(a, b, s + 1, s + w),
               "after_warmup": window(a, b, s + w + 1, n), "all_continued": window(a, b, s + 1, n),
               "last_50": window(a, b, max(s + 1, n - 49), n)}
    # the gap in steps of the uninterrupted run's progress at the end (its loss's slope over the last 150 steps,
    # from 50-step means): how many steps the continuation cost
    slope = (statistics.fmean(a[t] for t in range(n - 149, n - 99))
             - statistics.fmean(a[t] for t in range(n - 49, n + 1))) / 100
    windows["last_50"]["gap_in_steps_of_progress"] = round(windows["last_50"]["gap"] / slope, 1) if slope > 0 else None
    held = {"straight": round(held_out_loss(args, work, straight / "final"), 5),
            "continued": round(held_out_loss(args, work, continued / "final"), 5)}
    held["gap"] = round(held["continued"] - held["straight"], 5)
    held["gap_relative"] = round(held["gap"] / held["straight"], 4)
    record = read_record(work / "portable")
    import hashlib
    weights = {str(f.relative_to(ROOT)): hashlib.sha256(f.read_bytes()).hexdigest()
               for f in sorted([*straight.glob("final/*.safetensors"), *continued.glob("final/*.safetensors"),
                                *(work / "portable").glob("*.safetensors")])}
    source = source_provenance(SOURCE_FILES)
    payload = {
        "what": "training loss after continuing from a portable checkpoint (bf16 weights + EMA, AdamW moments from "
                "zero, LR warm-up) vs an uninterrupted run of the same steps; losses are paired step by step (same "
                "clips and noise)",
        "setup": {"overrides": overrides(args, work), "steps": n, "interrupted_at": s, "portable_warmup": w,
                  "eval": {"split": "test", "clips": args.eval_clips, "noise_draws": args.eval_draws,
                           "weights": "final (EMA)"},
                  "portable_bytes": record["weights_bytes"], "step_recorded_at_interrupt": at_split["step"]},
        "precision": record["segments"][-1]["precision"],
        "seconds_per_step": {"continued_segment": record["segments"][-1]["seconds_per_step"],
                             "first_segment": record["segments"][0]["seconds_per_step"]},
        "train_loss": windows, "held_out_loss": held,
        "commit": source["commit"], "dirty": source["dirty"], "weights_sha256": weights, "source": source,
    }
    path = write_result(ROOT / args.out, payload, threads=args.threads)
    print(json.dumps({"train_loss": windows, "held_out_loss": held}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
