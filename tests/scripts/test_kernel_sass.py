"""eval/kernel_sass.py: the Triton attention kernels compile for Hopper (sm_90) on this CPU-only machine (Triton's own
ptxas; nothing is launched), the loops are found in their machine code, and the packed mask codes shorten the
partial-tile loop, and a tile-aligned window's every iteration is the full-tile loop's. Run in a subprocess: the interpreter (TRITON_INTERPRET=1, set by the kernel tests) cannot compile
for a GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
sys.path.insert(0, "eval")
import kernel_sass as ks
out, rows = {}, []
for name, warps, stages in (("fwd_kernel", 8, 3), ("bwd_kv_kernel", 8, 2), ("bwd_q_kernel", 8, 2)):
    for packed in ((True, False) if name == "fwd_kernel" else (True,)):
        compiled = ks.compile_kernel(name, packed, warps, stages)
        out[f"{name}-{packed}"] = dict(loops=ks.loop_counts(compiled), **ks.resources(compiled))
        if packed:
            full, partial = out[f"{name}-{packed}"]["loops"]
            rows.append(dict(function=name, mask="packed", num_warps=warps, num_stages=stages, full=full,
                             partial=partial))
small = dict(grid=(4, 16, 32), window=(3, 9, 9), tile=(2, 8, 8), tile_window=(1, 1, 1))
out["tile_windows"] = ks.tile_windows(rows, small)
print(json.dumps(out))
"""


def test_kernels_compile_for_hopper_and_packed_codes_shorten_the_partial_loop():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    tiles = got.pop("tile_windows")
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
    # a tile-aligned window visits whole tiles only: every iteration is the full loop's body, in all three kernels,
    # where the exact window's visits are mostly partial ones, each the longer partial loop
    assert tiles["tile_iterations_equal_the_full_loop"] is True
    for label, tiled in tiles["tiled"].items():
        exact = tiles["exact"][label]
        assert tiled["partial"] == 0 and tiled["full"] > 0 and exact["partial"] > 0, label
        assert tiled["instructions_per_iteration"] == tiled["full_loop_instructions"], label
        assert exact["instructions_per_iteration"] > exact["full_loop_instructions"], label


def test_the_committed_counts_render_into_the_docs(load_script):
    results = json.loads((ROOT / "docs" / "results" / "kernel_sass.json").read_text())
    table = load_script("eval/kernel_sass.py").readme_table(results)
    assert table in (ROOT / "docs" / "attention.md").read_text()
    assert table.count("| forward (128×64) |") == 4 and "Counts, not timings" in table
