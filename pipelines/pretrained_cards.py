"""The model cards of ``pretrained/`` (each folder's ``README.md``), from the recipes, the run summaries and the
results files; no runs/ needed.

A pipeline's card is ``templates/model_card.md`` (with ``templates/model_card_adherence.md`` once the full
evaluation has results for it) filled in by :func:`pipeline_card`; a distilled pipeline's is
``templates/model_card_distilled.md`` (:func:`distilled_card`), the block-causal one's ``templates/model_card_causal.md``
(:func:`causal_card`); a general tokenizer's card is
``tokenizers/ship_tokenizer.py``'s.
Run summaries come from each run's ``log.jsonl`` and are recorded in ``pipelines/training_runs.json`` on the way (kept
in git because runs/ is not), so a card can still be written after a run folder is gone.
"""
from __future__ import annotations

import json
from pathlib import Path
from string import Template

import pretrained_recipes as recipes
from bench_streaming import readme_table as streaming_table  # eval/ (make_pretrained.py puts it on the path)
from results import sha256_file, weights_digest  # eval/results.py

from vidgen.training.release import run_summary

TEMPLATES = Path(__file__).resolve().parent / "templates"
EXPERIMENT_RESULTS = recipes.ROOT / "experiments" / "results"
SWEEPS = recipes.ROOT / "docs" / "results"  # sampling sweeps of the shipped models (their settings' source)
# Summaries of the runs behind pretrained/, kept in git because runs/ is not: the cards read them from here.
RUN_RECORDS = recipes.ROOT / "pipelines" / "training_runs.json"
RECORD_KEYS = ("steps", "threads", "wall_time_min", "parameters_m", "eval_psnr", "final_loss", "precision")
#: the reads that chose each shipped folder's context_frames (experiments/sweep_context.py; experiments/log.md)
CONTEXT_SWEEPS = {"masked": "on this model: experiments/results/sweep_context_shipped.json (12 steps) and "
                            "experiments/results/sweep_context_masked_4steps.json (the shipped 4 steps)",
                  "flow": "on this model, by the ship rule of its last stage (configs/shapes-flow/stage8.yaml): "
                          "experiments/results/story_read_flow.json (context 2 led the tuning story)",
                  "autoregressive": "on this model: experiments/results/sweep_context_autoregressive_story_gpu.json "
                                    "(context 1) and experiments/results/sweep_context_autoregressive_stage4.json (2 "
                                    "and 3)"}


def summary(run_dir: Path) -> dict:
    """The run's summary from its ``log.jsonl`` (recorded in ``RUN_RECORDS`` on the way), or the recorded one when
    the run folder is gone."""
    key = run_dir.relative_to(recipes.ROOT).as_posix()
    records = json.loads(RUN_RECORDS.read_text()) if RUN_RECORDS.exists() else {"runs": {}}
    if (run_dir / "log.jsonl").is_file():
        live = run_summary(run_dir)
        # a live log is this run's own history: a recorded note about an earlier run of the same folder goes
        records["runs"][key] = {**{k: live.get(k) for k in RECORD_KEYS}, "source": "log.jsonl"}
        RUN_RECORDS.write_text(json.dumps(records, indent=2) + "\n")
        return live
    if key not in records["runs"]:
        raise recipes.fail(f"{key} has no log.jsonl and no record in {RUN_RECORDS.name}; train it first")
    return records["runs"][key]


def recipe_stages(artifact: str) -> list[dict]:
    """Per stage of the recipe: its run's summary with the recipe's path and config (what the cards list)."""
    return [{**summary(recipes.run_dir(c)), "run_dir": recipes.config(c)["run_dir"], "config_path": c,
             "config": recipes.config(c)} for c in recipes.stages(artifact)]


def _wall(stage: dict) -> str:
    if stage.get("device"):  # a stage trained on a lent GPU (its record says which)
        return f"{stage['wall_time_min']:.0f} min ({stage['device']})"
    threads = stage.get("threads") or 1
    return f"{stage['wall_time_min']:.0f} min ({threads} thread{'s' if threads > 1 else ''})"


