"""eval/kernel_sass.py: the Triton attention kernels compile for Hopper (sm_90) on this CPU-only machine (Triton's own
ptxas; nothing is launched), the loops are found in their machine code, and the packed mask codes shorten the
partial-tile loop. Run in a subprocess: the interpreter (TRITON_INTERPRET=1, set by the kernel tests) cannot compile
for a GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
sys.path.insert(0, "eval")
import kernel_sass as ks
out = {}
for name, warps, stages in (("fwd_kernel", 8, 3), ("bwd_kv_kernel", 8, 2), ("bwd_q_kernel", 8, 2)):
    for packed in ((True, False) if name == "fwd_kernel" else (True,)):
        compiled = ks.compile_kernel(name, packed, warps, stages)
        out[f"{name}-{packed}"] = dict(loops=ks.loop_counts(compiled), **ks.resources(compiled))
print(json.dumps(out))
"""


def test_kernels_compile_for_hopper_and_packed_codes_shorten_the_partial_loop():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    for key, kernel in got.items():
        assert len(kernel["loops"]) == 2, key  # the full-tile loop, then the partial-tile loop
        full, partial = kernel["loops"]
        assert full["tensor_core"] > 0 and full["exp2"] > 0  # the loop bodies found are the attention loops
        assert partial["instructions"] > full["instructions"]  # the mask costs instructions
        assert 0 < kernel["registers"] <= 255
    packed, coords = got["fwd_kernel-True"]["loops"], got["fwd_kernel-False"]["loops"]
    assert abs(packed[0]["instructions"] - coords[0]["instructions"]) <= 0.05 * coords[0]["instructions"]
    assert packed[1]["instructions"] < 0.8 * coords[1]["instructions"]
    assert packed[1]["integer"] < 0.7 * coords[1]["integer"]


def test_the_committed_counts_render_into_the_docs(load_script):
    results = json.loads((ROOT / "docs" / "results" / "kernel_sass.json").read_text())
    table = load_script("eval/kernel_sass.py").readme_table(results)
    assert table in (ROOT / "docs" / "attention.md").read_text()
    assert table.count("| forward (128×64) |") == 4 and "Counts, not timings" in table
