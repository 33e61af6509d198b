"""Benchmark: streaming as a user feels it, the block-causal pipeline against the flow and autoregressive ones.

Each pipeline streams one ``--frames``-frame 64x64 video at batch 1 through ``pipe.stream`` (its shipped sampling
settings, the prompt encoded inside the call, frames decoded as they are made), and the clock reads:

* **latency to the first frame**: from the call to the first frames handed out;
* **steady frames/s**: the frames after the first chunk over the time after it.

Each video is also streamed as latents only (no decoding), which splits a frame's time into making its latents
and decoding them (paired within each round), and counts the transformer's backbone calls. The same-run ceiling is
the stream decoder alone (the causal pipeline's VAE turning ready latents into frames, the
cost every pipeline pays after generating): no pipeline streams faster than it. Rounds alternate between the
pipelines (a change of machine load hits each; odd rounds run them in reverse order), every round is recorded, and
each figure is the median over ``--rounds`` (at least 5). Targets: steady frames/s at least 2x the autoregressive
pipeline's and 5x the flow pipeline's, each ratio taken within a round and judged on the median of the rounds' ratios
with their minimum stated beside it; first frame within 0.3 s; steady at least 24 frames/s (real time). A negative
time (a clock, or decoding's share: a round's total less its latents-only time) is an error, not a result.

    python eval/bench_streaming.py --pipeline causal=pretrained/shapes-causal \\
        --pipeline flow=pretrained/shapes-flow --pipeline autoregressive=pretrained/shapes-autoregressive
    # -> docs/results/bench_streaming.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import (alternate, checked_seconds, paired_ratios, require_rounds, rounds_summary,  # noqa: E402
                     write_result)

PROMPT = "a red circle moving right on a black background"
TARGETS = {"vs_autoregressive": 2.0, "vs_flow": 5.0, "first_frame_s": 0.3, "steady_fps": 24.0}


def stream_once(pipe, frames: int, size: int, seed: int) -> dict:
    """One streamed video: seconds to the first frames, and the steady rate after them."""
    start = time.perf_counter()
    parts = pipe.stream(PROMPT, num_frames=frames, height=size, width=size, output_type="pt",
                        generator=torch.Generator().manual_seed(seed))
    first = next(parts)
    first_s = time.perf_counter() - start
    rest = sum(p.shape[1] for p in parts)
    total = time.perf_counter() - start
    if first.shape[1] + rest != frames:
        raise RuntimeError(f"{type(pipe).__name__} streamed {first.shape[1] + rest} frames, {frames} asked")
    name = type(pipe).__name__
    steady_s = checked_seconds(total - first_s, f"{name}: time after the first frames")
    return {"first_frame_s": checked_seconds(first_s, f"{name}: first frame"), "first_chunk_frames": first.shape[1],
            "steady_fps": rest / max(steady_s, 1e-9), "total_s": checked_seconds(total, f"{name}: total")}


def generation_only(pipe, frames: int, size: int, seed: int) -> dict:
    """The same video streamed as latents (no decoding): seconds, and the transformer's backbone calls and tokens per
    call (a pipeline that decodes tokens through its own KV step outside the backbone counts only its prefills)."""
    calls = []
    hook = pipe.transformer.backbone.register_forward_pre_hook(lambda _, args: calls.append(args[0].shape[1]))
    try:
        start = time.perf_counter()
        for _ in pipe.stream(PROMPT, num_frames=frames, height=size, width=size, output_type="latent",
                             generator=torch.Generator().manual_seed(seed)):
            pass
        seconds = checked_seconds(time.perf_counter() - start, f"{type(pipe).__name__}: latents only")
    finally:
        hook.remove()
    return {"generate_s": seconds, "backbone_calls": len(calls),
            "tokens_per_call": statistics.median(calls) if calls else 0}


def decoder_ceiling(pipe, frames: int, size: int) -> float:
    """Frames/s of the pipeline's stream decoder alone on ready (random) latents: the rate no pipeline exceeds."""
    tok = pipe.video_tokenizer
    t, h, w = tok.latent_grid(frames, size, size)
    latents = torch.randn(1, tok.config.latent_channels, t, h, w, generator=torch.Generator().manual_seed(0))
    decoder = tok.stream_decoder(size, size)
    start, made = time.perf_counter(), 0
    with torch.no_grad():
        for i in range(t):
            made += decoder.push(latents[:, :, i:i + 1].to(tok.dtype)).shape[2]
    return made / (time.perf_counter() - start)


def missed_by(causal: dict, met: dict) -> dict:
    """Per missed target, how far off: the measured value as a fraction short of (or over) the target."""
    out = {}
    for key, ok in met.items():
        if not ok:
            value, target = causal[key], TARGETS[key]
            out[key] = round((value - target) / target if key == "first_frame_s" else (target - value) / target, 4)
    return out