def _params(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _turns(counted: dict | None) -> str:
    return "–" if not counted or not counted["n"] else f"{counted['turned']} of {counted['n']}"


def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text())


def _components(name: str, pipe, tok_runs: list[dict], gen_runs: list[dict]) -> list[str]:
    """The component table's rows: the tokenizer's stages, then the transformer's."""
    component, arch = pipe.video_tokenizer_name, pipe.transformer.backbone_config
    fsq = tok_runs[0]["config"]["model"].get("overrides", {}).get("fsq_levels")
    tc = pipe.video_tokenizer.config
    bottleneck = f"FSQ ({','.join(map(str, fsq))})" if fsq else f"KL, {tc.latent_channels} channels"
    compression = f"{tc.temporal_compression}x{tc.spatial_compression}x{tc.spatial_compression}"

    def per_token(stage: dict) -> str:
        patch = tuple(stage["config"]["model"].get("overrides", {}).get("patch_size", (1, 1, 1)))
        return "" if name == "flow" or patch == (1, 1, 1) else f", {'x'.join(map(str, patch))} ids per token"
    first = tok_runs[0]
    rows = [f"| {component} | `{type(pipe.video_tokenizer).__name__}` preset `{first['config']['model']['preset']}` "
            f"({compression}), {bottleneck} | {_params(pipe.video_tokenizer):.2f} M | `{first['config_path']}` | "
            f"{first['steps']} | {_wall(first)} | {first['precision']} |"]
    rows += [f"| {component}, stage {i + 1} | its decoder only, fine-tuned on whole 17-frame clips with a temporal "
             f"loss (encoder untouched) | {_params(pipe.video_tokenizer.decoder):.2f} M trained | "
             f"`{s['config_path']}` | {s['steps']} | {_wall(s)} | {s['precision']} |"
             for i, s in enumerate(tok_runs) if i]
    rows += [f"| transformer{f', stage {i + 1}' if i else ''} | `{type(pipe.transformer).__name__}` preset "
             f"`{s['config']['model']['preset']}` (dim {arch.dim}, depth {arch.depth}, {arch.layout} attention"
             f"{per_token(s)}) on `{recipes.tokenizer_of(name, i)}`'s {'latents' if name == 'flow' else 'ids'}"
             f"{', initialised from stage ' + str(i) if i else ''} | "
             f"{s.get('parameters_m') or _params(pipe.transformer):.2f} M | `{s['config_path']}` | "
             f"{s['steps']} | {_wall(s)} | {s['precision']} |" for i, s in enumerate(gen_runs)]
    return rows
#: runs that tried to replace a shipped transformer, read by a fixed ship rule: (config, results file of its reads,
#: what the run changed). Once such a run has reached its last step without a read that ships, the card says so.
TRIED = {"flow": ("experiments/configs/generators/flow_shapes_stage7.yaml", "experiments/results/stage7_read.json",
                  "continued at one token per latent position (1x1x1 patches)")}


def _tried(name: str, root: Path = recipes.ROOT) -> str:
    """The card's line on a run that tried to replace ``name``'s transformer and ended without shipping, or ""."""
    if name not in TRIED or not (root / TRIED[name][1]).is_file():
        return ""
    config, path, change = TRIED[name]
    read = json.loads((root / path).read_text())
    rows, best = read.get("rows", []), read.get("best")
    if read.get("ships") is not None or not rows or best is None:
        return ""  # shipped (it is these weights), or nothing read yet
    steps = recipes.config(config)["steps"]
    if rows[-1]["step"] < steps:
        return ""  # still running
    short = best["short_by"]
    misses = [f"{short['shape_points']} points below on shape"] if short["shape_points"] else []
    misses += [f"{short['color_motion_points']} points below on colour+motion"] if short["color_motion_points"] else []
    misses += [f"{short['turns']} turns short"] if short["turns"] else []
    return (f"\n\n**Tried, not shipped**: the transformer {change} for {steps} more steps (`{config}`, its ship rule "
            f"fixed in its header before the first step) reads at best {best['shape']:.1%} shape, "
            f"{best['color_motion']:.1%} colour+motion and {best['turned']} of {rows[-1]['rotating']} turns on "
            f"{read['prompts']} tuning prompts (step {best['step']}): {', '.join(misses) or 'short'} of the rule, so "
            f"these weights stay. Every read and the curve: `{path}` and the `.png` beside it.")


