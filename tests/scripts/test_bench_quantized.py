"""eval/bench_quantized.py never rots: its ``--quick`` mode (a tiny Wan-architecture transformer) runs every method in
its own process and writes a results file with the real run's structure and provenance; int8 weight-only really
quantizes, the disk offload really writes files and gives bf16's output, and the docs table renders from it."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torchao", reason="torchao is not installed (the `quant` extra; make install installs it)")
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "eval" / "bench_quantized.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_quantized", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # four worker processes, each importing torch, diffusers and torchao (about 40-90 s)
def test_quick_run_writes_every_method_with_its_memory_and_difference(tmp_path):
    module = _module()
    out = tmp_path / "q.json"
    assert module.main(["--quick", "--out", str(out), "--methods", "bf16,int8_weight_only,group_offload_disk"]) == 0
    result = json.loads(out.read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"bf16", "int8_weight_only", "group_offload_disk"}
    assert all("error" not in r and r["s_per_step"] > 0 and len(r["rounds_s"]) == 2 for r in rows.values())
    assert "Int8Tensor" in rows["int8_weight_only"]["weight_types"]
    assert rows["int8_weight_only"]["weights_bytes"] < rows["bf16"]["weights_bytes"]
    assert rows["group_offload_disk"]["offload_disk_bytes"] > 0
    assert rows["group_offload_disk"]["difference"]["vs_bf16"]["max"] == 0.0
    assert 0 < rows["int8_weight_only"]["difference"]["vs_bf16"]["mean"] < 0.05
    assert all(r["peak_bytes"] == r["weights_bytes"] + r["step_extra_bytes"] for r in rows.values())
    assert {"commit", "weights_sha256", "cpu", "precision", "threads", "loadavg_start", "loadavg_end"} <= set(result)
    table = module.readme_table(result)
    assert "| int8_weight_only |" in table and "load average" in table


@pytest.mark.parametrize("method", ["int8_weight_only", "group_offload_disk"])
def test_one_method_in_this_process_measures_memory_and_time(tmp_path, method):
    import torch
    module = _module()
    with torch.random.fork_rng():
        params = module.build_folder(module.TINY, tmp_path / "model", (1, 4, 4), 8)
    assert params > 0 and (tmp_path / "model" / "inputs.pt").is_file()
    row = module.worker(method, tmp_path / "model", tmp_path / f"{method}.pt", torch.get_num_threads(), 1)
    assert row["s_per_step"] > 0 and row["weights_bytes"] > 0 and row["step_extra_bytes"] > 0
    assert (tmp_path / f"{method}.pt").is_file()
    assert (row["offload_disk_bytes"] > 0) == (method == "group_offload_disk")


def test_storage_bytes_counts_quantized_weights_by_their_inner_tensors():
    import torch
    from torchao.quantization import Int8WeightOnlyConfig, quantize_
    module = _module()
    layer = torch.nn.Linear(256, 128, bias=False, dtype=torch.bfloat16)
    assert module.storage_bytes(layer) == 256 * 128 * 2
    quantize_(layer, Int8WeightOnlyConfig())
    assert 256 * 128 <= module.storage_bytes(layer) < 256 * 128 * 2  # int8 data and a scale per row


def test_rounds_below_three_are_refused_outside_the_smoke_run():
    with pytest.raises(SystemExit, match="at least 3 rounds"):
        _module().parse_args(["--rounds", "2"])
