#!/usr/bin/env python
"""Train a tokenizer on the lent GPU until a deadline, resumable across calls; then, here, apply its ship rule.

    python3 experiments/device/tokenizer_gpu.py train --deadline-s 170 --out $OUT     # there (tokenizer_gpu.sh)
    python experiments/device/tokenizer_gpu.py judge /work/.device/<call>              # here, on what came back

``train`` (the GPU machine):
1. resume: the run folder an earlier call left on this warm machine (``runs/`` is kept between calls), else the
   parts a call returned and ``prepare_tokenizer_gpu.sh`` carried back (``.carry/tokenizer/resume``), else fresh;
2. plan: a fresh run first trains ``--probe-steps`` (inside the LR warm-up, so the probe is the same whatever the
   run's length), times a step from its log, and sets the run's length so that it ends by the deadline
   (``--total-steps`` sets it instead, for a run planned over several calls); the GAN starts at 3/4 of it; the plan
   is kept in ``plan.json`` for the calls that resume it;
3. trains to the plan's end or as far as the deadline allows (the trainer checkpoints every ``ckpt_every`` steps and
   at the end of each call's segment, and writes ``final`` with the EMA weights);
4. packs the run folder (its last checkpoint, final weights, log, config, plan; no samples) into ``run.tar.partNN``
   files of at most 15 MiB under ``--out`` (the device returns at most 8 files of 16 MiB).

``judge`` (here): joins the parts into ``runs/<run>``, measures the final weights and the shipped model with
``vidgen eval recon --data scenes-val`` (16 clips of 17 frames) at 64x64 and 128x128 on the CPU, and applies the
config's ship rule (PSNR above the shipped model's at both sizes, ST-LPIPS at most 0.005 above it at either),
writing ``experiments/results/tokenizer_gpu_judge.json``. The held-out clips are measured after the choice, by
``eval/bench_tokenizers.py``, and shipping is ``tokenizers/ship_tokenizer.py``.
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "experiments/configs/tokenizers/natural_vae_small_gpu.yaml"
SHIPPED = "pretrained/natural-vae-small"
PART_BYTES = 15 * 2 ** 20
RESERVE_S = 25  # the trainer's final folder and the packing, after the last step
# a GAN step's cost over a probe step (the probe has no discriminator): 2x assumed for the last quarter of the run,
# so the plan budgets 1.25 probe steps a step (a CPU dry run's GAN steps cost 1.3x; a plan that ends past the
# deadline loses the steps since the last checkpoint, and the next call resumes them)
PLAN_COST = 0.75 + 0.25 * 2.0


def run_dir(config: str, extra=()) -> Path:
    """The run folder: the config's, or a ``run_dir=`` among the overrides."""
    import yaml
    given = [e.split("=", 1)[1] for e in extra if e.startswith("run_dir=")]
    return ROOT / (given[-1] if given else yaml.safe_load((ROOT / config).read_text())["run_dir"])


def done_steps(run: Path) -> int:
    latest = run / "checkpoints" / "latest"
    return int(latest.read_text().strip().split("_")[-1]) if latest.is_file() else 0


def step_seconds(run: Path, after: int) -> float:
    """Seconds a step from the run's log, in its newest process (each logs its precision first): between its first
    logged step past ``after`` and its last."""
    entries = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    starts = [i for i, e in enumerate(entries) if str(e.get("info", "")).startswith("precision:")]
    entries = entries[starts[-1]:] if starts else entries
    steps = [(e["step"], e["time"]) for e in entries if "step" in e and "loss" in e and e["step"] > after]
    if len(steps) < 2:
        raise SystemExit(f"the log of {run} has too few logged steps past {after} to time a step")
    (s0, t0), (s1, t1) = steps[0], steps[-1]
    return (t1 - t0) / (s1 - s0)