def _adherence(name: str, results: dict) -> str:
    """The full evaluation's row for pipeline ``name`` (``templates/model_card_adherence.md``), or "" without one."""
    if name not in results.get("pipelines", {}):
        return ""
    e = results["pipelines"][name]
    a = e["adherence"]
    fvd = f"{e['fvd']['value']:.0f} (real-vs-real floor {results['fvd_floor']['value']:.0f})" if "fvd" in e else "-"
    precision = results.get("machine", {}).get("precision", {}).get(name, "fp32")  # older results: fp32 only
    block = _template("model_card_adherence.md").substitute(
        prompts=a["all"]["n"], precision=precision,
        seen=f"{a['seen']['color_motion']:.1%}", held_out=f"{a['held_out']['color_motion']:.1%}",
        shape=f"{a['all']['shape']:.1%}", turns=_turns(e.get("turning")), fvd=fvd,
        seconds_per_video=f"{e['seconds_per_video']:.2f}")
    return "\n\n" + block.rstrip("\n")


def _sampling_source(name: str, folder: Path, saved: dict, evaluated: dict | None) -> str:
    """Where the folder's sampling settings come from, and whether the evaluation above ran with them."""
    tuned = SWEEPS / f"sampling_sweep_{name}.json"  # a sweep of the shipped model on tuning_prompts
    sweeps = sorted(p.name for p in EXPERIMENT_RESULTS.glob(f"sampling_sweep_{name}*.json"))
    check = json.loads(tuned.read_text()).get("check", {}) if tuned.exists() else {}
    if tuned.exists() and check.get("weights_sha256") == weights_digest(folder):
        how = ("swept with `experiments/sweep_sampling.py` on this model and tuning prompts (seen pairs only, no "
               f"caption of the evaluation set): {tuned.relative_to(recipes.ROOT).as_posix()}; a read of the chosen "
               f"setting on this folder's weights (digest {check['weights_sha256']}, {check['file']}) repeats its row "
               "exactly")
    elif tuned.exists():
        how = ("swept with `experiments/sweep_sampling.py` on tuning prompts (seen pairs only, no caption of the "
               f"evaluation set), on weights other than this folder's (no read on them repeats the sweep): "
               f"{tuned.relative_to(recipes.ROOT).as_posix()}")
    elif sweeps:
        how = ("chosen with `experiments/sweep_sampling.py` on an earlier model and an older tuning set (seed 1; it "
               "shares some captions and every held-out pair with the evaluation): "
               + ", ".join(f"experiments/results/{f}" for f in sweeps))
    else:
        how = "the pipeline's defaults, not tuned"
    if "context_frames" in saved:
        how += (f"; context_frames, for stories, with `experiments/sweep_context.py` and a tuning story the evaluation "
                f"never uses, {CONTEXT_SWEEPS[name]}")
    if evaluated is None:
        return f"{how}."
    evaluated = {k: v for k, v in evaluated.items() if v is not None or k in saved}  # an option left at its default
    if evaluated == saved:
        return f"the evaluation above ran with them ({how})."
    return f"the evaluation above ran with {evaluated} instead ({how})."


