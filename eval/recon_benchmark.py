#!/usr/bin/env python
"""Reconstruction benchmark of one trained tokenizer (same as ``vidgen eval recon``; see its --help), with its
results file under ``docs/results/`` for the README table.

    python eval/recon_benchmark.py pretrained/natural-vae-small --clips 32 --frames 17 --size 64 \\
        --tiling-size 256 --fvd --out outputs/recon_natural_vae_small     # -> docs/results/recon_benchmark.json
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vidgen.cli.eval_recon import add_arguments, run  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402


def readme_table(results: dict) -> str:
    """The README table (``<!-- table:recon -->``) from ``docs/results/recon_benchmark.json``."""
    perceptual = next((k for k in results if "lpips" in k.lower()), None)
    rfvd = results.get("rfvd")
    tiling = results.get("tiling")
    lines = ["| PSNR | SSIM | " + (f"{perceptual} | " if perceptual else "") + "rFVD | flicker | encode / decode "
             "frames/s | peak RSS | chunked vs one-shot max abs diff | tiled vs untiled PSNR |",
             "|---" * (8 + bool(perceptual)) + "|"]
    tiled = (f"**{tiling['psnr_tiled_vs_untiled']:.1f} dB** ({tiling['size']}x{tiling['size']}, tile "
             f"{tiling['tile']}, overlap {tiling['overlap']})") if tiling else "–"
    lines.append(f"| {results['psnr']:.2f} dB | {results['ssim']:.3f} | "
                 + (f"{results[perceptual]:.3f} | " if perceptual else "")
                 + (f"{rfvd:.0f} | " if isinstance(rfvd, (int, float)) else "– | ")
                 + f"{results['flicker']:.3f} | {results['encode_frames_per_s']:.0f} / "
                 f"{results['decode_frames_per_s']:.0f} | {results['peak_rss_mb']:.0f} MB | "
                 f"{results['max_abs_diff_chunked_vs_one_shot']:.1e} | {tiled} |")
    spread = ", ".join(f"{k} {v:.2f}" for k, v in results["psnr_per_source"].items())
    lines += ["", f"`{results['model']}` ({results['class']}, {results['params_m']:.2f} M params), {results['clips']} "
              f"held-out clips of {results['frames']}x{results['size']}x{results['size']}, {results['threads']} "
              f"thread(s), load average {results['loadavg_start'][0]:.2f} at start. PSNR per photograph: {spread}."]
    if tiling:
        lines.append(f"Tiled and untiled decodes are {tiling['psnr_untiled_vs_original']:.2f} / "
                     f"{tiling['psnr_tiled_vs_original']:.2f} dB from the {tiling['size']}x{tiling['size']} "
                     "originals (the model was trained at 64x64).")
    lines.append(f"{results['date'][:10]}; `{results['command']}`.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--results", default="docs/results/recon_benchmark.json", help="results file ('' to skip)")
    args = parser.parse_args(argv)
    result = run(args)
    if args.results:
        print(f"wrote {write_result(args.results, result, threads=args.threads)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