def train_segment(config: str, steps: int, plan: dict, extra: list, limit_s: float, log: Path) -> int:
    cmd = [sys.executable, "tokenizers/train_tokenizer.py", "--config", config, f"steps={steps}",
           f"optim.schedule_steps={plan.get('total', steps)}", f"loss.gan_start={plan.get('gan_start', 1_000_000)}",
           *extra]
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            return subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=max(limit_s, 1)).returncode
        except subprocess.TimeoutExpired:
            fh.write(f"stopped at the deadline ({limit_s:.0f} s); the next call resumes from the last checkpoint\n")
            return 124


def unpack(parts_folder: Path, run: Path) -> bool:
    """The run folder from ``run.tar.partNN`` (joined in memory: the folder may be read-only); False if none."""
    parts = sorted(parts_folder.glob("run.tar.part*"))
    if not parts:
        return False
    data = b"".join(part.read_bytes() for part in parts)
    run.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        tar.extractall(run.parent, filter="data")
    return True


def restore(run: Path, carried: Path) -> str:
    if (run / "checkpoints" / "latest").is_file():
        return f"resumed from this machine's {run.name} at step {done_steps(run)}"
    if not unpack(carried, run):
        return "fresh run"
    return f"resumed from the carried parts at step {done_steps(run)}"


def pack(run: Path, out: Path) -> list:
    """The run folder (no samples) as gzip'd ``run.tar.partNN`` files of at most PART_BYTES."""
    tar_path = out / "run.tar"
    with tarfile.open(tar_path, "w:gz", compresslevel=6) as tar:
        tar.add(run, arcname=run.name, filter=lambda info: None if "/samples" in info.name else info)
    data, parts = tar_path.read_bytes(), []
    for i in range(0, len(data), PART_BYTES):
        parts.append(out / f"run.tar.part{i // PART_BYTES:02d}")
        parts[-1].write_bytes(data[i:i + PART_BYTES])
    tar_path.unlink()
    if len(parts) > 6:  # the device returns 8 files: these, the logs and the summary
        for part in parts:
            part.unlink()
        raise RuntimeError(f"the run packs into {len(parts)} parts of 15 MiB, more than the device returns")
    return parts


