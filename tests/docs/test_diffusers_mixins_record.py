"""The totals docs/pipelines.md quotes for diffusers' own test mixins (section "diffusers' own tests") are those of
docs/results/diffusers_test_mixins.json, which experiments/diffusers_mixins/record.py writes. The mixins themselves
cannot run here (CI has no diffusers test tree: see the results file's notes); this keeps the prose honest."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "pipelines.md"
RESULTS = ROOT / "docs" / "results" / "diffusers_test_mixins.json"
SECTION = "## diffusers' own tests"
# the table's columns, in order, and the results file's key for each
COLUMNS = {"passed": "passed", "failed": "failed", "skipped": "skipped", "expected failures": "xfailed",
           "deselected": "deselected", "tests": "total"}


def section(text: str) -> str:
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:end if end != -1 else len(text)]


def quoted_totals(text: str) -> dict[str, dict[str, int]]:
    """{class name or "all": {results key: number}} from the section's totals table: the row whose header cells are
    "class" then COLUMNS, and each row after it whose first cell is a `Name` or "all"."""
    body = section(text)
    lines = [line.strip() for line in body.splitlines()]
    header = ["class", *COLUMNS]
    try:
        start = next(i for i, line in enumerate(lines)
                     if [c.strip().lower() for c in line.strip("|").split("|")] == header)
    except StopIteration:
        raise AssertionError(f"no totals table with columns {header} in {SECTION!r}") from None
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = cells[0].strip("`* ")
        numbers = [int(re.sub(r"\*", "", c)) for c in cells[1:]]
        assert len(numbers) == len(COLUMNS), f"row {line!r}: {len(numbers)} numbers, expected {len(COLUMNS)}"
        rows[name] = dict(zip(COLUMNS.values(), numbers))
    return rows


def recorded_totals(record: dict) -> dict[str, dict[str, int]]:
    rows = {name: {k: c["totals"][k] for k in COLUMNS.values()} for name, c in record["classes"].items()}
    rows["all"] = {k: record["totals"][k] for k in COLUMNS.values()}
    return rows


def differences(text: str, record: dict) -> list[str]:
    quoted, recorded = quoted_totals(text), recorded_totals(record)
    diffs = [f"{name}: not in the doc's table" for name in recorded.keys() - quoted.keys()]
    diffs += [f"{name}: in the doc's table, not in the results file" for name in quoted.keys() - recorded.keys()]
    for name in quoted.keys() & recorded.keys():
        diffs += [f"{name} {key}: doc {quoted[name][key]}, results file {recorded[name][key]}"
                  for key in COLUMNS.values() if quoted[name][key] != recorded[name][key]]
    for what, commit in (("diffusers test tree", record["diffusers_test_tree"]["commit"][:10]),
                         ("vidgen commit", record["vidgen_commit"][:10])):
        if f"`{commit}`" not in section(text):
            diffs.append(f"the {what} {commit} is not named in the section")
    return diffs


@pytest.fixture(scope="module")
def record():
    return json.loads(RESULTS.read_text())


def test_doc_quotes_the_recorded_totals(record):
    assert differences(DOC.read_text(), record) == []


def test_recorded_totals_add_up(record):
    """Each class's totals count its tests; the overall totals are the sum of the classes'."""
    for name, c in record["classes"].items():
        counts = {k: sum(t["status"] == k for t in c["tests"].values()) for k in COLUMNS.values() if k != "total"}
        assert {**counts, "total": len(c["tests"])} == {k: c["totals"][k] for k in COLUMNS.values()}, name
    for key in COLUMNS.values():
        assert record["totals"][key] == sum(c["totals"][key] for c in record["classes"].values()), key


def test_a_wrong_number_in_the_doc_is_caught(record):
    """The check can fail: one number changed in the doc's table is reported."""
    text = DOC.read_text()
    row = next(line for line in section(text).splitlines() if line.startswith("| all"))
    cells = row.split("|")
    cells[2] = f" {int(cells[2]) + 1} "  # "passed" of the overall row
    wrong = text.replace(row, "|".join(cells))
    assert differences(wrong, record) == [
        f"all passed: doc {record['totals']['passed'] + 1}, results file {record['totals']['passed']}"]
