#!/usr/bin/env python
"""Copy a trained tokenizer run into ``pretrained/`` with a model card (float16 storage, loaded as float32).

    python tokenizers/ship_tokenizer.py runs/vae_small_gan/final pretrained/natural-vae-small \
        --results docs/results/bench_tokenizers.json

The card lists every training stage (``init_from`` is followed back: config, steps, wall time, CPU-hours), the data,
and the held-out metrics of the run's row in the ``eval/bench_tokenizers.py`` results file; the copied weights are
checked to reconstruct like the run's (float16 rounding only) before anything is written. ``make pretrained``
(``pipelines/make_pretrained.py``) ships the general tokenizers with :func:`ship`, passing their recipe stages
(``configs/natural-*/``) so the card cites the recipe.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from vidgen.errors import ConfigError  # noqa: E402
from vidgen.tokenizers.loading import is_discrete, load_tokenizer  # noqa: E402
from vidgen.training.release import run_stages, store_half  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

DATA = {"natural": "the built-in `NaturalClips` train split: smooth pan / zoom / rotate camera paths over 13 photographs "
                   "shipped by scikit-image and scikit-learn; held out: 4 other photographs (chelsea, rocket, flower, "
                   "coins)",
        "scenes": "the built-in `SceneClips` train split: NaturalClips' camera paths over 16 photographs (its 13, plus "
                  "grace_hopper from matplotlib, cheetah and tower from gradio), with up to 4 independently moving "
                  "soft-edged cut-outs, motion blur, exposure and white-balance drift, sensor noise and JPEG or "
                  "inter-frame compression; chosen and stopped on the val photographs (lion, groot); held out: "
                  "NaturalClips' 4 test photographs (chelsea, rocket, flower, coins)",
        "shapes": "the built-in captioned `ShapesDataset`, train split"}


def describe(model, preset: str) -> str:
    c = model.config
    head = f"`{type(model).__name__}` preset `{preset}` (widths {tuple(c.widths)})"
    if is_discrete(model):
        detail = f"FSQ levels {tuple(c.fsq_levels)}" if c.quantizer == "fsq" else f"{c.quantizer}, {model.vocab_size} codes"
        return f"{head}, {detail} ({model.bits_per_token:.1f} bits/token)"
    return f"{head}, KL, {c.latent_channels} latent channels"


def metrics_row(results_file: Path, run_final: Path) -> tuple[dict | None, dict]:
    if not results_file.is_file():
        return None, {}
    results = json.loads(results_file.read_text())
    for row in results["rows"]:  # a row names the run as the benchmark was called: from the repository root, usually
        if run_final.resolve() in (Path(row["tokenizer"]).resolve(), (ROOT / row["tokenizer"]).resolve()):
            return row, results
    return None, results


def shown(results_file: Path) -> str:
    """``results_file`` as a card names it: from the repository root when it is under it."""
    path = Path(results_file).resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def card(name: str, model, stages: list[dict], row: dict | None, results: dict,
         results_file: Path | None = None) -> str:
    """The card's text; ``results_file`` is the file ``row`` and ``results`` were read from (named in the card)."""
    params = sum(p.numel() for p in model.parameters()) / 1e6
    cpu_h = sum(s["wall_time_min"] * s["threads"] for s in stages) / 60
    data_cfg = stages[-1]["config"].get("data", {})
    preset = stages[-1]["config"].get("model", {}).get("preset", "?")
    recipe = {str(Path(s["config_path"]).parent) for s in stages if s.get("config_path")}
    made = f" (recipe `{recipe.pop()}/`, rebuilt by `make pretrained`)" if len(recipe) == 1 else ""
    lines = [f"# {name}", "", f"{describe(model, preset)}, {params:.2f} M parameters; a tokenizer trained by vidgen's "
             f"own `tokenizers/train_tokenizer.py` on 2 CPU cores{made}. Weights stored in float16, loaded as "
             "float32.", "",
             "```python", "from vidgen.tokenizers import load_tokenizer",
             f'tok = load_tokenizer("pretrained/{name}")   # offline', "```",
             f"`vidgen eval recon pretrained/{name}` benchmarks it on the held-out clips.", "",
             "| stage | config | steps | threads | wall time | precision | what changes |",
             "|---|---|---|---|---|---|---|"]
    for i, s in enumerate(stages):
        cfg = s["config"]
        loss = cfg.get("loss", {})
        what = ", ".join(f"{k} {loss[k]}" for k in ("l1", "perceptual", "gan", "temporal") if loss.get(k)) or "-"
        if cfg.get("data", {}).get("color_aug"):
            what += f", colour augmentation p={cfg['data']['color_aug']}"
        if cfg.get("data", {}).get("zoom_aug"):
            what += f", 2x downscale before the crop p={cfg['data']['zoom_aug']}"
        if cfg.get("trainable", "all") != "all":
            what += f", trains the {cfg['trainable']} only"
        lines.append(f"| {i + 1} | `{s.get('config_path') or Path(s['run_dir']).name}` | {s['steps']} | {s['threads']} | "
                     f"{s['wall_time_min']:.0f} min | {s['precision']} | {what} |")
    lines += [line for s in stages if s.get("history")
              for line in ("", f"**Training note** (`{s.get('config_path') or Path(s['run_dir']).name}`): {s['history']}")]
    lines += ["", f"**Training cost**: {cpu_h:.2f} CPU-hours in total on this 2-core machine (wall time x threads).",
              "", f"**Data**: {DATA.get(data_cfg.get('dataset'), data_cfg.get('dataset'))}; clips of "
              f"{data_cfg.get('num_frames')} frames at {data_cfg.get('size')}x{data_cfg.get('size')}"
              + (f" ({data_cfg['zoom_aug']:.0%} of them area-downscaled 2x first, so both scales train)"
                 if data_cfg.get("zoom_aug") else "")
              + (f", random {data_cfg['crop']}x{data_cfg['crop']} crops" if data_cfg.get("crop") else "")
              + f", batches of {data_cfg.get('video_batch')} clips + {data_cfg.get('image_batch')} single frames."]
    if row is not None:
        setup = results["setup"]
        per = ", ".join(f"{k} {v:.2f}" for k, v in sorted(row.get("psnr_per_source", {}).items()))
        command = row.get("command", results["command"])  # --keep rows carry the command that measured them
        lines += ["", f"**Held-out reconstruction** (`{command}`: {setup['clips']} clips of "
                  f"{setup['frames']}x{setup['size']}x{setup['size']}, {results['date'][:10]}"
                  + (f"; results file `{shown(results_file)}`" if results_file else "") + "):", "",
                  f"| PSNR | SSIM | {setup['perceptual']} | rFVD | utilization | perplexity |", "|---|---|---|---|---|---|",
                  f"| {row['psnr']:.2f} dB | {row['ssim']:.3f} | {row[setup['perceptual']]:.3f} | "
                  + (f"{row['rfvd']:.0f} (noise floor {_floor(row['rfvd_noise_floor'])})" if "rfvd" in row else "-")
                  + " | "
                  + (f"{row['utilization']:.1%} | {row['perplexity']:.0f}" if "utilization" in row else "- | -") + " |",
                  "", f"PSNR per held-out photograph: {per}."]
    else:
        lines += ["", "**Held-out reconstruction**: not benchmarked yet (run `eval/bench_tokenizers.py`)."]
    return "\n".join(lines) + "\n"


