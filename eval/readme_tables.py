#!/usr/bin/env python
"""Results tables generated from the result files in ``docs/results/``, so a table cannot drift from what was measured.

    python eval/readme_tables.py          # rewrite the generated tables in README.md and docs/*.md
    python eval/readme_tables.py --check  # exit 1 if a page differs from what the result files say (a test runs this)

A generated table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` markers, in README.md (the short
results table) or in a docs page (the full tables); a marker may appear in more than one page.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from vidgen.demo.report import percent

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
SCRIPTS = ROOT  # where the table makers' scripts live (ROOT may be pointed at a copy of the pages in tests)


def turns(counted: dict | None) -> str:
    """"k of n (p %)" of the rotating, non-round prompts whose video turns (``vidgen.demo.run.turning``)."""
    return "–" if not counted or not counted["n"] else f"{counted['turned']} of {counted['n']} ({percent(counted['fraction'])})"


def demo_table(results: dict) -> str:
    """Prompt adherence, FVD and speed per shipped pipeline (``docs/results/demo_full.json``)."""
    s = results["settings"]
    lines = ["| pipeline | colour+motion, seen pairs | seen pairs, silhouette test only | colour+motion, held-out pairs "
             "| colour | motion | shape | rotating prompts that turn | FVD vs real | s / video |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in results["pipelines"].items():
        a = e["adherence"]
        strict = e.get("adherence_silhouette_only", {}).get("seen", {}).get("color_motion")
        fvd = f"{e['fvd']['value']:.0f}" if "fvd" in e else "–"
        lines.append(f"| {name} | {percent(a['seen']['color_motion'])} | {percent(strict)} | "
                     f"{percent(a['held_out']['color_motion'])} | "
                     f"{percent(a['all']['color'])} | {percent(a['all']['motion'])} | {percent(a['all']['shape'])} | "
                     f"{turns(e.get('turning'))} | {fvd} | {e['seconds_per_video']:.2f} |")
    real = results["scorer"]["real_same_prompts"]
    floor = f"{results['fvd_floor']['value']:.0f}" if "fvd_floor" in results else "–"
    lines.append(f"| *real clips, same prompts* | {percent(real['seen']['color_motion'])} | – | "
                 f"{percent(real['held_out']['color_motion'])} | {percent(real['all']['color'])} | "
                 f"{percent(real['all']['motion'])} | {percent(real['all']['shape'])} | "
                 f"{turns(results['scorer'].get('real_same_prompts_turning'))} | {floor} (2nd real set) | – |")
    sc = results["scorer"]["real_held_out"]
    lines += ["", f"{s['prompts']} prompts ({s['held_out_prompts']} with held-out colour x motion pairs), one "
              f"{s['num_frames']}x{s['size']}x{s['size']} video each, {results['machine']['threads']} threads, "
              f"{precisions(results)}, {results['created'][:10]}; `{results['command']}`. Scorer accuracy on "
              f"{sc['n']} real held-out clips: colour {percent(sc['color'])}, motion {percent(sc['motion'])}, shape "
              f"{percent(sc['shape'])}."]
    return "\n".join(lines)


def precisions(results: dict) -> str:
    """Each pipeline's compute precision in the run (``precision="auto"`` picks per CPU), or fp32 for older files;
    a pipeline evaluated in a later run and merged in (``make_pretrained.py --stage evaluate --pipelines``) is named
    with that run's date and CPU, as its time is not comparable with the others'."""
    chosen = dict(results["machine"].get("precision") or {})
    later = {name: e["evaluated_by"] for name, e in results["pipelines"].items() if "evaluated_by" in e}
    for name, run in later.items():
        chosen[name] = run["machine"].get("precision", {}).get(name, "fp32")
    if not chosen:
        return "fp32"
    text = "precision " + ", ".join(f"{name} {value}" for name, value in chosen.items())
    for name, run in later.items():
        text += f" ({name} measured in a later run, {run['created'][:10]}, on {run['machine'].get('cpu', '?')})"
    return text


def demo_short_table(results: dict) -> str:
    """The README's short results table: adherence on seen and held-out pairs, shape, turns, FVD and speed per
    pipeline (the full table is :func:`demo_table`, on docs/results.md)."""
    s = results["settings"]
    lines = ["| pipeline | colour+motion, seen pairs | colour+motion, held-out pairs | shape | rotating prompts that turn "
             "| FVD vs real | s / video |", "|---|---|---|---|---|---|---|"]
    for name, e in results["pipelines"].items():
        a = e["adherence"]
        fvd = f"{e['fvd']['value']:.0f}" if "fvd" in e else "–"
        lines.append(f"| {name} | {percent(a['seen']['color_motion'])} | {percent(a['held_out']['color_motion'])} | "
                     f"{percent(a['all']['shape'])} | {turns(e.get('turning'))} | {fvd} | {e['seconds_per_video']:.2f} |")
    real = results["scorer"]["real_same_prompts"]
    floor = f"{results['fvd_floor']['value']:.0f}" if "fvd_floor" in results else "–"
    lines.append(f"| *real clips, same prompts* | {percent(real['seen']['color_motion'])} | "
                 f"{percent(real['held_out']['color_motion'])} | {percent(real['all']['shape'])} | "
                 f"{turns(results['scorer'].get('real_same_prompts_turning'))} | {floor} (2nd real set) | – |")
    lines += ["", f"{s['num_frames']}x{s['size']}x{s['size']} videos, {results['machine']['threads']} threads, "
              f"{precisions(results)}, {results['created'][:10]}."]
    return "\n".join(lines)


def from_script(script: str, function: str = "readme_table"):
    """The ``readme_table(results) -> str`` function (or another one) of ``eval/<script>.py`` (or
    ``experiments/<script>.py``), imported when used: each benchmark keeps the tables of its own results file beside
    the code that measures it."""
    def make(results: dict) -> str:
        import importlib.util
        path = next((folder / f"{script}.py" for folder in (SCRIPTS / "eval", SCRIPTS / "experiments")
                     if (folder / f"{script}.py").exists()), SCRIPTS / "eval" / f"{script}.py")
        spec = importlib.util.spec_from_file_location(f"_vidgen_eval_{script}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, function)(results)
    return make


# marker name -> (results file under docs/results/, table maker); a table is rewritten only if both exist
TABLES = {"demo": ("demo_full.json", demo_table),
          "demo_short": ("demo_full.json", demo_short_table),
          "vae_speed": ("bench_vae_speed.json", from_script("bench_vae_speed")),
          "attention": ("bench_attention.json", from_script("bench_attention")),
          "generators": ("bench_generators.json", from_script("bench_generators")),
          "layouts": ("bench_layouts.json", from_script("bench_layouts")),
          "pipelines": ("bench_pipelines.json", from_script("bench_pipelines")),
          "few_step": ("bench_few_step.json", from_script("bench_few_step")),
          "streaming": ("bench_streaming.json", from_script("bench_streaming")),
          "streaming_quality": ("streaming_quality.json", from_script("streaming_quality")),
          "causal_targets": ("causal_targets.json", from_script("causal_targets")),
          "long_video_causal": ("long_video_causal.json", from_script("long_video")),
          "causal_memory": ("causal_memory.json", from_script("causal_memory")),
          "bf16_parity": ("bf16_training_parity.json", from_script("bf16_training_parity")),
          "bf16_sampling": ("bf16_sampling_parity.json", from_script("bf16_sampling_parity")),
          "tokenizers": ("bench_tokenizers.json", from_script("bench_tokenizers")),
          "attention_tiles": ("bench_attention.json", from_script("bench_attention", "readme_tile_table")),
          "attention_design": ("bench_attention.json", from_script("bench_attention", "design_figures")),
          "sequence_parallel_memory": ("bench_sequence_parallel.json", from_script("bench_sequence_parallel")),
          "generators_notes": ("bench_generators.json", from_script("bench_generators", "notes")),
          "recon": ("recon_benchmark.json", from_script("recon_benchmark")),
          "recon_comparison": ("recon_comparison.json", from_script("recon_benchmark", "comparison_table")),
          "vae_recipe": ("compare_vae_recipe.json", from_script("compare_vae_recipe")),
          "fvd_sanity": ("fvd_sanity.json", from_script("fvd_sanity")),
          "long_video": ("long_video.json", from_script("long_video")),
          "long_video_frames_held": ("long_video_frames_held.json", from_script("long_video")),
          "attention_gpu": ("bench_attention_gpu.json", from_script("bench_attention_gpu")),
          "kernel_sass": ("kernel_sass.json", from_script("kernel_sass")),
          "diffusers_models_gpu": ("bench_diffusers_models_gpu.json", from_script("bench_diffusers_models")),
          "shard_formats": ("bench_shards.json", from_script("bench_shards")),
          "data_scale": ("bench_data.json", from_script("bench_data")),
          "data_plan": ("bench_data.json", from_script("bench_data", "plan_table")),
          "data_memory": ("bench_data_memory.json", from_script("bench_data_memory")),
          "quantized": ("bench_quantized.json", from_script("bench_quantized")),
          "make_test": ("make_test.json", from_script("test_durations")),
          "levers": ("../../experiments/results/levers_stage7.json", from_script("levers"))}


def _fill(text: str, name: str, path: Path, make) -> str:
    """``text`` with table ``name`` made from the results file ``path`` (unchanged without the file or markers)."""
    pattern = re.compile(rf"(<!-- table:{name} -->\n).*?(\n<!-- /table:{name} -->)", re.S)
    if path.exists() and pattern.search(text):
        table = make(json.loads(path.read_text()))
        text = pattern.sub(lambda m: m.group(1) + table + m.group(2), text)
    return text


def render(readme: str) -> str:
    for name, (file, make) in TABLES.items():
        readme = _fill(readme, name, RESULTS / file, make)
    return readme


def write_table(name: str, results_path: Path, page: Path) -> str:
    """Rewrite table ``name`` (an entry of TABLES) of one ``page`` from ``results_path``, which may lie outside
    docs/results/ (a benchmark's fresh run before it is committed); returns the page's text."""
    text = page.read_text()
    rendered = _fill(text, name, results_path, TABLES[name][1])
    if rendered != text:
        page.write_text(rendered)
    return rendered


def pages() -> list[Path]:
    """The pages that may hold generated tables: README.md and the docs pages (API pages hold none)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stale = []
    for path in pages():
        current = path.read_text()
        wanted = render(current)
        if wanted == current:
            continue
        stale.append(path.relative_to(ROOT).as_posix())
        if not args.check:
            path.write_text(wanted)
    if args.check and stale:
        print(f"tables in {', '.join(stale)} differ from docs/results/: run python eval/readme_tables.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
