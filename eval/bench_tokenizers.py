#!/usr/bin/env python
"""Compare trained tokenizers (continuous VAE and discrete VQ/FSQ/LFQ/BSQ) in one table on held-out clips.

    python eval/bench_tokenizers.py runs/vae_small/final runs/fsq_small/final runs/lfq_small/final \
        --clips 64 --frames 17 --size 64 --out outputs/bench_tokenizers

Per tokenizer: PSNR, SSIM, temporal flicker, perceptual distance (LPIPS when its ImageNet backbone is cached,
otherwise ST-LPIPS, labelled as such), rFVD (I3D, originals vs reconstructions), bits per token, tokens per
second of video, codebook utilization and perplexity over all held-out tokens, encode/decode frames per second.
Writes ``results.json``, ``results.md`` and ``side_by_side.png`` (original | each tokenizer | abs error) under
``--out``, and ``docs/results/bench_tokenizers.json`` (``--results``), from which the README table is generated.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from vidgen.cli.eval_recon import load_eval_set, per_source, reconstruct  # noqa: E402
from vidgen.io import contact_sheet, save_image  # noqa: E402
from vidgen.metrics.fvd import FrechetVideoDistance  # noqa: E402
from vidgen.metrics.perceptual import load_perceptual  # noqa: E402
from vidgen.metrics.reconstruction import reconstruction_metrics  # noqa: E402
from vidgen.tokenizers.loading import is_discrete, load_tokenizer  # noqa: E402
from vidgen.tokenizers.quantizers import CodebookUsage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402  (imported first: the run's start load)


@torch.no_grad()
def label(path: str) -> str:
    """A tokenizer's name in the picture: the run for ``runs/<run>/final``, else the folder (``pretrained/<name>``)."""
    path = Path(path)
    return path.parent.name if path.name == "final" else path.name


