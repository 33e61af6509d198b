"""eval/results.py, the provenance block of every results file: the load average at the start is read when the run
starts (not when its file is written), the one at the end beside it, and every script that writes a results file
imports the module before it does any work; every results file holds the commit, the weights' sha256, the CPU, the
precision, threads and the load, but for the files written before that rule (``GRANDFATHERED``), a list that only
shrinks."""
from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_load_at_start_is_read_at_the_start_and_at_the_end_at_the_end(load_script, tmp_path, monkeypatch):
    results = load_script("eval/results.py")  # a fresh module: its import is this run's start
    readings = iter([[1.0, 1.0, 1.0], [7.0, 7.0, 7.0]])
    monkeypatch.setattr(results.os, "getloadavg", lambda: next(readings))
    results.mark_start()  # the run starts: load 1.0
    record = json.loads(results.write_result(tmp_path / "r.json", {"x": 1}).read_text())  # ... ends: load 7.0
    assert record["loadavg_start"] == [1.0, 1.0, 1.0] and record["loadavg_end"] == [7.0, 7.0, 7.0]
    assert record["x"] == 1 and 0 <= record["loadavg_start_age_s"]
    from vidgen.precision import cpu_bf16_units
    assert record["cpu"] and all(unit in record["cpu"] for unit in cpu_bf16_units())  # which CPU measured it


def _writes_results(tree: ast.Module) -> bool:
    return any(isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == "write_result"
               for n in ast.walk(tree))


def _imports_results_at_top(tree: ast.Module) -> bool:
    return any(isinstance(n, ast.ImportFrom) and n.module in ("results", "eval.results") for n in tree.body)


def test_every_script_that_writes_results_imports_them_before_its_work():
    """A script that imported eval/results.py only when writing its file would read the start load at the end."""
    late = []
    for path in sorted([*ROOT.glob("eval/*.py"), *ROOT.glob("experiments/*.py"), *ROOT.glob("pipelines/*.py")]):
        tree = ast.parse(path.read_text())
        if path.name != "results.py" and _writes_results(tree) and not _imports_results_at_top(tree):
            late.append(path.relative_to(ROOT).as_posix())
    assert late == []



