#!/usr/bin/env python
"""diffusers' step caches through ``pipe.enable_cache`` on a random Wan pipeline on this CPU: MagCache and TaylorSeer
beside first-block caching, each against no cache in the same run (docs/real-models.md#caches).

The model: the tiny Wan pipeline's VAE, text encoder and scheduler (:mod:`vidgen.pipelines.diffusers_tiny`) with a
larger random ``WanTransformer3DModel`` (``--width`` heads x 32 channels, ``--layers`` blocks; fixed seed), saved once
to a temporary folder in fp32 (its weights' sha256 are in the results file) and loaded by ``load_pipeline`` as a user
loads a folder. Random weights: the differences say how far a cache moves these frames, not what it does to a
trained model's quality. One call: ``--steps`` steps at CFG 5.0 (Wan guides by separate passes: two transformer calls
per step), ``--frames`` x ``--size`` x ``--size`` pixels, fp32.

Methods (each call seeded alike):

* ``none``: no cache (the reference);
* ``first_block``: ``FirstBlockCacheConfig(threshold=0.05)`` (diffusers' example threshold);
* ``mag_cache``: ``MagCacheConfig(mag_ratios=..., num_inference_steps=steps)`` at its default threshold 0.06,
  max_skip_steps 3, retention 0.2, with the ratios :func:`~vidgen.pipelines.cache_configs.calibrate_mag_cache`
  measures on this pipeline first (recorded);
* ``taylorseer``: ``TaylorSeerCacheConfig()`` at its defaults (cache_interval 5, first 3 steps computed, order 1);
* ``taylorseer_lite``: the same with ``use_lite_mode=True``.

A warm-up call per method, then ``--rounds`` rounds; each round runs every method once, the order reversed on odd
rounds (:func:`results.alternate`). Per method: seconds per call (median, min, max of the rounds), the speed-up
over ``none`` (the median of the per-round ratios, paired within each round), how many times the last block's
self-attention ran in a call (the work a cache skipped shows there; ``none`` runs it 2 x steps times) and the
frames' max and mean absolute difference from ``none``'s (frames in [0, 1]).

    python eval/bench_caches.py               # minutes at 1 thread (more on a loaded machine); the results file
    python eval/bench_caches.py --quick --out /tmp/caches.json  # tiny sizes, 2 rounds: a smoke run
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import alternate, paired_ratios, require_rounds, rounds_summary, write_result  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

METHODS = ("none", "first_block", "mag_cache", "taylorseer", "taylorseer_lite")
PROMPT = "a red fox running through snow"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 rounds (a smoke run; judges nothing)")
    p.add_argument("--out", default="docs/results/bench_caches.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--width", type=int, default=8, help="attention heads (32 channels each)")
    p.add_argument("--layers", type=int, default=4)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.frames, args.size, args.width, args.layers = 2, 6, 9, 32, 2, 2
    require_rounds(args.rounds, args.quick)
    return args


def build_folder(folder: Path, heads: int, layers: int) -> Path:
    """The tiny Wan pipeline with a ``heads`` x 32, ``layers``-block random transformer, saved to ``folder``."""
    import diffusers

    from vidgen.pipelines.diffusers_tiny import tiny_components
    parts = tiny_components("wan")
    text_dim = parts["transformer"].config.text_dim
    with torch.random.fork_rng():
        torch.manual_seed(0)
        parts["transformer"] = diffusers.WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=32, in_channels=16, out_channels=16,
            text_dim=text_dim, freq_dim=256, ffn_dim=4 * 32 * heads, num_layers=layers, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=1024).eval()
    diffusers.WanPipeline(**parts).save_pretrained(folder)
    return folder


def configs(pipe, args, call: dict) -> tuple[dict, list]:
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    from vidgen.pipelines.cache_configs import calibrate_mag_cache
    ratios = calibrate_mag_cache(pipe, PROMPT, generator=torch.Generator().manual_seed(1), **call)
    return {"none": None,
            "first_block": FirstBlockCacheConfig(threshold=0.05),
            "mag_cache": MagCacheConfig(mag_ratios=ratios, num_inference_steps=args.steps),
            "taylorseer": TaylorSeerCacheConfig(),
            "taylorseer_lite": TaylorSeerCacheConfig(use_lite_mode=True)}, ratios


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from vidgen.pipelines import load_pipeline
    call = dict(num_inference_steps=args.steps, num_frames=args.frames, height=args.size, width=args.size,
                guidance_scale=5.0, output_type="np")
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp) / "wan", args.width, args.layers)
        pipe = load_pipeline(folder, dtype="fp32")
        pipe.set_progress_bar_config(disable=True)
        calls = []
        pipe.transformer.blocks[-1].attn1.to_q.register_forward_hook(lambda *a: calls.append(1))
        methods, ratios = configs(pipe, args, call)

        def run(method):
            if methods[method] is not None:
                pipe.enable_cache(methods[method])
            try:
                calls.clear()
                start = time.perf_counter()
                frames = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames
                return time.perf_counter() - start, frames, len(calls)
            finally:
                pipe.disable_cache()

        frames, block_calls, seconds = {}, {}, {m: [] for m in METHODS}
        for m in METHODS:  # warm-up, and the frames (each call with the same seed gives the same frames)
            _, frames[m], block_calls[m] = run(m)
        for r in range(args.rounds):
            for m in alternate(METHODS, r):
                t, f, _ = run(m)
                seconds[m].append(t)
                assert np.array_equal(f, frames[m]), f"{m}: frames changed between calls"
        weights = [str(p) for p in folder.rglob("*.safetensors")]
        per_method = {}
        for m in METHODS:
            diff = np.abs(frames[m] - frames["none"])
            per_method[m] = {
                "s_per_call": rounds_summary(seconds[m]),
                "speedup_vs_none": paired_ratios(seconds["none"], seconds[m]),
                "last_block_self_attention_calls": block_calls[m],
                "frames_max_abs_diff": float(diff.max()), "frames_mean_abs_diff": float(diff.mean())}
        import diffusers
        payload = {
            "what": "diffusers step caches through pipe.enable_cache on a random Wan pipeline, against no cache",
            "quick": args.quick,
            "model": {"transformer": "WanTransformer3DModel", "heads": args.width, "head_dim": 32,
                      "layers": args.layers, "parameters": sum(p.numel() for p in pipe.transformer.parameters()),
                      "weights": "random (seed 0); VAE / text encoder / scheduler of the tiny Wan pipeline"},
            "call": {k: v for k, v in call.items() if k != "output_type"},
            "guidance": "CFG by separate passes (2 transformer calls per step)",
            "rounds": args.rounds, "order": "alternating (reversed on odd rounds)",
            "configs": {m: (repr(c) if c is not None else None) for m, c in methods.items() if m != "mag_cache"}
            | {"mag_cache": "MagCacheConfig(mag_ratios=<mag_ratios>, num_inference_steps=%d) defaults otherwise"
               % args.steps},
            "mag_ratios": ratios,
            "methods": per_method,
            "median_s_per_call": {m: round(statistics.median(seconds[m]), 4) for m in METHODS},
            "diffusers": diffusers.__version__,
        }
        return write_result(args.out, payload, threads=args.threads, weights=weights, precision="fp32"), payload


if __name__ == "__main__":
    path, payload = main()
    for m, row in payload["methods"].items():
        print(f"{m:16s} {row['s_per_call']['median']:.3f} s/call  x{row['speedup_vs_none']['median']:.2f}  "
              f"last-block calls {row['last_block_self_attention_calls']:3d}  max diff "
              f"{row['frames_max_abs_diff']:.4f}  mean {row['frames_mean_abs_diff']:.5f}")
    print(path)
