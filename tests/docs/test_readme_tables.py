"""The generated results tables in README.md and docs/*.md equal what the result files in docs/results/ say
(eval/readme_tables.py)."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tables_match_result_files(load_script):
    tables = load_script("eval/readme_tables.py")
    texts = {path.relative_to(ROOT).as_posix(): path.read_text() for path in tables.pages()}
    assert "README.md" in texts and "docs/results.md" in texts
    for name, (file, _) in tables.TABLES.items():
        assert (tables.RESULTS / file).exists(), f"docs/results/{file} is missing"
        assert any(f"<!-- table:{name} -->" in text for text in texts.values()), \
            f"no page holds the generated table {name!r}"
    for page, text in texts.items():
        assert tables.render(text) == text, f"{page}: tables are stale: run python eval/readme_tables.py"
    assert tables.main(["--check"]) == 0


def test_readme_holds_the_short_results_table(load_script):
    tables = load_script("eval/readme_tables.py")
    readme = (ROOT / "README.md").read_text()
    results = json.loads((tables.RESULTS / "demo_full.json").read_text())
    assert tables.demo_short_table(results) in readme
    assert "<!-- table:demo -->" not in readme, "the full demo table belongs on docs/results.md"


def test_a_changed_result_changes_the_tables(load_script):
    tables = load_script("eval/readme_tables.py")
    readme = (ROOT / "README.md").read_text()
    results_page = (ROOT / "docs" / "results.md").read_text()
    results = json.loads((tables.RESULTS / "demo_full.json").read_text())
    name = next(iter(results["pipelines"]))
    results["pipelines"][name]["seconds_per_video"] += 1.0
    assert tables.demo_table(results) not in results_page
    assert tables.demo_short_table(results) not in readme


def test_check_fails_on_a_stale_page(load_script, tmp_path, monkeypatch):
    tables = load_script("eval/readme_tables.py")
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- table:demo_short -->\n") + len("<!-- table:demo_short -->\n")
    stale = tmp_path / "README.md"
    stale.write_text(readme[:start] + "| stale |\n" + readme[readme.index("\n<!-- /table:demo_short -->"):])
    monkeypatch.setattr(tables, "pages", lambda: [stale])
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    assert tables.main(["--check"]) == 1
    assert "| stale |" in stale.read_text(), "--check must not rewrite the page"
    assert tables.main([]) == 0
    assert stale.read_text() == readme


def test_every_block_in_the_pages_is_rendered_from_its_file(load_script):
    """Every ``<!-- table:NAME -->`` block of README.md and docs/*.md closes, and names a table maker and its results
    file (or is a placeholder holding no figure), and is re-rendered: a block whose text is changed comes back as its
    file says, so no block is left unrendered."""
    import re
    tables = load_script("eval/readme_tables.py")
    blocks = 0
    for path in tables.pages():
        text = path.read_text()
        opened = re.findall(r"^<!-- table:([\w-]+) -->$", text, re.M)  # a marker alone on its line
        assert sorted(opened) == sorted(re.findall(r"^<!-- /table:([\w-]+) -->$", text, re.M)), f"{path}: unclosed block"
        for name in opened:
            if name not in tables.TABLES:  # a placeholder for a measurement not made yet: it may hold no figure
                body = text.split(f"<!-- table:{name} -->\n", 1)[1].split(f"\n<!-- /table:{name} -->", 1)[0]
                assert not re.search(r"\d", body), f"{path}: block {name!r} holds figures but has no maker"
                continue
            assert (tables.RESULTS / tables.TABLES[name][0]).exists(), f"{path}: {name!r}: no results file"
            head, rest = text.split(f"<!-- table:{name} -->\n", 1)
            stale = head + f"<!-- table:{name} -->\n| stale |\n<!-- /table:{name} -->" + rest.split(
                f"\n<!-- /table:{name} -->", 1)[1]
            assert tables.render(stale) == text, f"{path}: block {name!r} is not re-rendered"
            blocks += 1
    assert blocks >= len(tables.TABLES)  # every maker's block, at least once


def test_the_error_breakdown_recounts_the_videos(load_script):
    """docs/results.md's misses table on a hand-made record whose counts are known."""
    errors = load_script("eval/demo_errors.py")

    def video(held_out, motion, shape, drawn_motion, drawn_shape, color="red", drawn_color="red"):
        return {"held_out": held_out, "color": color, "motion": motion, "shape": shape,
                "detected": {"p": {"color": drawn_color, "motion": drawn_motion, "shape": drawn_shape}}}

    record = {"pipelines": {"p": {}}, "videos": [
        video(False, "rotate", "hexagon", "still", "circle"),  # a seen miss: rotating drawn still
        video(False, "still", "star", "left", "star"),  # a seen miss: still drawn moving
        video(True, "rotate", "hexagon", "rotate", "star", drawn_color="blue"),  # a held-out colour miss
        video(True, "up", "hexagon", "up", "circle")]}
    row = errors.readme_table(record).splitlines()[2]
    assert row == ("| p | 2 / 1 | 1 / 0 | 1 / 0 | circle 2, star 2 | hexagon 3 of 3 (2 circle, 1 star) |")


def test_the_context_table_reads_each_shipped_value(load_script):
    """docs/stories.md's context reads: one row per shipped pipeline, its folder's context_frames in bold."""
    tables = load_script("eval/readme_tables.py")
    rows = tables.context_table({}).splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [f"| {name}" for name, _, _ in tables.CONTEXT_READS]
    for row, (_, folder, _) in zip(rows, tables.CONTEXT_READS):
        shipped = json.loads((ROOT / "pretrained" / folder / "sampling_config.json").read_text())["context_frames"]
        cells = row.split(" | ")
        assert cells[5] == str(shipped) and cells[shipped].startswith("**"), row
        assert sum(cell.startswith("**") for cell in cells) == 1
