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
              f"{precisions(results)}; `{results['command']}`. Scorer accuracy on "
              f"{sc['n']} real held-out clips: colour {percent(sc['color'])}, motion {percent(sc['motion'])}, shape "
              f"{percent(sc['shape'])}."]
    return "\n".join(lines)


def precisions(results: dict) -> str:
    """Each pipeline's compute precision in the run (``precision="auto"`` picks per CPU), or fp32 for older files, and
    the date of the run; a pipeline evaluated in a later run and merged in (``make_pretrained.py --stage evaluate
    --pipelines``) is named with that run's date, as its time compares with the others' only on the same CPU."""
    chosen = dict(results["machine"].get("precision") or {})
    later = {name: e["evaluated_by"] for name, e in results["pipelines"].items() if "evaluated_by" in e}
    for name, run in later.items():
        chosen[name] = run["machine"].get("precision", {}).get(name, "fp32")
    text = ("precision " + ", ".join(f"{name} {value}" for name, value in chosen.items())) if chosen else "fp32"
    text += f"; evaluated {results['created'][:10]}"
    dates: dict[str, list[str]] = {}
    for name, run in later.items():
        dates.setdefault(run["created"][:10], []).append(name)
    for date, names in sorted(dates.items(), reverse=True):
        text += f", {' and '.join(names)} on {date}"
    return text + (" (each in a run of its own)" if later else "")


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
              f"{precisions(results)}."]
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