def pipeline_card(name: str, folder: Path) -> str:
    """The card of pipeline ``name``'s assembled ``folder``: ``templates/model_card.md`` filled in."""
    from vidgen.data.shapes import HELD_OUT_PAIRS
    from vidgen.pipelines import load_pipeline
    artifact = recipes.GENERATORS[name]
    pipe, tok = load_pipeline(folder), recipes.tokenizer_of(name)
    tok_runs, gen_runs = recipe_stages(tok), recipe_stages(artifact)
    data = gen_runs[-1]["config"]["data"]
    psnr = f"{tok_runs[-1]['eval_psnr']:.2f} dB PSNR"
    psnr_stages = [tok_runs[-1]]  # the stages whose held-out PSNR the card quotes
    if len(tok_runs) > 1:
        psnr += f" (stage 1: {tok_runs[0]['eval_psnr']:.2f} dB)"
        psnr_stages.append(tok_runs[0])
    results = json.loads(recipes.RESULTS.read_text()) if recipes.RESULTS.exists() else {}
    saved = recipes.sampling_config(name)  # the recipe's copy, which assembling put in the folder (test_recipes.py)
    sampling = ", ".join(f"{k} {v}" for k, v in saved.items())
    if name == "flow":
        sampling += (f"; scheduler {type(pipe.scheduler).__name__} with shift {pipe.scheduler.config.shift} (other "
                     f"shifts: {recipes.FLOW_SHIFT_SWEEP})")
    evaluated = results.get("pipelines", {}).get(name, {}).get("sampling")
    return _template("model_card.md").substitute(
        artifact=artifact, pipeline_class=type(pipe).__name__,
        size_mib=f"{sum(f.stat().st_size for f in folder.rglob('*.safetensors')) / 2**20:.1f}",
        recipes=", ".join(f"`{recipes.CONFIGS}/{a}/`" for a in (tok, artifact)),
        components="\n".join(_components(name, pipe, tok_runs, gen_runs)),
        num_clips=data["num_clips"], num_frames=data["num_frames"], frame_size=data["size"],
        held_out_pairs=", ".join(f"{c}+{m}" for c, m in HELD_OUT_PAIRS),
        training_notes="".join(f"**Training note** (`{s['config_path']}`): {s['history']}\n\n"
                               for s in tok_runs + gen_runs if s.get("history")),
        tokenizer_psnr=psnr, final_loss=f"{gen_runs[-1]['final_loss']:.4f}",
        run_records=RUN_RECORDS.relative_to(recipes.ROOT).as_posix(), loss_run=f"`{gen_runs[-1]['run_dir']}`",
        psnr_runs=", ".join(f"`{s['run_dir']}`" for s in psnr_stages),
        prompt_adherence=_adherence(name, results) + _tried(name), sampling=sampling,
        recipe_sampling_config=f"{recipes.CONFIGS}/{artifact}/sampling_config.json",
        sampling_source=_sampling_source(name, folder, saved, evaluated))


def write_cards(out: Path) -> None:
    """Every folder's ``README.md``, from the recipes, the run records and the results files (no runs/ needed)."""
    for name, artifact in recipes.GENERATORS.items():
        card = (distilled_card if recipes.teacher_of(name) is not None
                else causal_card if recipes.upstream(name) is not None else pipeline_card)
        (out / artifact / "README.md").write_text(card(name, out / artifact))
        print(f"  card: {out / artifact / 'README.md'}", flush=True)
    ship = recipes.ship_tokenizer_script()
    from vidgen.tokenizers import load_tokenizer
    for artifact in recipes.NATURAL_TOKENIZERS:
        runs = recipe_stages(artifact)
        row, results = ship.metrics_row(recipes.TOKENIZER_RESULTS, recipes.ROOT / runs[-1]["run_dir"] / "final")
        card = ship.card(artifact, load_tokenizer(out / artifact), runs, row, results, recipes.TOKENIZER_RESULTS)
        (out / artifact / "README.md").write_text(card)
        print(f"  card: {out / artifact / 'README.md'}", flush=True)


