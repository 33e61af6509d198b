"""eval/bench_layouts.py in its quick mode: every generator is timed in every layout and over patches of ids (both
ship on patches), each precision the CPU runs natively, and the docs' table keeps rows of different precisions
apart."""
from __future__ import annotations

import json

import torch


def test_quick_run_covers_every_generator_layout_and_patch(load_script, tmp_path):
    bench = load_script("eval/bench_layouts.py")
    threads = torch.get_num_threads()
    out = tmp_path / "layouts.json"
    assert bench.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads
    results = json.loads(out.read_text())
    cases = {(r["kind"], r["layout"], tuple(r["patch_size"]), r["precision"]) for r in results["rows"]}
    for kind in ("masked", "ar"):
        for mode in results["precisions"]:
            assert {(kind, layout, (1, 1, 1), mode) for layout in bench.LAYOUTS} <= cases
            assert (kind, "full", (1, 2, 2), mode) in cases
    patched = [r for r in results["rows"] if r["patch_size"] == [1, 2, 2]]
    assert all(r["tokens"] * 4 == r["ids"] for r in patched)
    assert all(r["seconds_per_step"] > 0 and 0 < r["fraction_of_ceiling"] for r in results["rows"])

    results.update(threads=1, date="2026-01-01", command="python eval/bench_layouts.py --quick")
    table = bench.readme_table(results).splitlines()
    assert "| precision |" in table[0]
    assert len(table) == 2 + len(results["rows"]) + 2  # header, rule, a row per result, blank line, footnote
    assert {line.split(" | ")[5] for line in table[2:-2]} == set(results["precisions"])
