"""Benchmark: the three generators in fp32, bf16 and bf16+compile side by side, against the GEMM ceiling of each dtype
measured in the same run (``eval/ceiling.py``; these machines' rates move from day to day).

* **Training** (flow and masked, as the shapes configs train: a 5x8x8 grid = 320 tokens per clip with 1x1x1 flow
  patches, 16 text prefix tokens, batch 16, full attention): forward + backward + AdamW step, model FLOPs of a step
  counted with ``FlopCounterMode`` (plus the CPU SDPA kernels, which it does not count), tokens/s and the fraction
  of the matching-dtype ceiling, for the ``small`` and ``base`` presets. bf16 is autocast with fp32 weights (the
  trainers' ``mixed_precision=bf16``: fp32 master weights for AdamW); bf16+compile adds ``torch.compile`` of the
  backbone (fwd + bwd), its compile time reported apart from the steady state.
* **Sampling** (the three generators on the ``small`` preset, the same 320-token grid, batch 4, CFG 3: masked 12
  steps, flow 25 steps, AR one step per token with the KV cache): seconds per video in fp32, bf16 autocast, bf16
  weights and bf16+compile (on the faster of the two bf16 modes).
* **AR decode step**: one token at a mid-sequence position through the generic cached path
  (``forward_tokens`` with a ``ModelKVCache``: validation, pattern, RoPE slices per layer and token: the decode
  step before :mod:`vidgen.generators.kv_decode`) and through ``KVDecodeStep.step``.

On a GPU (``--device cuda``) the defaults become what users train there: a 17x256x256 clip through a 4x8x8 VAE
(a 5x32x32 latent grid, 16 channels) in 1x2x2 patches = 1,280 tokens per clip, batch 16, the ``large`` (~320 M
parameters), ``base`` and ``small`` presets (``large`` also compiled; sampling not compiled there); the ceiling is a
8192^3 GEMM on the GPU, so the bf16 fraction is the model FLOP utilisation (MFU). The AR decode step is also timed
replayed from a CUDA graph. :func:`gpu_table` renders such a file for docs/benchmarks.md, a stopped run's too.

    python eval/bench_generators.py            # full run (~8 min on 2 idle cores) -> docs/results/bench_generators.json
    python eval/bench_generators.py --device cuda      # -> docs/results/bench_generators_cuda.json
    python eval/bench_generators.py --quick    # smoke run (tiny preset, no compile) -> /tmp/..._quick.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.ceiling import describe, gemm_ceilings  # noqa: E402
from eval.results import kernel_provenance, write_result  # noqa: E402
from vidgen.attention.kv_cache import ModelKVCache  # noqa: E402
from vidgen.generators import (AutoregressiveVideoTransformer, FlowVideoTransformer,  # noqa: E402
                               MaskedVideoTransformer, generate_ids, generate_latents, generate_tokens)
from vidgen.generators.cuda_graph import GraphedDecodeStep  # noqa: E402
from vidgen.generators.kv_decode import KVDecodeStep  # noqa: E402
from vidgen.generators.embeddings import Conditioning  # noqa: E402

TEXT_DIM, TEXT_TOKENS, CHANNELS, VOCAB, CFG = 384, 16, 16, 1024, 3.0
TRAIN_KINDS, SAMPLE_KINDS = ("flow", "masked"), ("masked", "flow", "ar")  # each preset's training rows; sampling rows
# the GPU targets: the MFU of this preset's bf16+compile training step, and the CUDA-graph decode step / eager step
MFU_PRESET, MFU_AT_LEAST, GRAPH_AT_LEAST = "large", 0.40, 3.0
DECODE_MODES = ("fp32", "bf16 weights", "bf16 autocast")
# FlopCounterMode has no formula for the CPU flash kernels: count them as dense attention (what they compute)
CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *a, **kw: sdpa_flop_count(q, k, v),
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda grad, q, k, v, *a, **kw: sdpa_backward_flop_count(grad, q, k, v)}


DEVICE = torch.device("cpu")  # main() sets it from --device


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, repeats: int, first_call=None) -> tuple[float, float]:
    """-> (seconds of the first call (``first_call`` if given, e.g. the FLOP count), median seconds of ``repeats``
    further calls of ``fn``); on a GPU synchronised around each call."""
    _sync()
    start = time.perf_counter()
    (first_call or fn)()
    _sync()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA) as counter:
        fn()
    return counter.get_total_flops()


def cond(batch: int) -> Conditioning:
    g = torch.Generator().manual_seed(batch)
    return Conditioning(text=torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=g).to(DEVICE),
                        pooled=torch.randn(batch, TEXT_DIM, generator=g).to(DEVICE))


PATCH = (1, 1, 1)  # main() sets it from --patch


def build(kind: str, preset: str, grid):
    """The model for a latent / id grid, ``PATCH`` latents or ids per backbone token, on ``DEVICE``."""
    torch.manual_seed(0)
    kw = dict(text_dim=TEXT_DIM, max_text_tokens=TEXT_TOKENS, layout="full", max_grid=tuple(grid), patch_size=PATCH)
    if kind == "flow":
        return FlowVideoTransformer.from_preset(preset, in_channels=CHANNELS, **kw).to(DEVICE)
    cls = MaskedVideoTransformer if kind == "masked" else AutoregressiveVideoTransformer
    return cls.from_preset(preset, vocab_size=VOCAB, **kw).to(DEVICE)


def bf16_copy(model):
    copy = type(model).from_config(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.to(DEVICE, torch.bfloat16).eval()


def autocast(on: bool):
    return torch.autocast(DEVICE.type, torch.bfloat16, enabled=on)


# ---------------------------------------------------------------------------------------------------------- training
def training(kind: str, preset: str, grid, args, ceilings, out: dict, save) -> None:
    """fp32 / bf16 (autocast) / bf16+compile training steps of one model into ``out``, calling ``save`` after each
    precision; FLOPs counted once (fp32 step)."""
    b, tokens = args.train_batch, math.prod(grid) // math.prod(PATCH)
    x = torch.randn(b, CHANNELS, *grid) if kind == "flow" else torch.randint(0, VOCAB, (b, *grid))
    x = x.to(DEVICE)
    c = cond(b)
    out.update(kind=kind, preset=preset, batch=b, tokens_per_clip=tokens, precisions={})
    modes = ["fp32", "bf16"] + (["bf16+compile"] if args.compile and preset in args.compile_presets else [])
    for mode in modes:
        model = build(kind, preset, grid).train()
        if mode == "bf16+compile":
            model.backbone.compile(dynamic=False)  # in place: model.loss calls it (fwd + bwd graphs)
        opt, g = torch.optim.AdamW(model.parameters(), lr=1e-4), torch.Generator().manual_seed(0)

        def step():
            with autocast(mode != "fp32"):
                loss, _ = model.loss(x, c, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        counted = {}
        if mode == "fp32":  # the warm-up step of fp32 is the counted one
            out["params"] = sum(p.numel() for p in model.parameters())
        # compile: the first steps recompile once each (guards on state the first call sets, e.g. the RoPE table
        # cache, and on the optimizer's first step), so the warm-up is 3 steps and all of it counts as compile time
        warmup = {"fp32": lambda: counted.update(n=count_flops(step)),
                  "bf16+compile": lambda: [step() for _ in range(3)]}.get(mode)
        first, s = timeit(step, args.train_steps, warmup)
        out.setdefault("flops_per_step", counted.get("n"))
        ceil = ceilings["fp32" if mode == "fp32" else "bf16"]["gflops"] * 1e9
        rate = out["flops_per_step"] / s
        out["precisions"][mode] = dict(seconds_per_step=s, first_step_s=first, tokens_per_s=b * tokens / s,
                                       gflops=rate / 1e9, fraction_of_ceiling=rate / ceil)
        if mode == "bf16+compile":
            out["precisions"][mode]["compile_s"] = first - 3 * s
        out["precisions"][mode]["speedup_vs_fp32"] = out["precisions"]["fp32"]["seconds_per_step"] / s
        save()  # after every precision: a run stopped during a long compile keeps the rows before it
        print(f"  train {preset:>5} {kind:>6} {mode:>13}: {s:6.2f} s/step, {b * tokens / s:7.0f} tokens/s, "
              f"{rate / 1e9:5.0f} GFLOP/s = {100 * rate / ceil:4.1f} % of the {mode[:4]} ceiling"
              + (f" (first step {first:.1f} s)" if mode == "bf16+compile" else ""), flush=True)
        del model, opt


# ---------------------------------------------------------------------------------------------------------- sampling
def sample_call(kind: str, model, batch: int, grid, steps: int, compile: bool = False):
    c, g = cond(batch), torch.Generator().manual_seed(0)
    if kind == "masked":
        return lambda: generate_ids(model, c, grid=grid, batch=batch, guidance_scale=CFG, num_inference_steps=steps,
                                    generator=g, compile=compile)
    if kind == "flow":
        sched = FlowMatchEulerDiscreteScheduler()
        return lambda: generate_latents(model, c, scheduler=sched, grid=grid, batch=batch, guidance_scale=CFG,
                                        num_inference_steps=steps, generator=g, compile=compile)
    return lambda: generate_tokens(model, c, grid=grid, batch=batch, guidance_scale=CFG, generator=g,
                                   compile=compile)


def sampling(kind: str, grid, args) -> dict:
    steps = {"masked": args.masked_steps, "flow": args.flow_steps, "ar": 1}[kind]
    fp32 = build(kind, args.sample_preset, grid).eval()
    bf16w = bf16_copy(fp32)
    b = args.sample_batch
    runs = {"fp32": (fp32, False, False), "bf16 autocast": (fp32, True, False), "bf16 weights": (bf16w, False, False)}
    out = dict(kind=kind, preset=args.sample_preset, batch=b, steps=steps, guidance_scale=CFG, precisions={})
    for mode, (model, amp, comp) in runs.items():
        with autocast(amp):
            _, s = timeit(sample_call(kind, model, b, grid, steps, comp), args.sample_repeats)
        out["precisions"][mode] = dict(seconds_per_video=s / b)
        print(f"  sample {kind:>6} {mode:>13}: {s / b:6.3f} s/video", flush=True)
    best = min(("bf16 autocast", "bf16 weights"), key=lambda m: out["precisions"][m]["seconds_per_video"])
    out["bf16_mode"] = best
    if args.compile and args.sample_compile:
        model, amp = runs[best][:2]
        with autocast(amp):
            first, s = timeit(sample_call(kind, model, b, grid, steps, True), args.sample_repeats)
        out["precisions"]["bf16+compile"] = dict(seconds_per_video=s / b, compile_s=first - s, mode=best)
        print(f"  sample {kind:>6}  bf16+compile: {s / b:6.3f} s/video ({best}; compile {first - s:.0f} s)",
              flush=True)
    base = out["precisions"]["fp32"]["seconds_per_video"]
    for r in out["precisions"].values():
        r["speedup_vs_fp32"] = base / r["seconds_per_video"]
    return out


def decode_step(grid, args) -> dict:
    """Seconds of one AR decode step (CFG rows = 2 x batch) at the middle of the sequence: generic vs KVDecodeStep
    (and, on a GPU, the static step replayed from a CUDA graph)."""
    model = build("ar", args.sample_preset, grid).eval()
    cfg, p = model.backbone_config, model.num_prefix_tokens
    tgrid, ids = model.token_grid(grid), model.patch.size
    n, rows = math.prod(tgrid), 2 * args.sample_batch
    out = {}
    for mode, m, amp in zip(DECODE_MODES, (model, bf16_copy(model), model), (False, False, True)):
        with torch.no_grad(), autocast(amp):
            prefix, context, vec = m.embed_condition(cond(rows), rows)
            caches = [ModelKVCache.allocate(cfg.depth, rows, cfg.num_heads, p + n, cfg.head_dim, m.compute_dtype,
                                            DEVICE) for _ in range(2)]
            seq = torch.randint(0, VOCAB, (rows, n // 2, ids), device=DEVICE)
            for cache in caches:
                m.forward_tokens(seq, tgrid, vec, prefix, context, cache, 0)
            pos, tok = p + n // 2, torch.randint(0, VOCAB, (rows, ids), device=DEVICE)

            def generic():
                m.forward_tokens(tok[:, None], tgrid, vec, None, context, caches[0], pos)
            decoder = KVDecodeStep(m, tgrid, vec, context, caches[0], m.compute_dtype)
            reps = max(3, args.sample_repeats * 10)
            _, g = timeit(generic, reps)
            _, f = timeit(lambda: decoder.step(tok, pos), reps)
            entry = dict(rows=rows, position=pos, generic_s=g, decoder_s=f, speedup=g / f)
            if DEVICE.type == "cuda":  # the static step replayed from a CUDA graph (its own cache: same contents)
                graphed = GraphedDecodeStep(KVDecodeStep(m, tgrid, vec, context, caches[1], m.compute_dtype,
                                                         static=True))
                _, c = timeit(lambda: graphed(tok, pos), reps)
                entry.update(cuda_graph_s=c, cuda_graph_speedup_vs_decoder=f / c)
        out[mode] = entry
        print(f"  ar decode step {mode:>13} ({rows} rows, position {pos}): generic {1e3 * g:.2f} ms, "
              f"KVDecodeStep {1e3 * f:.2f} ms ({g / f:.2f}x)"
              + (f", CUDA graph {1e3 * entry['cuda_graph_s']:.3f} ms ({f / entry['cuda_graph_s']:.1f}x the step)"
                 if "cuda_graph_s" in entry else ""), flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (GPU defaults: see the module docstring)")
    parser.add_argument("--presets", nargs="+", default=None, help="training presets (CPU: small base)")
    parser.add_argument("--sample-preset", default="small")
    parser.add_argument("--grid", type=int, nargs=3, default=None, help="latent / id grid (CPU: 5 8 8)")
    parser.add_argument("--patch", type=int, nargs=3, default=None, help="patch (CPU: 1 1 1, GPU: 1 2 2)")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=None, help="timed steps after the first (CPU: 2)")
    parser.add_argument("--sample-batch", type=int, default=4)
    parser.add_argument("--sample-repeats", type=int, default=1, help="timed sampling calls after the first")
    parser.add_argument("--masked-steps", type=int, default=12)
    parser.add_argument("--flow-steps", type=int, default=25)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--sample-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time compiled sampling (CPU: on; GPU: off, its time goes to the large preset)")
    parser.add_argument("--compile-presets", nargs="+", default=None,
                        help="training presets also run with compile (CPU: small; base: ~2 min more; GPU: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny preset, small grid, no compile")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    global DEVICE, PATCH
    DEVICE = torch.device(args.device)
    gpu = DEVICE.type == "cuda"
    # on a GPU the large preset first (its bf16+compile MFU is the target; the results are saved after every row)
    defaults = dict(presets=["large", "base", "small"] if gpu else ["small", "base"], grid=[5, 32, 32] if gpu
                    else [5, 8, 8], patch=[1, 2, 2] if gpu else [1, 1, 1], train_steps=5 if gpu else 2,
                    compile_presets=["large"] if gpu else ["small"], sample_compile=not gpu)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.presets, args.sample_preset, args.grid, args.train_batch = ["tiny"], "tiny", [2, 4, 4], 2
        args.train_steps, args.masked_steps, args.flow_steps, args.sample_batch, args.compile = 1, 2, 2, 2, False
    PATCH = tuple(args.patch)
    name = "bench_generators" + ("_cuda" if gpu else "") + ("_quick" if args.quick else "")
    out_path = Path(args.out or (f"/tmp/{name}.json" if args.quick else f"docs/results/{name}.json"))
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    grid, load_start, t0 = tuple(args.grid), os.getloadavg(), time.perf_counter()
    print(f"torch {torch.__version__}, {args.threads} threads, grid {'x'.join(map(str, grid))} "
          f"({math.prod(grid)} tokens + {TEXT_TOKENS} text), load average {load_start[0]:.2f}", flush=True)
    gemm_n = 8192 if gpu else (512 if args.quick else 2048)  # --quick checks the plumbing, not the rate
    ceilings = gemm_ceilings(n=gemm_n, repeats=3 if args.quick else 5, device=DEVICE)
    print(describe(ceilings), flush=True)
    results = dict(command=" ".join(["python", *sys.argv]), torch=torch.__version__, threads=args.threads,
                   date=datetime.now().isoformat(timespec="seconds"), loadavg_start=load_start,
                   config=vars(args), ceilings=ceilings, training=[], sampling=[], device=DEVICE.type,
                   gpu=torch.cuda.get_device_name(DEVICE) if gpu else None, **kernel_provenance())
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save():  # at the start and after every row: a run stopped from outside keeps what it measured, provenance too
        write_result(out_path, results, command=results["command"], threads=args.threads, weights=(),
                     precision="per row: fp32, bf16 autocast, bf16 weights, bf16+compile")
    save()
    for i, preset in enumerate(args.presets):
        for kind in TRAIN_KINDS:
            results["training"].append({})
            training(kind, preset, grid, args, ceilings, results["training"][-1], save)
        if i == 0:  # the decode step right after the first preset: a run stopped from outside still has it
            results["ar_decode_step"] = decode_step(grid, args)
            save()
    for kind in SAMPLE_KINDS:
        results["sampling"].append(sampling(kind, grid, args))
        save()
    results["ceilings_end"] = gemm_ceilings(n=gemm_n, repeats=3, device=DEVICE)
    print("at the end: " + describe(results["ceilings_end"]), flush=True)
    results["targets"] = targets(results)
    results.update(loadavg_end=os.getloadavg(), wall_s=time.perf_counter() - t0)
    print(json.dumps(results["targets"], indent=1))
    save()
    print(f"{results['wall_s']:.0f} s; load average {load_start[0]:.2f} -> {results['loadavg_end'][0]:.2f}; "
          f"wrote {out_path}")
    torch.set_num_threads(threads)
    return 0


def best_bf16(precisions: dict) -> tuple[str, dict]:
    name = max((m for m in precisions if m != "fp32"), key=lambda m: precisions[m]["speedup_vs_fp32"])
    return name, precisions[name]


def gpu_targets(results: dict) -> dict:
    """On a GPU: the ``large`` preset's bf16+compile training at >= 40 % of the same run's bf16 GEMM rate (MFU), and
    the AR decode step replayed from a CUDA graph >= 3x the eager step; each with its measured value."""
    out = {}
    for r in results["training"]:
        p = r["precisions"].get("bf16+compile")
        if r["preset"] == MFU_PRESET and p is not None:
            out[f"train_{MFU_PRESET}_{r['kind']}_mfu"] = dict(fraction=p["fraction_of_ceiling"],
                                                             met=p["fraction_of_ceiling"] >= MFU_AT_LEAST)
    for mode, e in results.get("ar_decode_step", {}).items():
        if "cuda_graph_speedup_vs_decoder" in e:
            out[f"ar_decode_cuda_graph_{mode}"] = dict(speedup=e["cuda_graph_speedup_vs_decoder"],
                                                       met=e["cuda_graph_speedup_vs_decoder"] >= GRAPH_AT_LEAST)
    return out


def targets(results: dict) -> dict:
    """The issue's targets: small >= 3x fp32 tokens/s (and >= 20 % of the bf16 ceiling), base >= 35 % of it,
    sampling >= 2.5x fp32; each with its measured value (the best bf16 variant). On a GPU: :func:`gpu_targets`."""
    if results.get("device") == "cuda":
        return gpu_targets(results)
    out = {}
    for r in results["training"]:
        name, best = best_bf16(r["precisions"])
        key = f"train_{r['preset']}_{r['kind']}"
        out[key] = dict(best=name, speedup=best["speedup_vs_fp32"], fraction=best["fraction_of_ceiling"])
        if r["preset"] == "base":
            out[key]["met"] = best["fraction_of_ceiling"] >= 0.35
        else:
            out[key]["met"] = best["speedup_vs_fp32"] >= 3 and best["fraction_of_ceiling"] >= 0.2
    for r in results["sampling"]:
        name, best = best_bf16(r["precisions"])
        out[f"sample_{r['kind']}"] = dict(best=name, speedup=best["speedup_vs_fp32"],
                                          met=best["speedup_vs_fp32"] >= 2.5)
    return out


def readme_table(results: dict) -> str:
    """The README's generator table (``eval/readme_tables.py``, marker ``generators``): fp32 / bf16 / bf16+compile."""
    ceil = results["ceilings"]

    def cell(r, mode, training):
        p = r["precisions"].get(mode)
        if p is None:
            return "–"
        if training:
            return f"{p['tokens_per_s']:.0f} tok/s, {p['fraction_of_ceiling']:.0%} ({p['speedup_vs_fp32']:.1f}x)"
        return f"{p['seconds_per_video']:.2f} s ({p['speedup_vs_fp32']:.1f}x)"
    lines = ["| workload | fp32 | bf16 | bf16+compile |", "|---|---|---|---|"]
    for r in results["training"]:
        lines.append(f"| train {r['kind']}, `{r['preset']}`, batch {r['batch']} x {r['tokens_per_clip']} tokens | "
                     + " | ".join(cell(r, m, True) for m in ("fp32", "bf16", "bf16+compile")) + " |")
    for r in results["sampling"]:
        bf16 = r["bf16_mode"]
        lines.append(f"| sample {r['kind']}, `{r['preset']}`, batch {r['batch']}, s / video | "
                     + " | ".join(cell(r, m, False) for m in ("fp32", bf16, "bf16+compile")) + " |")
    modes = ", ".join(sorted({r["bf16_mode"] for r in results["sampling"]}))
    where = results.get("gpu") or f"{results['threads']} threads"
    lines += ["", f"Training: tokens/s, % of the same dtype's {ceil['fp32']['n']}³ GEMM ceiling (fp32 "
              f"{ceil['fp32']['gflops']:.0f}, "
              f"bf16 {ceil['bf16']['gflops']:.0f} GFLOP/s in the same run), speed-up over fp32; bf16 = autocast. "
              f"Sampling: the faster of bf16 autocast / bf16 weights ({modes}). "
              f"{where}, {results['date'][:10]}; `{results['command']}`."]
    return "\n".join(lines)