FEW_STEP_RESULTS = "bench_few_step.json"  # eval/bench_few_step.py's file under SWEEPS (docs/results)
#: the tuning read (eval/distill_tuning.py) that chose each distilled pipeline's stages and step count
SHIP_READS = {"flow-distilled": (
    "at 2 steps this stage-1 student (its EMA weights) read 92.7 % colour+motion and 35.9 % shape on "
    "tuning_prompts(192), against the teacher's 96.4 % and 38.0 %, at 12.9x the teacher's speed, and the 1-step "
    "student 86.5 % (experiments/results/distill_tuning_dmd2_step1900_192.json); continuing it with "
    "DMD2's GAN term (experiments/configs/distill/dmd2_gan_shapes.yaml, 600 steps) read 91.1 % at 2 steps, so it was "
    "not kept (experiments/results/distill_tuning_dmd2_gan_192.json); the rule's 2-point margins are missed, by how "
    "much on the evaluation is in the table above. The same recipe on the shipped teacher, shapes-flow stage 8 "
    "(experiments/configs/distill/dmd2_stage8.yaml, all 1900 steps), read at 4 steps 97.9 % colour+motion and "
    "62.0 % shape against the teacher's 100.0 % and 66.7 %, 2.7 points past the rule on shape, so it did not "
    "replace this student (experiments/results/student_read_dmd2_stage8.json)"),
    "causal": (
    "stage 1 read 81.8 % colour+motion at 4 and at 8 steps a chunk with guidance 1 (71.9 % and 78.6 % with guidance "
    "3), and the Self-Forcing stage 2 (experiments/configs/distill/self_forcing_shapes.yaml, stopped at step 700 of "
    "1500) 71.4 % at 2 steps and 79.7 % at 4, beside shapes-flow stage 6's 96.4 %, so stage 1 ships at its faster "
    "setting, 4 steps (experiments/results/causal_ship_read_192.json)")}