def train(args) -> int:
    start = time.time()
    deadline = start + args.deadline_s
    out, run = Path(args.out), run_dir(args.config, args.extra)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "train.log"
    summary = {"config": args.config, "resume": restore(run, ROOT / args.carried)}
    plan_file = run / "plan.json"
    plan = json.loads(plan_file.read_text()) if plan_file.is_file() else {}
    if not plan:
        launched = time.time()
        code = train_segment(args.config, args.probe_steps, {}, args.extra, deadline - time.time() - RESERVE_S, log)
        if code != 0:
            summary["error"] = f"the probe segment exited {code} (train.log)"
        else:
            step_s = step_seconds(run, after=min(50, args.probe_steps // 2))
            # a segment's start (imports, the model, rendering every clip) before its first step, paid again by the
            # next segment: the probe's whole time less its steps
            startup_s = max(0.0, time.time() - launched - args.probe_steps * step_s)
            left = deadline - time.time() - RESERVE_S - startup_s
            total = args.total_steps or max(args.probe_steps,
                                            args.probe_steps + int(left / (step_s * PLAN_COST)) // 50 * 50)
            plan = dict(total=total, gan_start=int(total * 0.75), step_s=round(step_s, 4),
                        startup_s=round(startup_s, 1), probe=args.probe_steps)
            plan_file.write_text(json.dumps(plan, indent=2))
    if plan:
        step_s = plan["step_s"]
        left = deadline - time.time() - RESERVE_S - plan.get("startup_s", 0.0)
        reach = done_steps(run) + int(left / (step_s * PLAN_COST))
        target = min(plan["total"], reach)
        if target > done_steps(run):
            code = train_segment(args.config, target, plan, args.extra, deadline - time.time() - RESERVE_S / 2, log)
            summary["segment_exit"] = code
    summary.update(plan=plan, steps_done=done_steps(run), complete=done_steps(run) >= plan.get("total", 1 << 60),
                   wall_s=round(time.time() - start, 1))
    if run.is_dir():
        try:
            summary["parts"] = [p.name for p in pack(run, out)]
        except RuntimeError as err:  # the summary still comes back, saying why the run did not
            summary["error"] = str(err)
    (out / "tokenizer_gpu.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=1))
    return 0 if "error" not in summary else 1


def recon(model: str, size: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "vidgen", "eval", "recon", model, "--data", "scenes-val", "--clips", "16",
           "--frames", "17", "--size", str(size), "--threads", "2", "--png-clips", "0", "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    result = json.loads((out / "results.json").read_text())
    lpips = next(k for k in result if "lpips" in k.lower() and isinstance(result[k], (int, float)))
    return {"psnr": result["psnr"], "perceptual": result[lpips], "perceptual_name": lpips}


def judge(args) -> int:
    run = run_dir(args.config)
    if run.exists():  # the returned run is the one judged, never an older copy here
        shutil.rmtree(run)
    if not unpack(Path(args.returned), run):
        raise SystemExit(f"no run.tar.partNN in {args.returned}")
    summary = f"unpacked from {args.returned}"
    final, plan = run / "final", json.loads((run / "plan.json").read_text())
    status = json.loads((run / "status.json").read_text())
    if status.get("state") != "complete" or status.get("step") != plan["total"] or not final.is_dir():
        raise SystemExit(f"{run} stopped at step {done_steps(run)} of its plan's {plan['total']} ({summary}): "
                         "resume it with another call (prepare_tokenizer_gpu.sh RESUME=...) before judging")
    rows = {}
    for name, model in (("candidate", str(final)), ("shipped", str(ROOT / SHIPPED))):
        for size in (64, 128):
            rows[f"{name}_{size}"] = recon(model, size, ROOT / "outputs" / "tokenizer_gpu_judge" / f"{name}_{size}")
    checks = {}
    for size in (64, 128):
        c, s = rows[f"candidate_{size}"], rows[f"shipped_{size}"]
        checks[f"psnr_above_shipped_{size}"] = c["psnr"] > s["psnr"]
        checks[f"perceptual_within_0.005_{size}"] = c["perceptual"] <= s["perceptual"] + 0.005
    result = {"run": str(run.relative_to(ROOT)), "steps": done_steps(run), "rule": "scenes-val, 16 clips of 17 "
              "frames: PSNR above the shipped model's at 64 and 128, ST-LPIPS at most 0.005 above it at either",
              "rows": rows, "checks": checks, "ships": all(checks.values())}
    path = Path(args.out)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="on the GPU machine: train until the deadline, pack the run")
    t.add_argument("--config", default=CONFIG)
    t.add_argument("--deadline-s", type=float, required=True, help="seconds from now the call must end by")
    t.add_argument("--out", required=True, help="the device's $OUT")
    t.add_argument("--carried", default=".carry/tokenizer/resume", help="the parts an earlier call returned")
    t.add_argument("--probe-steps", type=int, default=200)
    t.add_argument("--total-steps", type=int, default=0, help="the run's length (default: what fits this call)")
    t.add_argument("extra", nargs="*", help="config overrides for every segment, e.g. data.num_clips=64")
    j = sub.add_parser("judge", help="here: the ship rule on what came back")
    j.add_argument("returned", help="the folder the device's files came back to (run.tar.partNN)")
    j.add_argument("--config", default=CONFIG)
    j.add_argument("--out", default=str(ROOT / "experiments" / "results" / "tokenizer_gpu_judge.json"),
                   help="the judgement (a dry run's goes elsewhere, e.g. /tmp)")
    args = parser.parse_args(argv)
    return train(args) if args.command == "train" else judge(args)


if __name__ == "__main__":
    raise SystemExit(main())