#: results files written before every file had to say where it came from (the commit, the weights' sha256, the CPU
#: and its bf16 units, precision, threads, the load at start and end): each leaves this list when it is re-measured,
#: and may not stay on it once it holds all of them. Nothing may be added.
GRANDFATHERED = frozenset({
    "docs/results/app_screenshot.json",
    "docs/results/bench_attention_gpu.json",
    "docs/results/bench_attention_host.json",
    "docs/results/bench_data.json",
    "docs/results/bench_data_memory.json",
    "docs/results/bench_generators.json",
    "docs/results/bench_layouts.json",
    "docs/results/bench_layouts_flow.json",
    "docs/results/bench_layouts_masked.json",
    "docs/results/bench_sequence_parallel.json",
    "docs/results/bench_shards.json",
    "docs/results/bench_tokenizers.json",
    "docs/results/bench_vae_speed.json",
    "docs/results/bf16_training_parity.json",
    "docs/results/compare_vae_recipe.json",
    "docs/results/demo_full.json",
    "docs/results/diffusers_test_mixins.json",
    "docs/results/fid_features_speed.json",
    "docs/results/fvd_features_speed.json",
    "docs/results/fvd_sanity.json",
    "docs/results/long_video_causal.json",
    "docs/results/long_video_frames_held.json",
    "docs/results/recon_benchmark.json",
    "docs/results/recon_comparison.json",
    "docs/results/refactor_parity.json",
    "docs/results/refactor_parity_families_recipe.json",
    "docs/results/refactor_parity_sampling_core.json",
    "docs/results/sampling_sweep_autoregressive.json",
    "docs/results/sampling_sweep_flow.json",
    "docs/results/sampling_sweep_masked.json",
    "docs/results/scorer_calibration.json",
    "docs/results/streaming_quality.json",
    "docs/results/tokenizer_ceiling.json",
    "docs/results/tokenizer_ceiling_demo.json",
    "docs/results/tokenizer_ceiling_fsq_edges.json",
    "docs/results/tokenizer_ceiling_fsq_finer.json",
    "docs/results/tokenizer_ceiling_tuning.json",
    "experiments/results/bench_attention_2026-11-27_run1.json",
    "experiments/results/bench_attention_2026-11-27_run2.json",
    "experiments/results/bench_streaming_2026-11-29_before.json",
    "experiments/results/bench_streaming_2026-11-29_rotated_once.json",
    "experiments/results/caption_probe_flow.json",
    "experiments/results/caption_probe_flow_shape.json",
    "experiments/results/caption_probe_flow_shape_stage6.json",
    "experiments/results/causal_probe_df_step1000_32.json",
    "experiments/results/causal_ship_read_192.json",
    "experiments/results/check_autoregressive_shipped_192.json",
    "experiments/results/check_flow_shipped_192.json",
    "experiments/results/check_masked_shipped_192.json",
    "experiments/results/device_h100_2026-11-26/cuda_checks.json",
    "experiments/results/device_h200_2026-11-27/run1_bench_attention_gpu.json",
    "experiments/results/distill_tuning_dmd2_gan_192.json",
    "experiments/results/distill_tuning_dmd2_step1000_192.json",
    "experiments/results/distill_tuning_dmd2_step1900_192.json",
    "experiments/results/distill_tuning_probe_37min.json",
    "experiments/results/generator_autoregressive_fsq4_baseline.json",
    "experiments/results/generator_autoregressive_wide_step1800.json",
    "experiments/results/generator_flow_fg.json",
    "experiments/results/generator_flow_p1ft.json",
    "experiments/results/generator_flow_rot.json",
    "experiments/results/generator_flow_rot2.json",
    "experiments/results/generator_flow_sc.json",
    "experiments/results/generator_flow_vae4_baseline.json",
    "experiments/results/generator_flow_vae4_long_step1250.json",
    "experiments/results/generator_flow_vae4_long_step1250_guidance.json",
    "experiments/results/generator_flow_vae4_long_step2500.json",
    "experiments/results/generator_flow_vae4_long_step3000.json",
    "experiments/results/generator_flow_vae4_step1500.json",
    "experiments/results/generator_flow_vae4_step2000.json",
    "experiments/results/generator_long_autoregressive_long.json",
    "experiments/results/generator_long_autoregressive_shipped.json",
    "experiments/results/generator_long_flow_long.json",
    "experiments/results/generator_long_flow_shipped.json",
    "experiments/results/generator_long_masked_long.json",
    "experiments/results/generator_long_masked_shipped.json",
    "experiments/results/generator_masked_fg.json",
    "experiments/results/generator_masked_fsq4.json",
    "experiments/results/generator_masked_fsq4_baseline.json",
    "experiments/results/generator_masked_wide_step2500.json",
    "experiments/results/probe_motion_scale.json",
    "experiments/results/recon_base_scenes_stage1.json",
    "experiments/results/renoise_probe_flow.json",
    "experiments/results/renoise_probe_flow_g1.json",
    "experiments/results/renoise_probe_flow_sheet.json",
    "experiments/results/renoise_probe_flow_steps100.json",
    "experiments/results/renoise_probe_masked.json",
    "experiments/results/renoise_probe_masked_top_k1.json",
    "experiments/results/rms_norm_paths.json",
    "experiments/results/sampling_flow_stochastic.json",
    "experiments/results/sampling_sweep_autoregressive.json",
    "experiments/results/sampling_sweep_autoregressive_g15_192.json",
    "experiments/results/sampling_sweep_autoregressive_stage3_192.json",
    "experiments/results/sampling_sweep_autoregressive_stage4_192.json",
    "experiments/results/sampling_sweep_autoregressive_stage4_t10_192.json",
    "experiments/results/sampling_sweep_autoregressive_temperature_192.json",
    "experiments/results/sampling_sweep_autoregressive_truncation.json",
    "experiments/results/sampling_sweep_autoregressive_turns.json",
    "experiments/results/sampling_sweep_flow.json",
    "experiments/results/sampling_sweep_flow_gpu_g2.0.json",
    "experiments/results/sampling_sweep_flow_gpu_g4.5.json",
    "experiments/results/sampling_sweep_flow_guidance6_192.json",
    "experiments/results/sampling_sweep_flow_interval_192.json",
    "experiments/results/sampling_sweep_masked.json",
    "experiments/results/sampling_sweep_masked_fsq4_64.json",
    "experiments/results/sampling_sweep_masked_greedy.json",
    "experiments/results/sampling_sweep_masked_progressive.json",
    "experiments/results/sampling_sweep_masked_stage3_192.json",
    "experiments/results/sampling_sweep_masked_steps.json",
    "experiments/results/sampling_sweep_masked_steps48_192.json",
    "experiments/results/sampling_sweep_masked_steps8_192.json",
    "experiments/results/sampling_sweep_masked_steps_few_192.json",
    "experiments/results/sampling_sweep_masked_top_p08_192.json",
    "experiments/results/sampling_sweep_masked_top_p_192.json",
    "experiments/results/sampling_sweep_masked_topk.json",
    "experiments/results/sampling_sweep_masked_turns.json",
    "experiments/results/sampling_sweep_masked_turns_low.json",
    "experiments/results/ship_autoregressive_gpu_192.json",
    "experiments/results/ship_autoregressive_long2_192.json",
    "experiments/results/ship_autoregressive_long_192.json",
    "experiments/results/ship_autoregressive_shipped_192.json",
    "experiments/results/ship_autoregressive_story_192.json",
    "experiments/results/ship_autoregressive_story_gpu_192.json",
    "experiments/results/ship_autoregressive_story_tail_gpu_192.json",
    "experiments/results/ship_flow_deep_gpu_192.json",
    "experiments/results/ship_flow_gpu_b512_192.json",
    "experiments/results/ship_flow_gpu_gpu_192.json",
    "experiments/results/ship_flow_shift_192.json",
    "experiments/results/ship_flow_shipped_192.json",
    "experiments/results/ship_flow_vae4_192.json",
    "experiments/results/ship_flow_vae4_long2_192.json",
    "experiments/results/ship_masked_b64_192.json",
    "experiments/results/ship_masked_gpu_192.json",
    "experiments/results/ship_masked_long_192.json",
    "experiments/results/ship_masked_sampling_192.json",
    "experiments/results/ship_masked_shipped_192.json",
    "experiments/results/step_cache_probe_flow.json",
    "experiments/results/story_context_label.json",
    "experiments/results/sweep_context.json",
    "experiments/results/sweep_context_autoregressive_long.json",
    "experiments/results/sweep_context_autoregressive_stage4.json",
    "experiments/results/sweep_context_autoregressive_story.json",
    "experiments/results/sweep_context_autoregressive_story_gpu.json",
    "experiments/results/sweep_context_autoregressive_story_tail_gpu.json",
    "experiments/results/sweep_context_autoregressive_t11.json",
    "experiments/results/sweep_context_masked_4steps.json",
    "experiments/results/sweep_context_shipped.json",
    "experiments/results/test_slow_causal_7c03dde.json",
    "experiments/results/test_slow_only_76ab3d4.json",
    "experiments/results/tokenizer_ceiling_fsq_wide.json",
    "experiments/results/tokenizer_ceiling_vae4.json",
    "experiments/results/x264_determinism.json",
})