def _comparison(results: dict, shipped_steps: int) -> str:
    """The teacher and the student at each step count, with the shipped one's targets (bench_few_step.json)."""
    floor = results.get("fvd_floor", {}).get("value")
    rows = ["| | evaluations / video | s / video, batch 1 | batch 4 | speed-up, batch 1 | colour+motion, seen pairs "
            "| held-out pairs | shape | FVD vs real" + (f" (real-vs-real floor {floor:.0f})" if floor else "") + " |",
            "|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        a, sec = row["adherence"], row["seconds_per_video"]
        k = row["settings"]["num_inference_steps"]
        label = "teacher" if row["name"] == "teacher" else f"student, {k} step{'s' if k > 1 else ''}"
        if row.get("settings", {}).get("num_inference_steps") == shipped_steps and row["name"] != "teacher":
            label = f"**{label} (shipped)**"
        fvd = f"{row['fvd']['value']:.0f}" if "fvd" in row else "-"
        rows.append(f"| {label} | {row['evaluations_per_video']} | {sec['batch_1']:.3f} | {sec['batch_4']:.3f} | "
                    f"{row['speedup_batch_1']:.1f}x | {a['seen']['color_motion']:.1%} | "
                    f"{a['held_out']['color_motion']:.1%} | {a['all']['shape']:.1%} | {fvd} |")
    shipped = next(r for r in results["rows"] if r["name"] != "teacher"
                   and r["settings"]["num_inference_steps"] == shipped_steps)
    names = {"speedup_batch_1": ("speed-up at batch 1", "at least {limit:.0f}x", "{value:.1f}x"),
             "color_motion_points_below_teacher": ("colour+motion", "at most {limit:.0f} points below the teacher",
                                                   "{value:.1f} points below"),
             "shape_points_below_teacher": ("shape", "at most {limit:.0f} points below the teacher",
                                            "{value:.1f} points below"),
             "fvd_ratio_to_teacher": ("FVD", "at most {limit:.2f}x the teacher's", "{value:.2f}x")}
    lines = [f"- {names[k][0]}: {names[k][2].format(**t)} (target {names[k][1].format(**t)}): "
             f"{'met' if t['met'] else 'missed'}" for k, t in shipped["targets"].items()]
    return "\n".join(rows) + "\n\nThe shipped student against the targets it was distilled for:\n\n" + "\n".join(lines)


def _teacher(teacher: str, guidance: float, results: dict | None, root: Path = recipes.ROOT) -> str:
    """The card's words for a student's teacher: the shipped teacher pipeline, or, when the few-step benchmark ran
    against other teacher weights than the shipped ones, that earlier teacher (by its transformer's SHA-256) and the
    settings it ran at."""
    artifact = recipes.GENERATORS[teacher]
    steps = recipes.sampling_config(teacher)["num_inference_steps"]
    plain = (f"the teacher pipeline `pretrained/{artifact}` ({2 * steps} transformer evaluations a video: {steps} steps "
             f"under classifier-free guidance {guidance})")
    key = f"pretrained/{artifact}/transformer/diffusion_pytorch_model.safetensors"
    measured = (results or {}).get("weights_sha256", {}).get(key)
    if measured is None or not (root / key).is_file():
        return plain
    if sha256_file(root / key) == measured:
        return plain
    row = next(r for r in results["rows"] if r["name"] == "teacher")
    was = row["settings"]["num_inference_steps"]
    return (f"an earlier `pretrained/{artifact}` ({row['evaluations_per_video']} transformer evaluations a video: {was} "
            f"steps under classifier-free guidance {row['settings']['guidance_scale']}; transformer SHA-256 "
            f"{measured[:16]}; the shipped `pretrained/{artifact}` has since replaced it, and this student has not "
            f"been distilled from the shipped one yet, so the comparison below is with that earlier teacher)")


def distilled_card(name: str, folder: Path) -> str:
    """The card of distilled pipeline ``name``'s assembled ``folder``: ``templates/model_card_distilled.md``."""
    from vidgen.data.shapes import HELD_OUT_PAIRS
    from vidgen.pipelines import load_pipeline
    artifact, teacher = recipes.GENERATORS[name], recipes.teacher_of(name)
    pipe, runs = load_pipeline(folder), recipe_stages(artifact)
    data = runs[-1]["config"]["data"]
    spec = pipe.transformer.config["distillation"]
    saved = recipes.sampling_config(name)
    stages = []
    for s in runs:
        d = s["config"]["distill"]
        method = d["method"].upper() if d["method"] == "dmd2" else d["method"]
        if d.get("gan_weight"):
            method += f" + GAN term (weight {d['gan_weight']})"
        if s["config"].get("init_from"):
            method += f", continued from `{s['config']['init_from']}`"
        stages.append(f"| {len(stages) + 1} | {method}, student every {d.get('student_every', 1)} steps | "
                      f"`{s['config_path']}` | {s['steps']} | {_wall(s)} | {s['precision']} |")
    if (SWEEPS / FEW_STEP_RESULTS).exists():
        results = json.loads((SWEEPS / FEW_STEP_RESULTS).read_text())
        comparison = _comparison(results, saved["num_inference_steps"])
        prompts, threads, cpu = results["prompts"], results["threads"], results["cpu"]
    else:
        results, comparison, prompts, threads, cpu = None, "(not measured yet)", "-", "-", "-"
    return _template("model_card_distilled.md").substitute(
        artifact=artifact, teacher_artifact=recipes.GENERATORS[teacher], pipeline_class=type(pipe).__name__,
        size_mib=f"{sum(f.stat().st_size for f in folder.rglob('*.safetensors')) / 2**20:.1f}",
        steps_list="/".join(map(str, spec["steps"])), guidance=spec["guidance_scale"],
        recipe=f"{recipes.CONFIGS}/{artifact}/",
        shipped_steps=saved["num_inference_steps"], stages="\n".join(stages),
        training_notes="".join(f"**Training note** (`{s['config_path']}`): {s['history']}\n\n"
                               for s in runs if s.get("history")),
        prompts=prompts, threads=threads, cpu=cpu, results_file=f"docs/results/{FEW_STEP_RESULTS}",
        teacher=_teacher(teacher, spec["guidance_scale"], results),
        comparison=comparison, sampling=", ".join(f"{k} {v}" for k, v in saved.items()),
        recipe_sampling_config=f"{recipes.CONFIGS}/{artifact}/sampling_config.json",
        ship_read=SHIP_READS.get(name, "-"), num_clips=data["num_clips"], num_frames=data["num_frames"],
        frame_size=data["size"], held_out_pairs=", ".join(f"{c}+{m}" for c, m in HELD_OUT_PAIRS))


STREAMING_RESULTS, LONG_VIDEO_RESULTS = "bench_streaming.json", "long_video_causal.json"  # under SWEEPS


def _long_video(name: str) -> str:
    """Peak memory over lengths and adherence over a long story (``eval/long_video.py``), or "" without a read."""
    path = SWEEPS / LONG_VIDEO_RESULTS
    entry = json.loads(path.read_text())["summary"].get(name) if path.exists() else None
    if not entry:
        return ""
    rss = ", ".join(f"{mib:.0f} MiB at {n}" for n, mib in zip(entry["lengths"], entry["peak_rss_mib"]))
    return (f"**Long videos** (`python eval/long_video.py`, {entry['segments']}-prompt stories; "
            f"`docs/results/{LONG_VIDEO_RESULTS}`): peak memory {rss} frames "
            f"({entry['rss_ratio_largest_to_smallest']:.3f}x from the shortest to the longest); colour+motion "
            f"{entry['first_third_color_motion']:.0%} over the first third of the segments and "
            f"{entry['last_third_color_motion']:.0%} over the last.")


def causal_card(name: str, folder: Path) -> str:
    """The card of block-causal pipeline ``name``'s assembled ``folder``: ``templates/model_card_causal.md``."""
    from vidgen.data.shapes import HELD_OUT_PAIRS
    from vidgen.pipelines import load_pipeline
    artifact, upstream = recipes.GENERATORS[name], recipes.GENERATORS[recipes.upstream(name)]
    pipe, runs = load_pipeline(folder), recipe_stages(artifact)
    data, saved = runs[-1]["config"]["data"], recipes.sampling_config(name)
    stages = []
    for s in runs:
        d = s["config"].get("distill")
        method = (f"Self-Forcing: rolled out on its own chunks at {'/'.join(map(str, d['steps']))} steps a chunk, "
                  f"DMD2 against `{d['teacher']}` (its guidance built in), student every {d.get('student_every', 1)} "
                  f"steps" if d else f"diffusion forcing (a noise level per chunk, teacher forcing), initialised "
                  f"from `{s['config']['init_from']}`")
        stages.append(f"| {len(stages) + 1} | {method} | `{s['config_path']}` | {s['steps']} | {_wall(s)} | "
                      f"{s['precision']} |")
    streaming, stream = SWEEPS / STREAMING_RESULTS, {}
    if streaming.exists():
        stream = json.loads(streaming.read_text())
    results = json.loads(recipes.RESULTS.read_text()) if recipes.RESULTS.exists() else {}
    c = pipe.transformer.config
    return _template("model_card_causal.md").substitute(
        artifact=artifact, upstream_artifact=upstream, pipeline_class=type(pipe).__name__,
        size_mib=f"{sum(f.stat().st_size for f in folder.rglob('*.safetensors')) / 2**20:.1f}",
        chunk_frames=c.chunk_frames, window_chunks=c.window_chunks, shipped_steps=saved["num_inference_steps"],
        recipe=f"{recipes.CONFIGS}/{artifact}/", stages="\n".join(stages),
        training_notes="".join(f"**Training note** (`{s['config_path']}`): {s['history']}\n\n"
                               for s in runs if s.get("history")),
        streaming=streaming_table(stream) if stream else "(not measured yet)",
        prompt_adherence=_adherence(name, results), long_video=_long_video(name),
        sampling=", ".join(f"{k} {v}" for k, v in saved.items()),
        recipe_sampling_config=f"{recipes.CONFIGS}/{artifact}/sampling_config.json",
        ship_read=SHIP_READS.get(name, "-"), num_clips=data["num_clips"], num_frames=data["num_frames"],
        frame_size=data["size"], held_out_pairs=", ".join(f"{c}+{m}" for c, m in HELD_OUT_PAIRS))
