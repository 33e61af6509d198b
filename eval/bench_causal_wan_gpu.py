"""Benchmark: the Wan2.1-T2V-1.3B architecture made block-causal (``vidgen.adapters.causal``) streaming at
480x832 on one GPU, against Self-Forcing's reported 17 frames/s (one H100, the same architecture).

Random weights in bf16 (the timing does not depend on them). A video is made chunk after chunk through the one
chunk loop (``BlockCausal.stream``, :func:`vidgen.generators.stream_loop.stream_chunks`): ``--chunk-frames`` latent
frames (3: Self-Forcing's), each denoised in ``--steps`` model calls at a few-step student's uniform levels against
the rolling KV cache of the sink and the last ``--window-chunks`` chunks, then cached by one pass at timestep 0 (run
before the next chunk's first call; the last chunk needs none). Read:

* **first chunk**: the seconds to the first chunk's clean latents (its denoising, no cache yet);
* **per chunk, steady**: the median seconds between chunks once the cache holds its full window (a chunk's denoising
  + the caching pass of the chunk before it);
* **steady frames/s**: the chunk's output frames (``chunk_frames x 4``, Wan's VAE: 4 frames per latent frame) over
  that time. VAE decoding is not included (Self-Forcing's 17 frames/s includes its decoder), so this is the
  transformer's rate, an upper bound of the pipeline's.

    python eval/bench_causal_wan_gpu.py                 # on the GPU: -> docs/results/bench_causal_wan_gpu.json
    python eval/bench_causal_wan_gpu.py --quick --out /tmp/q.json   # CPU smoke run: a tiny Wan, 64x64
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402  (imported first: the run's start load)

import torch  # noqa: E402

from bench_diffusers_models import build, device_info, latent_grid, sync  # noqa: E402

SELF_FORCING_FPS = 17.0  # Self-Forcing (Huang et al. 2025): Wan2.1-1.3B, chunk-wise, one H100


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU smoke run: a tiny Wan, 64x64, 3 chunks")
    p.add_argument("--out", default="docs/results/bench_causal_wan_gpu.json")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--chunk-frames", type=int, default=3)
    p.add_argument("--window-chunks", type=int, default=6)
    p.add_argument("--sink-chunks", type=int, default=1)
    p.add_argument("--chunks", type=int, default=10, help="chunks in the video (steady = those after the window fills)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--text-tokens", type=int, default=512)
    args = p.parse_args(argv)
    if args.quick:
        args.height, args.width, args.chunks, args.window_chunks, args.text_tokens = 64, 64, 4, 1, 16
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from vidgen.adapters.causal import block_causal
    device = torch.device("cpu" if args.quick else "cuda")
    gen, dtype = build(args, device)  # bf16, with the modules Wan keeps in fp32 kept so
    model = gen.model
    _, h, w = latent_grid(1, args.height, args.width)
    g = torch.Generator(device).manual_seed(0)
    text = torch.randn(1, args.text_tokens, model.config.text_dim, device=device, dtype=dtype, generator=g)
    causal = block_causal(model, args.chunk_frames, args.window_chunks, args.sink_chunks)
    student = {"steps": [args.steps], "guidance_scale": 1.0}  # a few-step student's uniform levels, guidance 1
    chunks = causal.stream(text, frames=args.chunks * args.chunk_frames, hw=(h, w), num_inference_steps=args.steps,
                           student=student, generator=g)
    chunk_s = []
    sync(device)
    t0 = time.perf_counter()
    for _ in chunks:  # each chunk's clean latents: the seconds since the chunk before it
        sync(device)
        now = time.perf_counter()
        chunk_s.append(now - t0)
        t0 = now
    first_s = chunk_s[0]
    causal.remove()
    full = args.sink_chunks + args.window_chunks if args.window_chunks else 1
    steady = chunk_s[full:] or chunk_s[-1:]
    per_chunk = statistics.median(steady)
    frames_per_chunk = args.chunk_frames * 4
    payload = {
        "model": "tiny Wan (--quick)" if args.quick else "Wan2.1-T2V-1.3B architecture (random weights)",
        "dtype": str(dtype).replace("torch.", ""), "height": args.height, "width": args.width,
        "latent_grid_per_chunk": [args.chunk_frames, h, w], "tokens_per_chunk": args.chunk_frames * (h // 2) * (w // 2),
        "chunk_frames": args.chunk_frames, "window_chunks": args.window_chunks, "sink_chunks": args.sink_chunks,
        "steps_per_chunk": args.steps, "text_tokens": args.text_tokens, "chunks": args.chunks,
        "first_chunk_s": first_s, "chunk_s": chunk_s, "steady_chunk_s": per_chunk,
        "steady_fps": frames_per_chunk / per_chunk, "self_forcing_fps": SELF_FORCING_FPS,
        "vs_self_forcing": frames_per_chunk / per_chunk / SELF_FORCING_FPS,
        "includes_vae_decode": False, "attention": "PyTorch SDPA (eager)", **device_info(device)}
    write_result(args.out, payload)
    print(f"first chunk {first_s:.3f} s, steady {per_chunk:.3f} s/chunk = {payload['steady_fps']:.1f} frames/s "
          f"(Self-Forcing: {SELF_FORCING_FPS}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
