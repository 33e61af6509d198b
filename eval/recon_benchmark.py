#!/usr/bin/env python
"""Reconstruction benchmark of one trained tokenizer (same as ``vidgen eval recon``; see its --help), with its
results file under ``docs/results/`` for the README table.

    python eval/recon_benchmark.py pretrained/natural-vae-small --clips 32 --frames 17 --size 64 \\
        --tiling-size 256 --fvd --out outputs/recon_natural_vae_small     # -> docs/results/recon_benchmark.json

Comparison rows (issue #35: what the data, the width and the compression each buy), every model on every data and
size, against the bicubic resize baseline (4x spatial down/up, every other frame):

    python eval/recon_benchmark.py - --compare bicubic-32x=bicubic small=pretrained/natural-vae-small \
        --datasets natural scenes --sizes 64 128 --clips 32 --fvd --threads 2 --out outputs/recon_comparison
                                                                        # -> docs/results/recon_comparison.json
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vidgen.cli.eval_recon import add_arguments, run  # noqa: E402
from vidgen.metrics.frechet import reliability  # noqa: E402
from vidgen.metrics.fvd import FrechetVideoDistance  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402


def rfvd_cell(results: dict) -> str:
    """An rFVD for a table, flagged when it comes from fewer clips than a reliable FD needs (results files written
    before the flag was stored are judged by their clip count)."""
    rfvd = results.get("rfvd")
    if not isinstance(rfvd, (int, float)):
        return "–"
    flag = results.get("rfvd_reliability") or reliability(results["clips"], results["clips"], FrechetVideoDistance.dim)
    if flag["reliable"]:
        return f"{rfvd:.0f}"
    return f"{rfvd:.0f} (unreliable: {min(flag['n_real'], flag['n_fake'])} clips, < {flag['min_samples']})"


def readme_table(results: dict) -> str:
    """The README table (``<!-- table:recon -->``) from ``docs/results/recon_benchmark.json``."""
    perceptual = next((k for k in results if "lpips" in k.lower()), None)
    tiling = results.get("tiling")
    lines = ["| PSNR | SSIM | " + (f"{perceptual} | " if perceptual else "") + "rFVD | flicker | encode / decode "
             "frames/s | peak RSS | chunked vs one-shot max abs diff | tiled vs untiled PSNR |",
             "|---" * (8 + bool(perceptual)) + "|"]
    tiled = (f"**{tiling['psnr_tiled_vs_untiled']:.1f} dB** ({tiling['size']}x{tiling['size']}, tile "
             f"{tiling['tile']}, overlap {tiling['overlap']})") if tiling else "–"
    lines.append(f"| {results['psnr']:.2f} dB | {results['ssim']:.3f} | "
                 + (f"{results[perceptual]:.3f} | " if perceptual else "")
                 + f"{rfvd_cell(results)} | "
                 + f"{results['flicker']:.3f} | {results['encode_frames_per_s']:.0f} / "
                 f"{results['decode_frames_per_s']:.0f} | {results['peak_rss_mb']:.0f} MB | "
                 f"{results['max_abs_diff_chunked_vs_one_shot']:.1e} | {tiled} |")
    spread = ", ".join(f"{k} {v:.2f}" for k, v in results["psnr_per_source"].items())
    lines += ["", f"`{results['model']}` ({results['class']}, {results['params_m']:.2f} M params), {results['clips']} "
              f"held-out clips of {results['frames']}x{results['size']}x{results['size']}, {results['threads']} "
              f"thread(s), load average {results['loadavg_start'][0]:.2f} at start. PSNR per photograph: {spread}."]
    if results.get("protocol"):
        lines.append(f"Protocol `{results['protocol']['name']}`: {results['protocol']['description']}.")
    if results.get("skipped"):
        lines.append(f"{len(results['skipped'])} clip(s) of the data were skipped (`--skip-bad`); the results file "
                     "lists each with the reason.")
    if tiling:
        lines.append(f"Tiled and untiled decodes are {tiling['psnr_untiled_vs_original']:.2f} / "
                     f"{tiling['psnr_tiled_vs_original']:.2f} dB from the {tiling['size']}x{tiling['size']} "
                     "originals (the model was trained at 64x64).")
    lines.append(f"{results['date'][:10]}; `{results['command']}`.")
    return "\n".join(lines)


def comparison_table(results: dict) -> str:
    """The README table (``<!-- table:recon_comparison -->``) from ``docs/results/recon_comparison.json``: one row
    per tokenizer, data and size, so what the data, the width and the compression buy reads off side by side."""
    rows = results["rows"]
    lines = ["| tokenizer | data | size | values stored | PSNR | SSIM | ST-LPIPS | rFVD | codes used | vs bicubic |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    def is_baseline(row: dict) -> bool:
        return row["class"] == "ResizeBaseline"

    baseline = {(r["data"], r["size"]): r["psnr"] for r in rows if is_baseline(r)}
    for r in rows:
        perceptual = next((v for k, v in r.items() if "lpips" in k.lower() and isinstance(v, float)), None)
        gap = r["psnr"] - baseline[(r["data"], r["size"])] if (r["data"], r["size"]) in baseline else None
        lines.append(f"| {r['name']} | {r['data']} | {r['size']} | 1/{r['compression']:.0f} | {r['psnr']:.2f} dB | "
                     f"{r['ssim']:.3f} | " + (f"{perceptual:.3f}" if perceptual is not None else "–") + " | "
                     + rfvd_cell(r) + " | "
                     + (f"{r['utilization']:.1%}" if "utilization" in r else "–") + " | "
                     + ("–" if gap is None or is_baseline(r) else f"{gap:+.2f} dB") + " |")
    first = rows[0]
    lines += ["", f"{first['clips']} held-out clips of {first['frames']} frames per row (`natural`: camera paths over "
              "the 4 held-out photographs; `scenes`: SceneClips over the same photographs), "
              f"{results['threads']} thread(s). {results['date'][:10]}; `{results['command']}`."]
    return "\n".join(lines)


_NOT_COMPARED = ("psnr_per_source", "peak_rss_mb", "peak_rss_mb_before_reconstruction", "encode_frames_per_s",
                 "decode_frames_per_s")


def compare(args) -> dict:
    """Every ``--compare NAME=MODEL`` on every ``--data`` and ``--sizes``: the rows of the comparison table."""
    rows = []
    for spec in args.compare:
        name, _, model = spec.partition("=")
        if not model:
            raise SystemExit(f"--compare takes NAME=MODEL (MODEL a folder or 'bicubic'), got {spec!r}")
        for data in args.datasets:
            for size in args.sizes:
                row_args = argparse.Namespace(**{**vars(args), "model": model, "data": data, "size": size,
                                                 "png_clips": 0, "tiling_size": 0,
                                                 "out": f"{args.out}/{name}_{data}_{size}"})
                result = run(row_args)
                # Quality only: speeds and memory belong to the benchmarks that time them alone (bench_vae_speed)
                rows.append({"name": name, **{k: v for k, v in result.items() if k not in _NOT_COMPARED}})
                print(f"{name} {data} {size}: {result['psnr']:.2f} dB, SSIM {result['ssim']:.3f}")
    return {"rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--results", default=None, help="results file ('' to skip; default "
                        "docs/results/recon_benchmark.json, or recon_comparison.json with --compare)")
    parser.add_argument("--compare", nargs="+", default=None, metavar="NAME=MODEL",
                        help="comparison rows instead of one model's full benchmark (the positional model is ignored)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128], help="frame sizes of the comparison")
    parser.add_argument("--datasets", nargs="+", default=["natural"], help="held-out data of the comparison")
    args = parser.parse_args(argv)
    if args.compare:
        result = compare(args)
        results = "docs/results/recon_comparison.json" if args.results is None else args.results
    else:
        result = run(args)
        results = "docs/results/recon_benchmark.json" if args.results is None else args.results
    if results:
        print(f"wrote {write_result(results, result, threads=args.threads)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