def _floor(noise_floor: dict) -> str:
    """The rFVD noise floor as ``eval/bench_tokenizers.py`` records it (``vidgen.metrics``' noise-floor dict)."""
    flag = "" if noise_floor["reliable"] else ", unreliable at this sample size"
    return f"{noise_floor['estimate']:.0f}{flag}"


def ship(run_final: Path, out: Path, results_file: Path, stages: list[dict] | None = None) -> None:
    """Copy the tokenizer saved at ``run_final`` to ``out`` in float16 with its card; ``stages`` (default: the run's
    own, ``init_from`` followed back) are the card's training stages."""
    run_final, out = Path(run_final), Path(out)
    model = load_tokenizer(run_final)
    stages = stages if stages is not None else run_stages(run_final.parent)
    row, results = metrics_row(Path(results_file), run_final)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / out.name
        model.save_pretrained(staged, safe_serialization=True)
        store_half(staged)
        x = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
        with torch.no_grad():
            a = model.reconstruct(x, sample_posterior=False).sample
            b = load_tokenizer(staged).reconstruct(x, sample_posterior=False).sample
        if (a - b).abs().max() > 0.05:
            raise ConfigError(f"{out}: float16 storage changes the reconstruction by {(a - b).abs().max():.3f}")
        (staged / "README.md").write_text(card(out.name, model, stages, row, results, results_file))
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(staged, out)
    for f in out.iterdir():
        f.chmod(0o644)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    print(f"{out}: {size:.1f} MiB" + ("" if row else " (no benchmark row for this run yet)"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_final", help="a run's final/ folder (save_pretrained)")
    parser.add_argument("out", help="destination folder, e.g. pretrained/natural-vae-small")
    parser.add_argument("--results", default="docs/results/bench_tokenizers.json")
    args = parser.parse_args(argv)
    ship(Path(args.run_final), Path(args.out), Path(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