def readme_table(results: dict) -> str:
    """The docs' and the causal card's table (``eval/readme_tables.py``, marker ``streaming``): each pipeline's
    first-frame latency and steady frames/s, the decoder ceiling, then the causal pipeline's targets."""
    lines = ["| pipeline | sampling | first frame | steady frames / s | ms a frame: latents / decoding |",
             "|---|---|---|---|---|"]
    for name, row in results["pipelines"].items():
        sampling = ", ".join(f"{k} {v}" for k, v in row["sampling"].items() if v is not None)
        decode = row.get("decode_ms_per_frame", 0.0)  # None: within the rounds' noise (bench_streaming.decode_split)
        split = ("–" if "generate_ms_per_frame" not in row else
                 f"{row['generate_ms_per_frame']:.1f} / within noise" if decode is None or decode < 0 else
                 f"{row['generate_ms_per_frame']:.1f} / {decode:.1f}" if decode >= 0.1 else
                 f"{row['generate_ms_per_frame']:.1f} / < 0.1")
        lines.append(f"| {name} | {sampling} | {row['first_frame_s']:.3f} s | {row['steady_fps']:.1f} | {split} |")
    lines.append(f"| stream decoder alone (the ceiling) | – | – | {results['decoder_ceiling_fps']:.1f} | – |")
    lines += ["", f"One {results['frames']}-frame {results['size']}x{results['size']} video at batch 1 per pipeline, "
              f"median of {results['rounds']} rounds, {results['precision']}, {results['threads']} threads, "
              f"{results['cpu']}, {results['date'][:10]}; `python eval/bench_streaming.py`."]
    c = results.get("causal")
    if c:
        t = results["targets"]
        worst = c.get("worst_round")  # files before every round was judged lack it

        def beside(key, fmt, unit=""):  # how the figure was judged, and its worst round
            if not worst:
                return "ratio of the medians" if key.startswith("vs_") else "median"
            return f"median, worst round {format(worst[key], fmt)}{unit}" if key in worst else "median"
        said = {"vs_autoregressive": f"steady frames/s {c.get('vs_autoregressive', 0):.1f}x the autoregressive "
                                     f"pipeline's ({beside('vs_autoregressive', '.2f', 'x')}; target >= "
                                     f"{t['vs_autoregressive']:.0f}x)",
                "vs_flow": f"{c.get('vs_flow', 0):.1f}x the flow pipeline's ({beside('vs_flow', '.2f', 'x')}; "
                           f"target >= {t['vs_flow']:.0f}x)",
                "first_frame_s": f"first frame in {c['first_frame_s']:.3f} s ("
                                 f"{beside('first_frame_s', '.3f', ' s')}; target <= {t['first_frame_s']} s)",
                "steady_fps": f"steady {c['steady_fps']:.1f} frames/s ({beside('steady_fps', '.1f')}; real "
                              f"time: target >= {t['steady_fps']:.0f})"}
        gap = c.get("missed_by", {})
        lines += ["", "The causal pipeline: " + "; ".join(
            f"{said[k]}: " + ("met" if ok else f"missed by {100 * gap[k]:.0f} %" if k in gap else "missed")
            for k, ok in c["met"].items()) + "."]
    return "\n".join(lines)


def decode_split(rounds: list[dict], frames: int) -> dict:
    """Where a frame's time goes, from one pipeline's rounds: making its latents (the latents-only run) and the rest
    (decoding, handing out: the streamed run's total less the latents-only run, paired within each round). The rest is
    a difference of two runs; where it goes negative in any round it is within the rounds' noise and is not reported
    (``decode_ms_per_frame`` None, ``decode_unresolved`` says why), as a negative time is no result."""
    generate = rounds_summary(r["generate_s"] for r in rounds)
    rest = [r["total_s"] - r["generate_s"] for r in rounds]
    out = {"generate_ms_per_frame": 1e3 * generate["median"] / frames,
           "decode_ms_per_frame_rounds": [1e3 * x / frames for x in rest]}
    negative = sum(x < 0 for x in rest)
    if negative:
        out["decode_ms_per_frame"] = None
        out["decode_unresolved"] = (f"the streamed run took less than the latents-only run in {negative} of "
                                    f"{len(rest)} rounds: decoding's share is within the rounds' noise")
    else:
        out["decode_ms_per_frame"] = 1e3 * rounds_summary(rest)["median"] / frames
    return out


