"""Test time per test file from a pytest JUnit XML report: what each fresh-clone record lists, so that a suite that
grows slower shows where.

    make test PYTEST_ADDOPTS="--junitxml=/tmp/junit.xml"      # or: pytest --junitxml=/tmp/junit.xml tests
    python eval/test_durations.py /tmp/junit.xml                 # seconds per file, slowest first, and the total
    python eval/test_durations.py new.xml --against old.xml      # the same, beside another run's, with the ratio

``--out docs/results/make_test.json --commit C --against-commit B`` records the runs (their suite times, counts and
seconds per file, with the provenance block; ``--workers`` / ``--against-workers``: the pytest workers of each run),
which the README's and the getting-started page's test-time sentence is rendered from (``readme_table``).
"""
from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402  (first: the start load)


def _file_of(case) -> str:
    """``tests/test_x.py`` of a test case: its ``file`` attribute, else its ``classname`` (``tests.test_x`` or
    ``tests.test_x.TestClass``) up to the module."""
    if case.get("file"):
        return case.get("file")
    parts = case.get("classname", "").split(".")
    module = next((i for i, p in enumerate(parts) if p.startswith("test_")), len(parts) - 1)
    return "/".join(parts[:module + 1]) + ".py"


def per_file(report: str) -> dict[str, float]:
    """Test file -> seconds of its test cases (setup, call and teardown as pytest's JUnit report times them)."""
    totals: dict[str, float] = defaultdict(float)
    for case in ET.parse(report).getroot().iter("testcase"):
        totals[_file_of(case)] += float(case.get("time") or 0.0)
    return dict(totals)


def suite(report: str) -> dict:
    """The run's totals from its JUnit report: pytest's own session time (``suite_seconds``, what ``make test`` prints:
    wall time, with every worker) and the counts."""
    root = ET.parse(report).getroot()
    node = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(node.get(k) or 0) for k in ("tests", "failures", "errors", "skipped")}
    return {"suite_seconds": round(float(node.get("time") or 0.0), 2),
            "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed": counts["failures"] + counts["errors"], "skipped": counts["skipped"]}


def run_record(report: str, commit: str, workers: int) -> dict:
    """One run: the commit measured, its pytest workers (0: one process), its totals and seconds per file."""
    files = per_file(report)
    return {"commit": commit, "workers": workers, **suite(report), "summed_test_seconds": round(sum(files.values()), 2),
            "seconds_per_file": {k: round(v, 2) for k, v in sorted(files.items(), key=lambda kv: -kv[1])}}


def readme_table(results: dict) -> str:
    """The test-time sentence of the README and the getting-started page (``<!-- table:make_test -->``)."""
    run, before = results["run"], results.get("before")
    how = f"{run['workers']} pytest workers" if run["workers"] else "one process"
    text = (f"On a 2-core {results['cpu']}, `make test` ({how}) took {run['suite_seconds'] / 60:.1f} minutes of test "
            f"time at {run['commit'][:7]}")
    if before:
        text += (f", against {before['suite_seconds'] / 60:.1f} minutes for {before['commit'][:7]} "
                 f"({'one process' if not before['workers'] else str(before['workers']) + ' workers'}) on the same "
                 f"machine")
    return text + " (`docs/results/make_test.json`, seconds per test file)."


def table(new: dict[str, float], old: dict[str, float] | None = None) -> str:
    rows = sorted(new, key=new.get, reverse=True)
    lines = []
    for name in rows:
        line = f"{new[name]:8.2f} s  {name}"
        if old is not None and name in old:
            line += f"   (before {old[name]:.2f} s, {new[name] / old[name]:.2f}x)" if old[name] else ""
        lines.append(line)
    total = sum(new.values())
    lines.append(f"{total:8.2f} s  total over {len(new)} files"
                 + (f"   (before {sum(old.values()):.2f} s over {len(old)} files)" if old is not None else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="a pytest --junitxml report")
    parser.add_argument("--against", help="another run's report, shown beside")
    parser.add_argument("--out", help="record the run(s) here (a results file, e.g. docs/results/make_test.json)")
    parser.add_argument("--commit", help="the commit the report measured (with --out)")
    parser.add_argument("--workers", type=int, default=2, help="the report's pytest workers (0: one process)")
    parser.add_argument("--against-commit", help="the commit --against measured")
    parser.add_argument("--against-workers", type=int, default=0)
    parser.add_argument("--note", default="", help="how the runs were made (fresh clones, the load, ...)")
    args = parser.parse_args(argv)
    print(table(per_file(args.report), per_file(args.against) if args.against else None))
    if args.out:
        if not args.commit or (args.against and not args.against_commit):
            parser.error("--out needs --commit (and --against-commit with --against)")
        payload = {"run": run_record(args.report, args.commit, args.workers), "note": args.note}
        if args.against:
            payload["before"] = run_record(args.against, args.against_commit, args.against_workers)
            payload["ratio_suite_seconds"] = round(payload["run"]["suite_seconds"] / payload["before"]["suite_seconds"], 3)
        root = Path(__file__).resolve().parents[1]
        write_result(args.out, payload, threads=1 if args.workers else None, weights=[root / "pretrained"],
                     precision="fp32 where the CPU has no bf16 units (the bf16 suites skip to make test-slow)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
