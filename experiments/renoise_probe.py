"""Where does a generator lose a shape? Real clips noised (flow) or re-masked (masked) part-way, then finished by
the shipped sampler.

    python experiments/renoise_probe.py                    # shipped flow -> experiments/results/renoise_probe_flow.json
    python experiments/renoise_probe.py --pipeline masked  # -> experiments/results/renoise_probe_masked.json
    python experiments/renoise_probe.py --levels 0.4,1.0 --prompts 32 --pretrained /tmp/candidate

For each tuning prompt (seen pairs, no caption of the evaluation set) a real clip with its attributes is encoded by
the pipeline's VAE, noised to level s (x_s = (1 - s) x0 + s noise, on the sampler's own step grid) and denoised from
there by the pipeline's steps and guidance under its own caption, then decoded and read by the attribute scorer.
s = 0 is the VAE's round trip (the ceiling); s = 1 is plain generation from noise. Shape and motion kept per level
and per shape say at which noise levels the model decides what it draws: a hexagon kept from s = 0.6 but lost from
s = 0.8 is decided in the high-noise steps, where the layout is drawn, not in the low-noise ones that refine edges.
For masked, level r re-masks a random fraction r of the clip's token positions and the pipeline (its own steps,
guidance and re-masking, ``latents`` with mask ids) fills them in. ``caption_probe.py`` asks the other half of the
question: does the model's loss tell the shapes apart at all.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from vidgen.data.shapes import SHAPES
from vidgen.demo.prompts import real_clip, tuning_prompts
from vidgen.demo.run import NUM_FRAMES, SIZE, load_pipelines
from vidgen.generators.flow import generate_latents
from vidgen.metrics.adherence import AttributeScorer
from vidgen.data.common import make_generator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))  # eval/results.py
from results import write_result  # noqa: E402


class FlowMatchFromLevel:
    """The pipeline's scheduler started part-way: only the steps at or below noise level ``s`` are run."""

    def __init__(self, scheduler, level: float):
        self.inner, self.level, self.init_noise_sigma, self.config = scheduler, level, 1.0, scheduler.config

    def set_timesteps(self, num_inference_steps: int, device=None) -> float:
        self.inner.set_timesteps(num_inference_steps, device=device)
        sigmas = self.inner.sigmas[:-1]  # the last entry is the end point, 0
        first = int((sigmas > self.level + 1e-6).sum())  # the first step whose sigma is <= the level
        self.inner.set_begin_index(first)
        self.timesteps = self.inner.timesteps[first:]
        return float(sigmas[first]) if first < len(sigmas) else 0.0

    def step(self, *args, **kwargs):
        return self.inner.step(*args, **kwargs)


def encoded(pipe, video: torch.Tensor) -> torch.Tensor:
    """A real clip (3, T, H, W) through the pipeline's tokenizer: flow's latents (1, C, t, h, w) in fp32, or the ids."""
    tokenizer, model = pipe.video_tokenizer, pipe.transformer
    with torch.no_grad():
        x = model.encode_videos(tokenizer, video[None].to(model.device, tokenizer.dtype))
    return x.float() if x.is_floating_point() else x


def decoded(pipe, x: torch.Tensor) -> torch.Tensor:
    """Latents or ids of one clip -> the video (3, T, H, W) in [-1, 1]."""
    with torch.no_grad():
        return pipe.transformer.decode_videos(pipe.video_tokenizer, x, NUM_FRAMES, SIZE, SIZE)[0].float().clamp(-1, 1)


@torch.no_grad()
def renoised(pipe, x0: torch.Tensor, cond, level: float, steps: int, guidance: float, seed: int) -> torch.Tensor:
    """Flow latents ``x0`` noised to ``level`` > 0 and denoised by the pipeline's sampler under ``cond``."""
    scheduler = FlowMatchFromLevel(pipe.scheduler, level)
    sigma = scheduler.set_timesteps(steps)  # the sampler's own grid: start where it would be at this level
    g = make_generator(seed, "probe/renoise-noise", 0)
    x = (1 - sigma) * x0 + sigma * torch.randn(x0.shape, generator=g)
    return generate_latents(pipe.transformer, cond, scheduler=scheduler, grid=tuple(x0.shape[2:]), batch=1,
                            guidance_scale=guidance, num_inference_steps=steps, generator=g, latents=x)


