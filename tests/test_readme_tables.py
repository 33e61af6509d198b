"""The README's generated tables equal what the result files in docs/results/ say (eval/readme_tables.py)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_match_result_files(load_script):
    tables = load_script("eval/readme_tables.py")
    readme = (ROOT / "README.md").read_text()
    for name, (file, _) in tables.TABLES.items():
        assert (tables.RESULTS / file).exists(), f"docs/results/{file} is missing"
        assert f"<!-- table:{name} -->" in readme, f"README.md has no generated table {name!r}"
    assert tables.render(readme) == readme, "README tables are stale: run python eval/readme_tables.py"


def test_a_changed_result_changes_the_table(load_script):
    tables = load_script("eval/readme_tables.py")
    readme = (ROOT / "README.md").read_text()
    import json
    results = json.loads((tables.RESULTS / "demo_full.json").read_text())
    name = next(iter(results["pipelines"]))
    results["pipelines"][name]["seconds_per_video"] += 1.0
    assert tables.demo_table(results) not in readme