def _expected_modes(config: dict, preset: str) -> list[str]:
    """The training precisions a run with ``config`` measures for ``preset`` (as :func:`training` picks them)."""
    return ["fp32", "bf16"] + (["bf16+compile"] if config.get("compile") and preset in config.get("compile_presets", ())
                               else [])


def not_reached(results: dict) -> list[str]:
    """What a run's configuration asked for that its file does not hold (a run stopped from outside keeps the rows
    before the stop): whole presets, single precisions, the AR decode step, sampling rows; from ``config`` against the
    rows present."""
    config, out = results["config"], []
    done = {(r.get("kind"), r.get("preset")): set(r.get("precisions", {})) for r in results["training"]}
    missing_presets = [p for p in config["presets"] if not any(done.get((k, p)) for k in TRAIN_KINDS)]
    if missing_presets:
        out.append(" and ".join(f"`{p}`" for p in missing_presets) + " training")
    for preset in config["presets"]:
        if preset in missing_presets:
            continue
        for kind in TRAIN_KINDS:
            lacking = [m for m in _expected_modes(config, preset) if m not in done.get((kind, preset), set())]
            if lacking:
                out.append(f"`{preset}` {kind} {', '.join(lacking)}")
    if "ar_decode_step" not in results:
        out.append("the AR decode step" + (" (eager and CUDA graph)" if results.get("device") == "cuda" else ""))
    sampled = {r["kind"] for r in results["sampling"]}
    lacking = [k for k in SAMPLE_KINDS if k not in sampled]
    if lacking:
        out.append(f"sampling ({', '.join(lacking)} on `{config['sample_preset']}`)")
    return out