@torch.no_grad()
def remasked(pipe, ids: torch.Tensor, caption: str, level: float, seed: int, **options) -> torch.Tensor:
    """Masked ids (1, t, h, w) with a random fraction ``level`` > 0 of positions masked, filled in by the pipeline."""
    order = torch.randperm(ids.numel(), generator=make_generator(seed, "probe/remask-positions", 0))
    flat = ids.reshape(-1).clone()
    flat[order[:round(level * ids.numel())]] = pipe.transformer.mask_token_id
    return pipe(prompt=[caption], latents=flat.reshape(ids.shape), num_frames=NUM_FRAMES, height=SIZE, width=SIZE,
                generator=make_generator(seed, "probe/remask-sampling", 0), output_type="latent", **options).frames


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", choices=["flow", "masked"], default="flow")
    parser.add_argument("--pretrained", default="pretrained", help="folder holding shapes-<pipeline>/")
    parser.add_argument("--prompts", type=int, default=192, help="tuning prompts (vidgen.demo.prompts.tuning_prompts)")
    parser.add_argument("--levels", default="0,0.2,0.4,0.6,0.8,1.0",
                        help="noise levels s in [0, 1], comma-separated (0: the VAE round trip; 1: generation)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="a sampling setting instead of the folder's, e.g. top_k=1 (masked) or guidance_scale=1 "
                             "(flow: guidance_scale and num_inference_steps only); repeatable")
    parser.add_argument("--sheet", default=None, metavar="PNG", help="also save a picture: per shape, the middle frame "
                        "of its first prompt's real clip and of each level's result")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="default experiments/results/renoise_probe_<pipeline>.json")
    args = parser.parse_args(argv)
    args.out = args.out or f"experiments/results/renoise_probe_{args.pipeline}.json"
    levels = [float(v) for v in args.levels.split(",")]
    if not levels or not all(0 <= v <= 1 for v in levels):
        parser.error(f"--levels must be numbers in [0, 1], got {args.levels!r}")
    options = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.pipeline == "flow" and set(options) - {"guidance_scale", "num_inference_steps"}:
        parser.error("--set for flow takes guidance_scale and num_inference_steps only")
    if args.prompts < 1:
        parser.error(f"--prompts must be >= 1, got {args.prompts}")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        pipe = load_pipelines(Path(args.pretrained), [args.pipeline])[args.pipeline]
        pipe.transformer.eval()
        settings = pipe.sampling_config.replace(**options)
        steps, guidance = settings.num_inference_steps, float(settings.guidance_scale)
        scorer = AttributeScorer()
        prompts = tuning_prompts(args.prompts)
        kept = {s: collections.defaultdict(collections.Counter) for s in levels}  # level -> shape -> counts
        read_as = {s: collections.defaultdict(collections.Counter) for s in levels}  # level -> shape -> detected
        rows, sheet = [], {}  # sheet: shape -> middle frames (real clip, then one per level)
        for p in tqdm(prompts, desc="prompts", dynamic_ncols=True):
            video = real_clip(p, NUM_FRAMES, SIZE, stream="probe/renoise")
            row = {"caption": p.caption, "seed": p.seed}
            first = p.attributes.shape not in sheet  # this shape's first prompt: its frames go on the sheet
            frames = sheet.setdefault(p.attributes.shape, [video[:, NUM_FRAMES // 2]]) if first else None
            x0 = encoded(pipe, video)  # once per clip; s = 0 decodes it as it is (the round trip)
            cond = pipe.encode_prompt([p.caption])[0] if args.pipeline == "flow" else None
            for s in levels:
                x = x0 if s == 0 else renoised(pipe, x0, cond, s, steps, guidance, p.seed) \
                    if args.pipeline == "flow" else remasked(pipe, x0, p.caption, s, p.seed, **options)
                out = decoded(pipe, x)
                d = scorer(out)
                if frames is not None:
                    frames.append(out[:, NUM_FRAMES // 2])
                shape_ok, motion_ok = d.shape == p.attributes.shape, d.motion == p.attributes.motion
                c = kept[s][p.attributes.shape]
                c["n"] += 1
                c["shape"] += shape_ok
                c["motion"] += motion_ok
                if p.attributes.motion == "rotate":
                    c["rotating"] += 1
                    c["turned"] += motion_ok
                read_as[s][p.attributes.shape][d.shape] += 1
                row[f"s={s:g}"] = d.to_dict()
            rows.append(row)
    finally:
        torch.set_num_threads(old_threads)
    print(f"{args.pipeline}: shape kept per level (real clip noised / re-masked to s, then the shipped sampler: "
          f"{steps} steps, guidance {guidance}); {args.prompts} tuning prompts")
    print(f"  {'':>9} " + " ".join(f"{'s=' + format(s, 'g'):>9}" for s in levels))
    for shape in SHAPES:
        cells = [kept[s][shape] for s in levels]
        print(f"  {shape:>9} " + " ".join(f"{c['shape']:>4}/{c['n']:<4}" for c in cells))
    totals = {s: {k: sum(c[k] for c in kept[s].values()) for k in ("n", "shape", "motion", "rotating", "turned")}
              for s in levels}
    print(f"  {'all':>9} " + " ".join(f"{totals[s]['shape'] / max(1, totals[s]['n']):>9.1%}" for s in levels))
    print(f"  {'turned':>9} " + " ".join(f"{totals[s]['turned']:>4}/{totals[s]['rotating']:<4}" for s in levels))
    write_result(args.out, {"pipeline": args.pipeline, "pretrained": str(args.pretrained), "prompts": args.prompts,
                            "prompt_seed": 1, "precision": pipe.precision,
                            "steps": steps, "guidance_scale": guidance, "settings": options, "levels": levels,
                            "per_level": {f"{s:g}": totals[s] for s in levels},
                            "per_shape": {f"{s:g}": {k: dict(v) for k, v in kept[s].items()} for s in levels},
                            "read_as": {f"{s:g}": {k: dict(v) for k, v in read_as[s].items()} for s in levels},
                            "videos": rows}, threads=args.threads)
    print(f"wrote {args.out}")
    if args.sheet:
        save_sheet(args.sheet, [sheet[shape] for shape in SHAPES if shape in sheet], len(levels) + 1)
        print(f"wrote {args.sheet}: rows {[shape for shape in SHAPES if shape in sheet]}, columns real clip, "
              + ", ".join(f"s={s:g}" for s in levels))
    return 0


def save_sheet(path: str, rows: list[list[torch.Tensor]], columns: int) -> None:
    """Frames (3, H, W) in [-1, 1], one row per shape, upscaled 2x (nearest) so corners stay visible."""
    from torchvision.utils import save_image
    frames = torch.stack([f.float() for row in rows for f in row]) * 0.5 + 0.5
    save_image(torch.nn.functional.interpolate(frames, scale_factor=2, mode="nearest"), path, nrow=columns,
               padding=4, pad_value=1.0)


if __name__ == "__main__":
    raise SystemExit(main())