def results_files() -> list[Path]:
    """Every results file of a measurement: the JSON files under docs/results/ and experiments/results/ (the text files
    there are the raw output of a command, named by the commit it ran)."""
    return sorted([*ROOT.glob("docs/results/*.json"), *ROOT.glob("experiments/results/**/*.json")])


def test_every_results_file_says_where_it_came_from(load_script):
    results = load_script("eval/results.py")
    lacking, stale = {}, []
    for path in results_files():
        name = path.relative_to(ROOT).as_posix()
        record = json.loads(path.read_text())
        missing = results.missing_provenance(record) if isinstance(record, dict) else list(results.PROVENANCE)
        if missing and name not in GRANDFATHERED:
            lacking[name] = missing
        if not missing and name in GRANDFATHERED:
            stale.append(name)
    assert lacking == {}, f"results files without provenance (eval/results.write_result(weights=, precision=)): {lacking}"
    assert stale == [], f"re-measured with provenance: take them off GRANDFATHERED: {stale}"
    gone = sorted(GRANDFATHERED - {p.relative_to(ROOT).as_posix() for p in results_files()})
    assert gone == [], f"GRANDFATHERED names files that do not exist: {gone}"


def test_write_result_records_provenance_and_the_check_names_what_is_missing(load_script, tmp_path):
    results = load_script("eval/results.py")
    weights = tmp_path / "pipe" / "transformer" / "model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    full = json.loads(results.write_result(tmp_path / "a.json", {"x": 1}, weights=[weights.parents[1]],
                                           precision="bf16").read_text())
    assert results.missing_provenance(full) == []
    assert full["commit"] and len(full["commit"]) == 40 and full["precision"] == "bf16"
    assert full["weights_sha256"] == {str(weights): hashlib.sha256(b"weights").hexdigest()}
    none = json.loads(results.write_result(tmp_path / "b.json", {"x": 1}, weights=(), precision="fp32").read_text())
    assert none["weights_sha256"] == {} and results.missing_provenance(none) == []  # a run of no weights file
    bare = json.loads(results.write_result(tmp_path / "c.json", {"x": 1}).read_text())
    assert results.missing_provenance(bare) == ["weights_sha256", "precision"]  # the script must say both
    assert results.missing_provenance({**full, "cpu": "Some CPU"}) == ["cpu"]  # without its bf16 units
    assert set(results.missing_provenance({})) == set(results.PROVENANCE)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        results.write_result(tmp_path / "d.json", {}, weights=[tmp_path / "empty"], precision="fp32")


