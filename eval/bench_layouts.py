"""Benchmark: which attention layout and preset the masked and autoregressive generators can afford on 4x4-pixel
FSQ codes (a 5x16x16 grid = 1280 tokens per 17-frame 64x64 clip, 16 text prefix tokens), side by side in one run,
against the GEMM ceiling measured in the same run (``eval/ceiling.py``); ``--kinds flow``: the flow generator on the
same grid of 4-channel latents (the shapes VAE's at 1x1x1 patches).

For each generator (masked, AR), preset (mini, small) and layout (``full``, Latte's ``spatiotemporal``, a local 3D
``window``; also ``full`` over 1x2x2 patches of ids, 320 backbone tokens, as both ship): one training step (forward +
backward + AdamW, batch 8, as the shapes configs train) and the sampling seconds per video (masked: 12 steps with CFG;
AR: one token per step with the KV cache, CFG), plus the shipped layout at the old 5x8x8 grid (320 tokens) for
reference. Precision: fp32, and bf16 autocast where this CPU has native bf16 (``avx512_bf16`` or ``amx_bf16``);
elsewhere bf16 is emulated and slower than fp32 (``docs/precision.md``), so it is not timed.

    python eval/bench_layouts.py            # ~10 min on 2 idle cores -> docs/results/bench_layouts.json
    python eval/bench_layouts.py --quick    # smoke run (tiny preset, small grid) -> ..._quick.json
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.bench_generators import CFG, VOCAB, cond, count_flops, timeit  # noqa: E402
from eval.ceiling import describe, gemm_ceilings  # noqa: E402
from eval.results import write_result  # noqa: E402
from vidgen.generators import (AutoregressiveVideoTransformer, FlowVideoTransformer, MaskedVideoTransformer,  # noqa: E402
                               generate_ids, generate_latents, generate_tokens)
from vidgen.precision import cpu_has_fast_bf16  # noqa: E402

LAYOUTS = ("full", "spatiotemporal", "window")
CLASSES = {"masked": MaskedVideoTransformer, "ar": AutoregressiveVideoTransformer, "flow": FlowVideoTransformer}
LATENT_CHANNELS = 4  # the shapes VAE's
DEFAULT_KINDS = ("masked", "ar")


def build(kind: str, preset: str, layout: str, grid, window, patch=(1, 1, 1)):
    torch.manual_seed(0)
    tokens = dict(in_channels=LATENT_CHANNELS) if kind == "flow" else dict(vocab_size=VOCAB)
    return CLASSES[kind].from_preset(preset, **tokens, text_dim=384, max_text_tokens=16, layout=layout,
                                     window=tuple(window), max_grid=tuple(grid), patch_size=tuple(patch))


def inputs(kind: str, batch: int, grid, g) -> torch.Tensor:
    """A batch of what the generator trains on: ids, or normalized latents for the flow model."""
    if kind == "flow":
        return torch.randn(batch, LATENT_CHANNELS, *grid, generator=g)
    return torch.randint(0, VOCAB, (batch, *grid), generator=g)


def train_step(kind, preset, layout, grid, args, ceilings, mode, patch) -> dict:
    model = build(kind, preset, layout, grid, args.window, patch).train()
    opt, g = torch.optim.AdamW(model.parameters(), lr=1e-4), torch.Generator().manual_seed(0)
    ids, c = inputs(kind, args.batch, grid, g), cond(args.batch)

    def step():
        with torch.autocast("cpu", torch.bfloat16, enabled=mode == "bf16"):
            loss, _ = model.loss(ids, c, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    counted = {}
    _, s = timeit(step, args.steps, lambda: counted.update(n=count_flops(step)))
    rate = counted["n"] / s
    return dict(seconds_per_step=s, ids_per_s=args.batch * math.prod(grid) / s, gflops=rate / 1e9,
                fraction_of_ceiling=rate / (ceilings[mode]["gflops"] * 1e9), flops_per_step=counted["n"],
                params=sum(p.numel() for p in model.parameters()))


def sample_seconds(kind, preset, layout, grid, args, mode, patch) -> float:
    model = build(kind, preset, layout, grid, args.window, patch).eval()
    c, g = cond(args.sample_batch), torch.Generator().manual_seed(0)
    if kind == "masked":
        def call():
            generate_ids(model, c, grid=grid, batch=args.sample_batch, guidance_scale=CFG,
                         num_inference_steps=args.masked_steps, generator=g)
    elif kind == "flow":
        def call():
            generate_latents(model, c, grid=grid, batch=args.sample_batch, guidance_scale=CFG,
                             num_inference_steps=25, generator=g)
    else:
        def call():
            generate_tokens(model, c, grid=grid, batch=args.sample_batch, guidance_scale=CFG, generator=g)
    with torch.autocast("cpu", torch.bfloat16, enabled=mode == "bf16"):
        start = time.perf_counter()
        call()  # one call: AR sampling at 1280 tokens takes minutes; nothing is warmed that a second call would skip
    return (time.perf_counter() - start) / args.sample_batch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["mini", "small"])
    parser.add_argument("--grid", type=int, nargs=3, default=[5, 16, 16], help="token grid (1280 tokens)")
    parser.add_argument("--reference-grid", type=int, nargs=3, default=[5, 8, 8], help="the 8x8-pixel codes' grid")
    parser.add_argument("--window", type=int, nargs=3, default=[3, 7, 7], help="the window layout's (t, h, w)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="timed training steps after the counted one")
    parser.add_argument("--sample-batch", type=int, default=2)
    parser.add_argument("--masked-steps", type=int, default=12)
    parser.add_argument("--sample-presets", nargs="+", default=["mini"], help="presets whose sampling is timed")
    parser.add_argument("--kinds", nargs="+", choices=list(CLASSES), default=list(DEFAULT_KINDS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.presets = args.sample_presets = ["tiny"]
        args.grid, args.reference_grid, args.window, args.batch, args.steps = [2, 4, 4], [2, 2, 2], [1, 3, 3], 2, 1
        args.sample_batch, args.masked_steps = 1, 2
    out = Path(args.out or f"docs/results/bench_layouts{'_quick' if args.quick else ''}"
               f"{'' if set(args.kinds) == set(DEFAULT_KINDS) else '_' + '_'.join(args.kinds)}.json")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    modes = ["fp32"] + (["bf16"] if cpu_has_fast_bf16() else [])
    t0, load = time.perf_counter(), os.getloadavg()
    ceilings = gemm_ceilings(repeats=3, dtypes=tuple(modes))
    print(describe(ceilings), flush=True)
    rows = []
    one, patched = (1, 1, 1), (1, 2, 2)
    cases = []
    for k in args.kinds:
        cases += [(k, p, lay, tuple(args.grid), one) for p in args.presets for lay in LAYOUTS]
        cases += [(k, p, "full", tuple(args.grid), patched) for p in args.presets]
        cases += [(k, args.presets[0], "full", tuple(args.reference_grid), one)]
    for kind, preset, layout, grid, patch in cases:
        for mode in modes:
            tokens = math.prod(g // p for g, p in zip(grid, patch))
            row = dict(kind=kind, preset=preset, layout=layout, grid=list(grid), patch_size=list(patch), ids=math.prod(grid),
                       tokens=tokens, precision=mode, **train_step(kind, preset, layout, grid, args, ceilings, mode, patch))
            if preset in args.sample_presets:
                row["seconds_per_video"] = sample_seconds(kind, preset, layout, grid, args, mode, patch)
            rows.append(row)
            name = layout + ("" if patch == one else " 1x2x2")
            print(f"{kind:>6} {preset:>5} {name:>14} {row['ids']:5d} ids {tokens:5d} tok {mode}: {row['seconds_per_step']:6.2f} "
                  f"s/step, {row['ids_per_s']:7.0f} ids/s, {100 * row['fraction_of_ceiling']:4.1f} % of ceiling"
                  + (f", {row['seconds_per_video']:6.2f} s/video" if "seconds_per_video" in row else ""), flush=True)
    write_result(out, dict(config=vars(args), precisions=modes, ceilings=ceilings, rows=rows,
                           loadavg_start=load, loadavg_end=os.getloadavg(), wall_s=time.perf_counter() - t0),
                 threads=args.threads)
    print(f"{time.perf_counter() - t0:.0f} s; wrote {out}")
    torch.set_num_threads(threads)
    return 0


def readme_table(results: dict) -> str:
    """The docs' layout table (``eval/readme_tables.py``, marker ``layouts``): seconds per training step and per
    sampled video, per generator, preset and layout."""
    lines = ["| generator | preset | layout | ids per clip | backbone tokens | precision | s / training step (batch "
             f"{results['config']['batch']}) | % of that precision's GEMM ceiling | s / video |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        layout = r["layout"] + ("" if r["patch_size"] == [1, 1, 1] else f", {'x'.join(map(str, r['patch_size']))} ids per token")
        video = f"{r['seconds_per_video']:.2f}" if "seconds_per_video" in r else "–"
        lines.append(f"| {r['kind']} | `{r['preset']}` | {layout} | {r['ids']} | {r['tokens']} | {r['precision']} | "
                     f"{r['seconds_per_step']:.2f} | {100 * r['fraction_of_ceiling']:.0f} % | {video} |")
    ceil = ", ".join(f"{k} {v['gflops']:.0f} GFLOP/s" for k, v in results["ceilings"].items())
    native = "no native bf16 on this CPU" if results["precisions"] == ["fp32"] else "native bf16"
    lines += ["", f"{' and '.join(results['precisions'])} ({native}); "
              f"GEMM ceiling {ceil} in the same run; {results['threads']} threads, {results['date'][:10]}; "
              f"`{results['command']}`."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