def summarize(runs: dict, ceiling: list, frames: int, quick: bool = False) -> dict:
    """The results from every pipeline's rounds (``runs[name]``: one dict per round, as :func:`stream_once` and
    :func:`generation_only` give them) and the decoder ceiling's rounds: medians, every round kept, and the causal
    pipeline's targets judged on the median of at least five rounds (ratios paired within each round), the worst round
    beside it."""
    n = {len(rs) for rs in runs.values()} | {len(ceiling)}
    if len(n) != 1:
        raise ValueError(f"every pipeline and the ceiling need the same rounds, got {sorted(n)}")
    require_rounds(n.pop(), quick)
    rows = {}
    for name, rs in runs.items():
        for r in rs:
            for key in ("first_frame_s", "total_s", "generate_s"):
                checked_seconds(r[key], f"{name}: {key}")
        rows[name] = {**{k: rounds_summary(r[k] for r in rs)["median"]
                         for k in ("first_frame_s", "steady_fps", "total_s", "generate_s")},
                      "steady_fps_min": min(r["steady_fps"] for r in rs),
                      "first_frame_s_max": max(r["first_frame_s"] for r in rs),
                      "backbone_calls": rs[0]["backbone_calls"], "tokens_per_call": rs[0]["tokens_per_call"],
                      "first_chunk_frames": rs[0]["first_chunk_frames"], "rounds": rs, **decode_split(rs, frames)}
    result = {"decoder_ceiling_fps": rounds_summary(ceiling)["median"], "decoder_ceiling_fps_rounds": list(ceiling),
              "pipelines": rows, "targets": TARGETS}
    if "causal" in rows:
        c, cr = rows["causal"], runs["causal"]
        others = [o for o in rows if o != "causal"]
        whole = [o for o in others if not all(r["steady_fps"] > 0 for r in runs[o])]  # one chunk: no steady rate
        ratios = {f"vs_{other}": paired_ratios((r["steady_fps"] for r in cr), (r["steady_fps"] for r in runs[other]))
                  for other in others if other not in whole}
        result["causal"] = {
            "steady_fps": c["steady_fps"], "first_frame_s": c["first_frame_s"],
            "fraction_of_decoder_ceiling": c["steady_fps"] / result["decoder_ceiling_fps"],
            **{k: v["median"] for k, v in ratios.items()}, "ratio_rounds": ratios,
            "worst_round": {"steady_fps": c["steady_fps_min"], "first_frame_s": c["first_frame_s_max"],
                            **{k: v["min"] for k, v in ratios.items()}},
            "judged_on": f"median of {len(cr)} rounds",
            **({"no_steady_rate": whole} if whole else {})}
        met = {"first_frame_s": c["first_frame_s"] <= TARGETS["first_frame_s"],
               "steady_fps": c["steady_fps"] >= TARGETS["steady_fps"]}
        met.update({k: result["causal"][k] >= TARGETS[k] for k in ("vs_autoregressive", "vs_flow")
                    if k in result["causal"]})
        result["causal"]["met"] = met
        result["causal"]["missed_by"] = missed_by(result["causal"], met)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", action="append", default=[], metavar="NAME=FOLDER", required=True)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer than 5 rounds allowed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/results/bench_streaming.json")
    args = parser.parse_args(argv)
    require_rounds(args.rounds, args.quick)
    from vidgen.pipelines import load_pipeline
    torch.set_num_threads(args.threads)
    pipes, folders = {}, {}
    for spec in args.pipeline:
        name, _, folder = spec.partition("=")
        folders[name] = folder
        pipes[name] = load_pipeline(folder, dtype="fp32")
        pipes[name].set_progress_bar_config(disable=True)
    for pipe in pipes.values():  # warm-up: the text encoder's first load and first calls stay out of the clock
        stream_once(pipe, min(args.frames, 9), args.size, seed=0)
    runs = {name: [] for name in pipes}
    ceiling = []
    for r in range(args.rounds):
        for name in alternate(pipes, r):  # odd rounds in reverse order
            runs[name].append({**stream_once(pipes[name], args.frames, args.size, seed=r),
                               **generation_only(pipes[name], args.frames, args.size, seed=r)})
        ceiling.append(decoder_ceiling(next(iter(pipes.values())), args.frames, args.size))
    summary = summarize(runs, ceiling, args.frames, args.quick)
    for name, row in summary["pipelines"].items():
        summary["pipelines"][name] = {"folder": folders[name], "sampling": pipes[name].sampling_config.to_dict(),
                                      **row}
    result = {"frames": args.frames, "size": args.size, "batch": 1, "rounds": args.rounds, **summary}
    path = write_result(args.out, result, threads=args.threads, weights=list(folders.values()), precision="fp32")
    for name, row in result["pipelines"].items():
        print(f"{name:16s} first frame {row['first_frame_s']:.3f} s, steady {row['steady_fps']:.1f} frames/s")
    print(f"decoder ceiling {result['decoder_ceiling_fps']:.1f} frames/s -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
