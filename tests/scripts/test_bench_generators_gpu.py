"""The GPU mode of eval/bench_generators.py, run where it can be here: its patched clip grid (1x2x2 patches, as the
GPU defaults train) through training, sampling and the AR decode step on the CPU, and its GPU targets' rules."""
import json

import torch


def test_patched_grid_quick_run(load_script, tmp_path):
    bench = load_script("eval/bench_generators.py")
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--threads", "1", "--patch", "1", "2", "2", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["config"]["patch"] == [1, 2, 2] and results["device"] == "cpu"
    assert {r["tokens_per_clip"] for r in results["training"]} == {2 * 4 * 4 // 4}
    step = results["ar_decode_step"]["fp32"]
    assert step["decoder_s"] > 0 and "cuda_graph_s" not in step  # the graph is timed on a GPU only
    assert bench.DEVICE == torch.device("cpu")
    assert load_script("eval/results.py").missing_provenance(results) == []  # written after every row with it


def test_gpu_targets(load_script):
    bench = load_script("eval/bench_generators.py")
    results = {"device": "cuda", "training": [
        {"preset": "large", "kind": "flow", "precisions": {"bf16+compile": {"fraction_of_ceiling": 0.43}}},
        {"preset": "large", "kind": "masked", "precisions": {"bf16+compile": {"fraction_of_ceiling": 0.31}}},
        {"preset": "base", "kind": "flow", "precisions": {"bf16+compile": {"fraction_of_ceiling": 0.9}}}],
        "ar_decode_step": {"bf16 weights": {"cuda_graph_speedup_vs_decoder": 3.4},
                           "fp32": {"cuda_graph_speedup_vs_decoder": 2.1}}}
    got = bench.targets(results)
    assert {k: v["met"] for k, v in got.items()} == {
        "train_large_flow_mfu": True, "train_large_masked_mfu": False,
        "ar_decode_cuda_graph_bf16 weights": True, "ar_decode_cuda_graph_fp32": False}


def test_gpu_table_renders_a_complete_run(load_script, tmp_path):
    """A finished run (here the CPU quick run) renders every section it holds and names nothing as missing."""
    bench = load_script("eval/bench_generators.py")
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    table = bench.gpu_table(results)
    rows = sum(len(r["precisions"]) for r in results["training"])
    assert table.count("| flow, `tiny` (") + table.count("| masked, `tiny` (") == rows  # with the parameter count
    assert "| sampling |" in table and "| AR decode step |" in table
    assert "stopped before its end" not in table and "Not in this run" not in table
    assert "| AR decode step, CUDA graph / eager step ≥ 3× | – | not measured |" in table  # no graph on a CPU


def test_gpu_table_of_a_stopped_run_says_what_it_did_not_reach(load_script):
    """docs/results/bench_generators_cuda.json's kind of file: a run stopped after its first preset renders the rows
    it has, its targets without a row as not measured, and what its configuration asked for that it lacks."""
    bench = load_script("eval/bench_generators.py")
    ceiling = {"n": 8192, "gflops": 1000.0}
    step = {"seconds_per_step": 1.0, "tokens_per_s": 10.0, "gflops": 430.0, "fraction_of_ceiling": 0.43,
            "speedup_vs_fp32": 1.0}
    results = {"device": "cuda", "gpu": "GPU", "torch": "t", "triton": "tr", "date": "2026-01-01T00:00:00",
               "command": "python eval/bench_generators.py --device cuda", "ceilings": {"fp32": ceiling, "bf16": ceiling},
               "config": {"presets": ["large", "base"], "compile": True, "compile_presets": ["large"],
                          "sample_preset": "small", "grid": [5, 32, 32], "patch": [1, 2, 2], "train_batch": 16,
                          "train_steps": 5},
               "training": [{"kind": "flow", "preset": "large", "batch": 16, "tokens_per_clip": 1280,
                             "precisions": {"fp32": step, "bf16": step, "bf16+compile": {**step, "compile_s": 9.0}}},
                            {"kind": "masked", "preset": "large", "batch": 16, "tokens_per_clip": 1280,
                             "precisions": {"fp32": step}}],
               "sampling": []}
    table = bench.gpu_table(results)
    assert table.count("| flow, `large` |") == 3 and table.count("| masked, `large` |") == 1
    assert "| 9.0 |" in table and "| sampling |" not in table and "| AR decode step |" not in table
    assert ("did not reach: `base` training; `large` masked bf16, bf16+compile; the AR decode step (eager and CUDA "
            "graph); sampling (masked, flow, ar on `small`).") in table
    assert "| `large` flow bf16+compile training, MFU ≥ 40 % | 43.0 % | met |" in table
    assert "| `large` masked bf16+compile training, MFU ≥ 40 % | – | not measured |" in table
    assert "| AR decode step, CUDA graph / eager step ≥ 3× | – | not measured |" in table
    results["ar_decode_step"] = {"fp32": {"rows": 8, "position": 100, "generic_s": 4e-3, "decoder_s": 3e-3,
                                          "cuda_graph_s": 1.2e-3, "cuda_graph_speedup_vs_decoder": 2.5}}
    table = bench.gpu_table(results)
    assert "| AR decode step (fp32), CUDA graph / eager step ≥ 3× | 2.50× | missed by 0.50× |" in table
    assert "the AR decode step" not in table.split("did not reach:")[1].split("\n")[0]
