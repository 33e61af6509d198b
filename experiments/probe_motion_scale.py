"""Why does a VAE trained at 64x64 lose PSNR at 128x128, where bicubic gains? Probe (issue #35): reconstruct the
held-out NaturalClips with a tokenizer at (size, fps) pairs that separate content scale from motion per frame in
pixels. Camera speeds are defined per second, so 128x128 at 16 fps has the same pixel motion per frame as 64x64 at
8 fps, and 64x64 at 4 fps the same as 128x128 at 8 fps. Frame 0 is encoded alone by the causal VAE (no motion).

    git worktree add /tmp/v1 6dab268   # the natural-vae-small shipped before issue #35 retrained it
    .venv/bin/python experiments/probe_motion_scale.py /tmp/v1/pretrained/natural-vae-small \
        --out experiments/results/probe_motion_scale.json
"""
from __future__ import annotations

import argparse
import json

import torch

from vidgen.data import NaturalClips
from vidgen.metrics import psnr
from vidgen.tokenizers import load_tokenizer
from vidgen.training.samples import reconstruct_mode

SETTINGS = ((64, 8.0), (128, 8.0), (128, 16.0), (64, 4.0))


def frame_psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR of each frame of ``(B, 3, T, H, W)``, averaged over clips: ``(T,)``."""
    return torch.stack([psnr(x[:, :, t:t + 1], y[:, :, t:t + 1]) for t in range(x.shape[2])], 1).mean(0)


@torch.no_grad()
def probe(model: str, clips: int, frames: int) -> list[dict]:
    tok = load_tokenizer(model).eval()
    rows = []
    for size, fps in SETTINGS:
        data = NaturalClips("test", num_frames=frames, size=size, fps=fps, num_clips=clips)
        x = torch.stack([data[i]["video"] for i in range(clips)])
        per_frame = frame_psnr(x, reconstruct_mode(tok, x))  # posterior mode, clamped, as the benchmarks do
        rows.append({"size": size, "fps": fps, "pixels_per_frame_vs_64_at_8fps": size / 64 * 8 / fps,
                     "psnr": round(per_frame.mean().item(), 2), "psnr_frame0": round(per_frame[0].item(), 2),
                     "psnr_per_frame": [round(v, 2) for v in per_frame.tolist()]})
        print(f"{size}x{size} at {fps:g} fps: {rows[-1]['psnr']:.2f} dB (frame 0: {rows[-1]['psnr_frame0']:.2f})")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="tokenizer folder or run checkpoint (load_tokenizer)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="experiments/results/probe_motion_scale.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = probe(args.model, args.clips, args.frames)
    with open(args.out, "w") as f:
        json.dump({"model": args.model, "clips": args.clips, "frames": args.frames, "split": "NaturalClips test",
                   "rows": rows}, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
