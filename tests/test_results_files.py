"""eval/results.py, the provenance block of every results file: the load average at the start is read when the run
starts (not when its file is written), the one at the end beside it, and every script that writes a results file
imports the module before it does any work."""
from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