# docs/results/ files measured on weights that pretrained/ no longer holds: each such weights file with the sha256
# prefix the results file recorded, and where its page says so
FLOW = "pretrained/shapes-flow/transformer/diffusion_pytorch_model.safetensors"
MEASURED_ON_EARLIER_WEIGHTS = {
    "docs/results/bench_few_step.json": ({FLOW: "5a85378f"}, "the student against the teacher it learnt from, "
                                         "shapes-flow's stage 6; docs/faster-sampling.md and the student's card say so"),
    "docs/results/bench_pipelines.json": ({FLOW: "118e44fb"}, "shapes-flow's stage 7, whose transformer and sampling "
                                          "stage 8 keeps; docs/precision.md says so above its table"),
}


def test_docs_results_name_the_weights_pretrained_holds_or_say_they_do_not(load_script):
    """A results file in docs/results/ backs a page's claim about a shipped model: the weights it names under
    pretrained/ are the ones shipped now, or they are listed above, each with the hash the file recorded."""
    sha256_file, unexpected = load_script("eval/results.py").sha256_file, {}
    for path in sorted(ROOT.glob("docs/results/*.json")):
        name = path.relative_to(ROOT).as_posix()
        hashes = json.loads(path.read_text()).get("weights_sha256")
        named = {k[k.index("pretrained/"):]: v for k, v in (hashes or {}).items()
                 if isinstance(hashes, dict) and "pretrained/" in k}
        changed = {k: v[:8] for k, v in named.items() if (ROOT / k).exists() and sha256_file(ROOT / k) != v}
        if changed != MEASURED_ON_EARLIER_WEIGHTS.get(name, ({}, ""))[0]:
            unexpected[name] = changed
    assert unexpected == {}, (
        "weights named under pretrained/ that differ from the shipped files, against MEASURED_ON_EARLIER_WEIGHTS "
        f"(re-measure, or list each with where its page says so; remove entries that now match): {unexpected}")