def describe(model, clips: torch.Tensor, fps: float) -> dict:
    t, h, w = clips.shape[2:]
    grid = model.latent_grid(t, h, w)
    info = {"class": type(model).__name__, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "latent_grid": list(grid)}  # fmt: skip
    if is_discrete(model):
        depth = model.config.num_quantizers
        info.update(quantizer=model.config.quantizer + (f" x{depth}" if depth > 1 else ""),
                    vocab_size=model.vocab_size, bits_per_token=model.bits_per_token,
                    tokens_per_second=math.prod(grid) * depth / (t / fps))  # fmt: skip
    else:
        info.update(quantizer="KL (continuous)", latent_channels=model.config.latent_channels)
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokenizers", nargs="+", help="save_pretrained folders of CausalVAE / CausalVQVAE")
    parser.add_argument("--data", default="natural", help="'natural' (held-out NaturalClips) or a video folder")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--fps", type=float, default=8.0, help="frame rate used for tokens per second of video")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--chunk-frames", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fvd", action="store_true", help="skip rFVD (the I3D pass is the slowest part)")
    parser.add_argument("--out", default="outputs/bench_tokenizers")
    parser.add_argument("--results", default="docs/results/bench_tokenizers.json",
                        help="the committed results file the README table is generated from ('' to skip)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the results file's rows of other tokenizers (their runs may be gone; the setup must "
                        "match), replacing rows of the same path; every row records the command that measured it")
    args = parser.parse_args(argv)
    kept = kept_rows(Path(args.results), args) if args.keep else []
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    clips, sources = load_eval_set(args.data, args.clips, args.frames, args.size, args.seed)
    perceptual = load_perceptual("auto")
    fvd = None if args.no_fvd else FrechetVideoDistance(num_threads=args.threads, progress=False)
    if fvd is not None:
        fvd.update(clips, real=True)
    rows, previews = [], [clips[0]]
    for path in args.tokenizers:
        model = load_tokenizer(path)
        usage = CodebookUsage(model.vocab_size) if is_discrete(model) else None  # every token, all depths
        recon, enc_s, dec_s = reconstruct(model, clips, args.batch, args.chunk_frames, usage)
        frames = clips.shape[0] * clips.shape[2]
        metrics = reconstruction_metrics(clips, recon, perceptual)
        row = {"tokenizer": path, **describe(model, clips, args.fps),
               **{name: values.mean().item() for name, values in metrics.items()},
               "psnr_per_source": per_source(metrics["psnr"], sources),
               "encode_fps": frames / enc_s, "decode_fps": frames / dec_s}  # fmt: skip
        if usage is not None:
            row.update(utilization=usage.utilization, perplexity=usage.perplexity, tokens_counted=usage.total)
            if model.config.quantizer == "fsq" and model.config.num_quantizers == 1:  # why utilization is what it is
                levels = tuple(model.config.fsq_levels)
                row["fsq_level_usage"] = [[round(v, 4) for v in axis] for axis in usage.level_usage(levels)]
                row["utilization_if_axes_independent"] = usage.independent_axes_utilization(levels)
        if fvd is not None:
            fvd.reset(keep_real=True)
            fvd.update(recon, real=False)
            result = fvd.compute()
            row.update(rfvd=result["value"], rfvd_noise_floor=result["noise_floor"],
                       fvd_weights_sha256=result["protocol"]["weights_sha256"])
        rows.append(row)
        previews += [recon[0], (recon[0] - clips[0]).abs() * 2 - 1]
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}, default=str))

    setup = {"data": args.data, "clips": len(clips), "frames": args.frames, "size": args.size,
             "threads": args.threads, "chunk_frames": args.chunk_frames, "perceptual": perceptual.name}  # fmt: skip
    (out / "results.json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=2, default=str))
    if args.results:
        command = " ".join(["python", "eval/bench_tokenizers.py", *(sys.argv[1:] if argv is None else argv)])
        written = kept + [{**row, "command": command} for row in rows]
        print(f"wrote {write_result(args.results, {'setup': setup, 'rows': written}, command, args.threads)}")
    (out / "results.md").write_text(markdown_table(rows, perceptual.name, setup))
    labels = ["original"] + [s for p in args.tokenizers for s in (label(p), f"|error| {label(p)}")]
    save_image(out / "side_by_side.png", contact_sheet(previews, labels, scale=2))
    print((out / "results.md").read_text())
    return 0


def kept_rows(results_file: Path, args) -> list[dict]:
    """The rows of ``results_file`` that this run does not re-measure, each with the command that measured it
    (rows from before rows carried one take the file's). Refuses when the file's setup differs from this run's."""
    if not results_file.is_file():
        return []
    old = json.loads(results_file.read_text())
    mine = {"data": args.data, "frames": args.frames, "size": args.size, "chunk_frames": args.chunk_frames}
    theirs = {k: old["setup"].get(k) for k in mine}
    if theirs != mine or old["setup"].get("clips") != args.clips:
        raise SystemExit(f"--keep: {results_file} was measured with {old['setup']}; this run's setup {mine} with "
                         f"{args.clips} clips differs, so its rows would not compare: match it or drop --keep")
    again = {Path(p).resolve() for p in args.tokenizers}
    return [{"command": old["command"], **row} for row in old["rows"]
            if Path(row["tokenizer"]).resolve() not in again]


def markdown_table(rows: list[dict], perceptual_name: str, setup: dict) -> str:
    def fmt(value, spec):
        return "—" if value is None else format(value, spec)

    head = (f"| tokenizer | bottleneck | PSNR | SSIM | {perceptual_name} | rFVD | bits/token | tokens/s of video | "
            "utilization | perplexity | encode f/s | decode f/s |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {label(r['tokenizer'])} | {r['quantizer']} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
            f"{r[perceptual_name]:.3f} | {fmt(r.get('rfvd'), '.1f')} | {fmt(r.get('bits_per_token'), '.1f')} | "
            f"{fmt(r.get('tokens_per_second'), '.0f')} | {fmt(r.get('utilization'), '.1%')} | "
            f"{fmt(r.get('perplexity'), '.0f')} | {r['encode_fps']:.0f} | {r['decode_fps']:.0f} |")
    sources = sorted({s for r in rows for s in r.get("psnr_per_source", {})})
    if sources:  # the held-out photographs differ a lot in difficulty: show the spread, not only the mean
        lines += ["", "| tokenizer | " + " | ".join(f"PSNR {s}" for s in sources) + " |", "|---" * (len(sources) + 1) + "|"]
        for r in rows:
            per = r.get("psnr_per_source", {})
            lines.append(f"| {label(r['tokenizer'])} | " + " | ".join(fmt(per.get(s), ".2f") for s in sources) + " |")
    lines.append("")
    lines.append(f"Setup: {json.dumps(setup)}")
    return "\n".join(lines) + "\n"


def readme_table(results: dict) -> str:
    """The README's tokenizer table (``eval/readme_tables.py``, marker ``tokenizers``) from a results file."""
    table = markdown_table(results["rows"], results["setup"]["perceptual"], results["setup"]).rstrip("\n")
    commands = list(dict.fromkeys(row.get("command", results["command"]) for row in results["rows"]))
    provenance = "; ".join(f"`{c}`" for c in commands)
    return table.rsplit("\n\nSetup:", 1)[0] + f"\n\n{results['date'][:10]}; {provenance}."


if __name__ == "__main__":
    sys.exit(main())