def gpu_target_rows(results: dict) -> list[dict]:
    """The GPU targets as eval/results.py's ``target`` states them (met, missed by how much, or not measured): the
    MFU of each training kind's ``large`` bf16+compile step (in %), and the CUDA-graph decode step against the eager
    ``KVDecodeStep`` step per decode precision (one "not measured" line when the file has no decode step)."""
    from eval.results import target
    train = {(r["kind"], r["preset"]): r["precisions"] for r in results["training"]}
    rows = []
    for kind in TRAIN_KINDS:
        p = train.get((kind, MFU_PRESET), {}).get("bf16+compile")
        rows.append(target(f"`{MFU_PRESET}` {kind} bf16+compile training, MFU",
                           None if p is None else 100 * p["fraction_of_ceiling"], 100 * MFU_AT_LEAST, " %"))
    decode = {m: e for m, e in results.get("ar_decode_step", {}).items() if "cuda_graph_speedup_vs_decoder" in e}
    for mode, e in decode.items():
        rows.append(target(f"AR decode step ({mode}), CUDA graph / eager step", e["cuda_graph_speedup_vs_decoder"],
                           GRAPH_AT_LEAST, "×"))
    if not decode:
        rows.append(target("AR decode step, CUDA graph / eager step", None, GRAPH_AT_LEAST, "×"))
    return rows


