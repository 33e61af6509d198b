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