def attention_notes(results: dict) -> str:
    """docs/benchmarks.md's reading of the CPU attention tables (marker ``attention_notes``), from the same results
    file: the user's call against dense masked SDPA and its target, bf16 against fp32, the spatial pattern, the distance
    to the FLOP bound, the blocked path's work and the grids below ``auto``'s token rule."""
    import textwrap

    from vidgen.attention.api import BLOCKED_MIN_TOKENS, FUSED_MIN_OVERFETCH
    dense = max((r for r in results["rows"] if "dense_masked_sdpa" in r["fp32"]["seconds"]), key=lambda r: r["tokens"])
    widest = max(results["rows"], key=lambda r: r["tokens"])
    small = sorted((r for r in results["rows"] if r["tokens"] < BLOCKED_MIN_TOKENS), key=lambda r: r["tokens"])
    spatial = next(r for r in results["other_patterns"] if r["pattern"] == "spatial")
    f = dense["fp32"]
    window = "×".join(map(str, results["window"]))
    user = f["user_call_speedup_vs_dense_masked_sdpa"]
    met = lambda x, target: "**met**" if x >= target else "**not met**"  # noqa: E731
    ratios = [(r["tokens"], r["bf16_speedup_vs_fp32"]["fused"]) for r in ((dense,) if widest is dense else
                                                                          (dense, widest))]
    native = results.get("bf16_kernel_native")
    bf16_how = ("AVX512-BF16 dot products" if native else "this CPU has no AVX512-BF16, so the kernel converts bf16 "
                "rows to float32" if native is False else "the kernel's bf16 instructions not recorded")
    emulated = from_script("bench_attention", "bf16_ceiling_emulated")(results)

    def spatial_speed(d: str) -> str:
        s = spatial[d]["seconds"]
        if s["blocked"] < s["fused"]:
            return (f"in {d} its GEMMs beat the kernel's per-pair dot products (`cpu` {s['blocked']:.3f} s, "
                    f"`cpu_fused` {s['fused']:.3f} s)")
        return (f"in {d} `cpu_fused` is faster (`cpu_fused` {s['fused']:.3f} s, `cpu` {s['blocked']:.3f} s"
                + ("; this CPU's bf16 GEMMs are emulated)" if d == "bf16" and emulated else ")"))
    overfetch = spatial["flop_bound_speedup"] / spatial["blocked_work_speedup"]
    bullets = [
        f"- **As a user calls it** (`attention3d(q, k, v, grid, window=({', '.join(map(str, results['window']))}))`, "
        f"`auto`, gradients accumulating): at {dense['tokens']:,} tokens in fp32 the call is **{user:.1f}×** faster "
        f"than dense masked SDPA (`cpu_fused` alone {f['fused_speedup_vs_dense_masked_sdpa']:.1f}×); target ≥ 40×: "
        f"{met(user, 40.0)}. The ratio moves with the machine's load (the caption gives this run's).",
        "- **bf16** (bf16 storage, every sum in fp32; " + bf16_how + "): `cpu_fused` runs at "
        + " and ".join(f"{x:.2f}× its fp32 speed at {n:,} tokens" if i == 0 else f"{x:.2f}× at {n:,}"
                       for i, (n, x) in enumerate(ratios))
        + f"; target ≥ 1.5× at {ratios[0][0]:,} tokens: {met(ratios[0][1], 1.5)} on this run's CPU, "
        f"{results.get('cpu', 'not recorded')}. "
        "bf16 agrees with the fp32 reference within the bf16 tolerance of `vidgen.attention.testing.TOLERANCES`.",
        f"- **Spatial attention** (a whole {spatial['grid'][1]}×{spatial['grid'][2]} frame per query, "
        f"{'×'.join(map(str, spatial['grid']))} tokens) stays on the blocked path: `auto` picks by how much the "
        f"blocked path would over-fetch (≥ {FUSED_MIN_OVERFETCH:g}× the allowed pairs → `cpu_fused`), and for a whole "
        f"frame it fetches {overfetch:.1f}× the allowed pairs. Timed: {spatial_speed('fp32')}; {spatial_speed('bf16')}."
        + ("" if all(spatial[d]["seconds"]["blocked"] < spatial[d]["seconds"]["fused"] for d in ("fp32", "bf16"))
           else " `auto` follows the over-fetch rule in both dtypes."),
        f"- **The distance to the FLOP bound** ({dense['flop_bound_speedup']:.0f}× at {dense['tokens']:,} tokens, "
        f"{widest['flop_bound_speedup']:.0f}× at {widest['tokens']:,}) is the kernel's per-pair formulation: each "
        f"(query, key) pair costs a {results['head_dim']}-wide dot product, an exponential and a "
        f"{results['head_dim']}-wide update on its own ({f['gflops']['fused']:.1f} GFLOP/s at {dense['tokens']:,} "
        f"tokens, {100 * f['fraction_of_ceiling']['fused']:.0f} % of the fp32 GEMM ceiling), where a register-tiled "
        "micro-GEMM over strips of queries and keys would approach GEMM speed.",
        f"- **The blocked path** computes {dense['blocked_work_speedup']:.0f}× fewer pairs than dense attention at "
        f"{dense['tokens']:,} tokens ({'×'.join(map(str, dense['block']))} blocks, halo overlap included) but runs "
        f"only {f['blocked_speedup_vs_dense_masked_sdpa']:.1f}× faster than dense masked SDPA in fp32: its time goes "
        "into copies (each block gathers its halo of keys and values), and smaller blocks compute less but copy more.",
    ]
    if small:
        bullets.append(
            f"- **Below {BLOCKED_MIN_TOKENS:,} tokens** (`BLOCKED_MIN_TOKENS`, a chosen rule, not a measured "
            f"break-even) `auto` keeps dense SDPA, although for the {window} window `cpu_fused` is already "
            + " and ".join(f"{r['fp32']['fused_speedup_vs_dense_masked_sdpa']:.1f}× ({r['tokens']:,} tokens)"
                           for r in small)
            + " faster than dense masked SDPA in fp32, and the blocked path "
            + " and ".join(f"{r['fp32']['blocked_speedup_vs_dense_masked_sdpa']:.1f}×" for r in small) + ".")
    head = (f"From `docs/results/bench_attention.json` ({results['date'][:10]}, {results['threads']} threads, "
            f"{window} window, median of per-round ratios):")
    return "\n".join([head, ""] + [textwrap.fill(b, width=118, subsequent_indent="  ", break_on_hyphens=False,
                                                   break_long_words=False) for b in bullets])


