#!/usr/bin/env python
"""Few-step distillation at real size on one GPU: the Wan2.1-T2V-1.3B architecture (random weights, bf16) at 480x832,
81 frames (latents 21x60x104, 32,760 tokens), text 512 tokens.

Rows (each: a first call apart, then the median of ``--rounds`` timed calls, peak GPU memory):
* ``distill_step``: one DMD2 step of :mod:`vidgen.distillation.diffusers_task`' loss: a LoRA student (rank
  ``--lora-rank``, fp32 adapter over the bf16 model), the teacher being the model with the adapter off (guided against
  a negative prompt, one pass per condition), a full fp32 critic; bf16 autocast, gradient checkpointing, AdamW;
* ``student_sample``: the student's ``--student-steps``-step sample at guidance 1 (one pass a step, FlowMatchEuler
  with stochastic re-noising), latents only;
* ``teacher_step``: one denoising step of the teacher at its defaults (classifier-free guidance: two passes); the
  50-step dense sample is estimated as 50 of them (``teacher_50_steps_s``), which the results file says.

    python eval/bench_distill_gpu.py --out docs/results/bench_distill_gpu.json   # GPU (experiments/device)
    python eval/bench_distill_gpu.py --quick --out /tmp/q.json                   # CPU smoke run: a tiny Wan
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402  (imported first: the run's start load)

import torch  # noqa: E402

from bench_diffusers_models import bench_device, build, device_info, latent_grid, timed  # noqa: E402

TEACHER_STEPS = 50  # Wan's default num_inference_steps


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU smoke run: a tiny Wan, a small grid")
    p.add_argument("--out", default="docs/results/bench_distill_gpu.json")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--text-tokens", type=int, default=512)
    p.add_argument("--lora-rank", type=int, default=32)
    p.add_argument("--student-steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=420.0)
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.height, args.width, args.text_tokens, args.lora_rank = 9, 64, 64, 16, 4
    return args


def main(argv=None) -> int:
    from vidgen.generators import Conditioning
    from vidgen.generators.flow_sampler import distillation_spec, student_scheduler
    from vidgen.distillation.diffusers_task import AdapterOffTeacher
    from vidgen.distillation.task import DistillationLoss, DistillConfig
    from vidgen.training.lora import add_lora
    args = parse_args(argv)
    start = time.time()
    device = bench_device(args.quick)
    if device is None:
        return 2
    gen, dtype = build(args, device)
    grid = latent_grid(args.frames, args.height, args.width)
    g = torch.Generator().manual_seed(0)
    text = lambda: Conditioning(torch.randn(1, args.text_tokens, gen.config.text_dim, generator=g)  # noqa: E731
                                .to(device, dtype))
    cond, negative = text(), text()
    spec = distillation_spec("dmd2", [args.student_steps], 5.0, shift=5.0)
    rows: list = []
    payload = {"model": "Wan2.1-T2V-1.3B architecture (random weights)" if not args.quick else "tiny Wan (--quick)",
               "video": [args.frames, args.height, args.width], "latent_grid": list(grid),
               "text_tokens": args.text_tokens, "distillation": spec, "lora_rank": args.lora_rank,
               "dtype": str(dtype).split(".")[-1], **device_info(device), "rows": rows}
    deadline = start + args.budget_s

    def save(row, fn):
        if time.time() > deadline:
            row["skipped"] = "time budget spent"
        else:
            try:
                row.update(timed(fn, device, args.rounds))
            except Exception as err:  # noqa: BLE001  (an out-of-memory is a result too)
                row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        rows.append(row)
        write_result(args.out, payload)
        print({k: v for k, v in row.items() if k != "times_s"}, flush=True)
        return row

    x = torch.randn(1, gen.in_channels, *grid, generator=g).to(device)
    t = torch.tensor([500.0], device=device)

    @torch.no_grad()
    def teacher_step():
        for c in (cond, negative):  # Wan guides with one pass per condition
            gen(x.to(dtype), t, c)
    teacher = save({"row": "teacher_step", "cfg_passes": 2}, teacher_step)
    if "s" in teacher:
        teacher["teacher_50_steps_s"] = TEACHER_STEPS * teacher["s"]
        teacher["note"] = f"the {TEACHER_STEPS}-step dense sample is estimated as {TEACHER_STEPS} timed steps"

    params = add_lora(gen, args.lora_rank)
    for p in params:
        p.data = p.data.float()  # fp32 adapter weights over the bf16 model
    gen.model.train().enable_gradient_checkpointing()
    critic = copy.deepcopy(gen).float().requires_grad_(True)
    loss_module = DistillationLoss(gen, AdapterOffTeacher(gen, negative), critic, None, spec, DistillConfig())
    opt = torch.optim.AdamW(params + list(critic.parameters()), lr=1e-5)

    def distill_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss, _ = loss_module(x, cond, torch.Generator().manual_seed(1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    save({"row": "distill_step", "method": "dmd2", "trainable_params_m":
          (sum(p.numel() for p in params) + sum(p.numel() for p in critic.parameters())) / 1e6}, distill_step)
    del critic, opt, loss_module
    gen.model.eval().disable_gradient_checkpointing()

    @torch.no_grad()
    def student_sample():
        scheduler = student_scheduler(spec)
        scheduler.set_timesteps(args.student_steps, device=device)
        z = x.to(dtype)
        for step in scheduler.timesteps:
            z = scheduler.step(gen(z, step[None], cond).sample, step, z, return_dict=False)[0]
    student = save({"row": "student_sample", "steps": args.student_steps, "guidance_scale": 1.0,
                    "evaluations": args.student_steps}, student_sample)
    if "s" in student and "teacher_50_steps_s" in teacher:
        student["speedup_vs_teacher_50_steps"] = teacher["teacher_50_steps_s"] / student["s"]
        write_result(args.out, payload)
    print(f"wrote {args.out} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