def gpu_table(results: dict) -> str:
    """docs/benchmarks.md's GPU table (``eval/readme_tables.py``, marker ``generators_gpu``) from
    ``docs/results/bench_generators_cuda.json``: one line per training (kind, preset, precision), the sampling and AR
    decode-step lines the file holds, the caption (GPU, versions, shapes, the same run's GEMM ceilings, and what a
    stopped run did not reach), then the targets. Only the rows in the file are rendered."""
    ceil, config = results["ceilings"], results["config"]
    lines = ["| training step | precision | s / step | tokens/s | GFLOP/s | of the same-dtype GEMM ceiling (bf16: MFU) "
             "| vs fp32 | compile s |", "|---|---|---|---|---|---|---|---|"]
    for r in results["training"]:
        label = f"{r['kind']}, `{r['preset']}`" + (f" ({r['params']:,} parameters)" if r.get("params") else "")
        for mode, p in r.get("precisions", {}).items():
            compile_s = f"{p['compile_s']:.1f}" if "compile_s" in p else "–"
            lines.append(f"| {label} | {mode} | {p['seconds_per_step']:.3f} | {p['tokens_per_s']:,.0f} | "
                         f"{p['gflops']:,.0f} | {100 * p['fraction_of_ceiling']:.1f} % | "
                         f"{p['speedup_vs_fp32']:.2f}× | {compile_s} |")
    if results["sampling"]:
        lines += ["", "| sampling | precision | s / video | vs fp32 | compile s |", "|---|---|---|---|---|"]
        for r in results["sampling"]:
            steps = "one step a token" if r["kind"] == "ar" else f"{r['steps']} steps"
            label = f"{r['kind']}, `{r['preset']}`, batch {r['batch']}, {steps}"
            for mode, p in r["precisions"].items():
                compile_s = f"{p['compile_s']:.1f}" if "compile_s" in p else "–"
                lines.append(f"| {label} | {mode} | {p['seconds_per_video']:.3f} | {p['speedup_vs_fp32']:.2f}× | "
                             f"{compile_s} |")
    decode = results.get("ar_decode_step") or {}
    if decode:
        lines += ["", "| AR decode step | rows, position | generic ms | `KVDecodeStep` (eager) ms | CUDA graph ms "
                  "| CUDA graph / eager step |", "|---|---|---|---|---|---|"]
        for mode, e in decode.items():
            graph = (f"{1e3 * e['cuda_graph_s']:.3f} | {e['cuda_graph_speedup_vs_decoder']:.2f}×"
                     if "cuda_graph_s" in e else "– | –")
            lines.append(f"| {mode} | {e['rows']}, {e['position']} | {1e3 * e['generic_s']:.3f} | "
                         f"{1e3 * e['decoder_s']:.3f} | {graph} |")
    tokens = sorted({r["tokens_per_clip"] for r in results["training"]}) or ["–"]
    grid, patch = "×".join(map(str, config["grid"])), "×".join(map(str, config["patch"]))
    caption = (f"{results.get('gpu') or results['device']}, torch {results['torch']}, triton {results.get('triton')}, "
               f"{results['date'][:10]}. Training: forward + backward + AdamW, batch {config['train_batch']} × "
               f"{', '.join(f'{t:,}' for t in tokens)} tokens a clip (a {grid} latent grid in {patch} patches), the "
               f"median of {config['train_steps']} steps after the warm-up (one step; three compiled); bf16 = "
               "autocast with fp32 weights; bf16+compile adds `torch.compile` of the backbone, its compile time (the "
               "first three compiled steps less three steady ones) apart. The fraction is the model FLOP/s over the "
               f"{ceil['fp32']['n']}³ GEMM rate of the same dtype timed in the same run: fp32 "
               f"{ceil['fp32']['gflops']:,.0f}, bf16 {ceil['bf16']['gflops']:,.0f} GFLOP/s")
    if "ceilings_end" in results:
        end = results["ceilings_end"]
        caption += f" (at the end: fp32 {end['fp32']['gflops']:,.0f}, bf16 {end['bf16']['gflops']:,.0f})"
    caption += "; against bf16's it is the MFU."
    missing = not_reached(results)
    if "wall_s" not in results:
        caption += (" **The run stopped before its end** (the file has no end-of-run record; a run stopped from "
                    "outside, e.g. by its device call's time limit, keeps the rows measured before the stop)"
                    + (f" and did not reach: {'; '.join(missing)}." if missing else "."))
    elif missing:
        caption += f" Not in this run: {'; '.join(missing)}."
    caption += f" `{results['command']}`."
    lines += ["", caption, "", "| target | measured | result |", "|---|---|---|"]
    for t in gpu_target_rows(results):
        measured = "–" if t["measured"] is None else f"{t['measured']:.{1 if t['unit'] == ' %' else 2}f}{t['unit']}"
        lines.append(f"| {t['target']} ≥ {t['at_least']:g}{t['unit']} | {measured} | {t['result']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())


def notes(results: dict) -> str:
    """docs/benchmarks.md's compile and decode-step notes (``eval/readme_tables.py``, marker ``generators_notes``)
    from this script's results file."""
    import textwrap
    train = {(r["kind"], r["preset"]): r["precisions"] for r in results["training"]}
    flow, masked = train[("flow", "small")], train[("masked", "small")]
    t, d = results["targets"], results["ar_decode_step"]

    def gain(p):
        return p["bf16+compile"]["tokens_per_s"] / p["bf16"]["tokens_per_s"]
    bullets = [
        "- **Compile** (the transformer backbone, `compile: true` in the trainers): training "
        f"{gain(flow):.2f}x (flow) and {gain(masked):.2f}x (masked) over eager bf16 (`small`: "
        f"{flow['bf16+compile']['tokens_per_s']:.0f} vs {flow['bf16']['tokens_per_s']:.0f} tokens/s flow, "
        f"{masked['bf16+compile']['tokens_per_s']:.0f} vs {masked['bf16']['tokens_per_s']:.0f} masked; the first "
        f"compiled step takes {flow['bf16+compile']['first_step_s']:.1f} s (flow) and "
        f"{masked['bf16+compile']['first_step_s']:.1f} s (masked), compiling included, and is counted apart); "
        f"sampling masked {t['sample_masked']['speedup']:.1f}x, flow {t['sample_flow']['speedup']:.1f}x over fp32. "
        "Off by default: it pays only on runs long enough to amortise the compile. Only the backbone is compiled: "
        "compiling a generator's whole loss recompiled on every step (guards on the RoPE table cache and the "
        "row-wise random draws).",
        f"- **AR** sampling does not gain from bf16 ({t['sample_ar']['speedup']:.2f}x with {t['sample_ar']['best']}): "
        "each decode step multiplies one token per row, bound by memory traffic and per-step overhead, not "
        "arithmetic. The decode step runs through `KVDecodeStep` (`vidgen/generators/kv_decode.py`: modulation, "
        "masks and RoPE tables built once per generation window, no per-token validation): "
        f"{1e3 * d['fp32']['generic_s']:.2f} → {1e3 * d['fp32']['decoder_s']:.2f} ms per step in fp32 "
        f"({d['fp32']['speedup']:.2f}x), {1e3 * d['bf16 weights']['generic_s']:.2f} → "
        f"{1e3 * d['bf16 weights']['decoder_s']:.2f} ms with bf16 weights, {d['fp32']['rows']} rows at position "
        f"{d['fp32']['position']}. `use_cache=False` remains the reference path: the cached tokens equal the uncached "
        "ones in fp32, and in bf16 at most 4 of 64 greedy tokens differ, on near-ties (tests/unit/test_generators_bf16.py)."]
    return "\n".join(textwrap.fill(b, width=118, subsequent_indent="  ", break_on_hyphens=False,
                                   break_long_words=False) for b in bullets)