def training_time(summary: dict) -> str:
    """The logged training time of every recipe stage (``pipelines/training_runs.json``), the GPU stages named."""
    import textwrap

    import yaml
    stages = [yaml.safe_load(f.read_text())["run_dir"] for f in sorted((ROOT / "configs").glob("*/stage*.yaml"))]
    logged = [summary["runs"][r] for r in stages if r in summary["runs"]]
    total = sum(r["wall_time_min"] for r in logged)
    gpu = sum("device" in r for r in logged)
    unlogged = f"; {len(stages) - len(logged)} stages have no logged time" if len(logged) < len(stages) else ""
    text = (f"The logged training times of the {len(stages)} recipe stages (`pipelines/training_runs.json`, shown in "
            f"each card) add up to about {total / 60:.0f} hours ({total:.0f} min; 1-2 threads each on 2-core "
            f"machines, except the {gpu} GPU stages{unlogged}).")
    return textwrap.fill(text, width=118, break_on_hyphens=False, break_long_words=False)


#: the tuning-story reads of each shipped model's context_frames: (pipeline, shipped folder, results files)
CONTEXT_READS = [("masked", "shapes-masked", ["sweep_context_masked_4steps.json"]),
                 ("flow", "shapes-flow", ["story_read_flow.json"]),
                 ("autoregressive", "shapes-autoregressive", ["sweep_context_autoregressive_story_gpu.json",
                                                              "sweep_context_autoregressive_stage4.json"])]


def _context_rows(record: dict) -> list:
    """A context read's rows: a sweep's own, or the shipped checkpoint's of a ship read (``story_read.py``)."""
    if "rows" in record and record["rows"] and "story" in record["rows"][0]:
        return next(row for row in record["rows"] if row["verdict"]["ships"])["story"]
    return record["rows"]


def context_table(_: dict) -> str:
    """docs/stories.md: per shipped pipeline, the tuning story's colour+motion per context_frames and the value its
    folder ships (``CONTEXT_READS``)."""
    results = SCRIPTS / "experiments" / "results"
    lines = ["| pipeline | context 1 | 2 | 3 | 4 | shipped | read in |", "|---|---|---|---|---|---|---|"]
    for name, folder, files in CONTEXT_READS:
        read = {row["context_frames"]: row["color_motion"] for file in files
                for row in _context_rows(json.loads((results / file).read_text()))}
        shipped = json.loads((SCRIPTS / "pretrained" / folder / "sampling_config.json").read_text())["context_frames"]
        cells = [(f"**{percent(read[c])}**" if c == shipped else percent(read[c])) if c in read else "not read"
                 for c in (1, 2, 3, 4)]
        lines.append(f"| {name} | {' | '.join(cells)} | {shipped} | "
                     f"{', '.join(f'`experiments/results/{f}`' for f in files)} |")
    return "\n".join(lines)


# marker name -> (results file under docs/results/, table maker); a table is rewritten only if both exist
TABLES = {"demo": ("demo_full.json", demo_table),
          "demo_short": ("demo_full.json", demo_short_table),
          "demo_errors": ("demo_full.json", from_script("demo_errors")),
          "vae_speed": ("bench_vae_speed.json", from_script("bench_vae_speed")),
          "attention": ("bench_attention.json", from_script("bench_attention")),
          "attention_notes": ("bench_attention.json", attention_notes),
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
          "generators_gpu": ("bench_generators_cuda.json", from_script("bench_generators", "gpu_table")),
          "recon": ("recon_benchmark.json", from_script("recon_benchmark")),
          "recon_comparison": ("recon_comparison.json", from_script("recon_benchmark", "comparison_table")),
          "vae_recipe": ("compare_vae_recipe.json", from_script("compare_vae_recipe")),
          "fvd_sanity": ("fvd_sanity.json", from_script("fvd_sanity")),
          "long_video": ("long_video.json", from_script("long_video")),
          "long_video_notes": ("long_video.json", from_script("long_video", "segment_notes")),
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
          "levers": ("../../experiments/results/levers_stage7.json", from_script("levers")),
          "levers_compile": ("../../experiments/results/levers_compile_stage7.json", from_script("levers")),
          "levers_bf16": ("../../experiments/results/levers_bf16_stage7.json", from_script("levers")),
          "training_time": ("../../pipelines/training_runs.json", training_time),
          "context_reads": ("../../experiments/results/story_read_flow.json", context_table),
          "causal_recipes": ("../../experiments/results/causal_recipes_summary.json",
                             from_script("causal_recipes_summary"))}


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
