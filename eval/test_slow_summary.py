#!/usr/bin/env python
"""``make test-slow``: the whole suite with the slow tests, and a results file that keeps the run on record.

    python eval/test_slow_summary.py                       # writes docs/results/test_slow_summary.json
    python eval/test_slow_summary.py -- -k sequence_parallel   # extra pytest arguments after --
    python eval/test_slow_summary.py --out x.json -- tests/integration/test_sequence_parallel.py   # only the files given

The file holds the git commit the run tested (and whether the tree had uncommitted changes), the counts (passed,
failed, skipped, errors), the wall time, the slowest tests, the CPU, and the largest difference each equality test
measured against the tolerance it asserted (2 processes against 1, sequence-parallel against one process, killed and
resumed against straight; recorded by ``tests/helpers/differences.py``). The exit status is pytest's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
from results import write_result  # noqa: E402


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def summarize(junit: Path) -> dict:
    """Counts and the slowest tests from pytest's JUnit XML."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    durations = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "errors", "skipped": "skipped"}[child.tag]
        counts[outcome] += 1
        durations.append((float(case.get("time", 0.0)), f"{case.get('classname')}::{case.get('name')}"))
    slowest = [{"test": name, "seconds": round(t, 1)} for t, name in sorted(durations, reverse=True)[:15]]
    return {"counts": counts, "test_seconds": round(sum(t for t, _ in durations), 1), "slowest": slowest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "test_slow_summary.json")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("TEST_WORKERS", "2")),
                        help="pytest-xdist workers, as make test (0: one process)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        junit, diffs = Path(tmp) / "junit.xml", Path(tmp) / "differences.json"
        env = {**os.environ, "VIDGEN_DIFFERENCES_FILE": str(diffs), "HF_HUB_OFFLINE": "1"}
        paths = [] if any(a.startswith("tests") for a in args.pytest_args) else ["tests"]  # given paths: only those
        workers = [] if args.workers == 0 else ["-n", str(args.workers), "--dist", "loadfile"]
        command = [sys.executable, "-m", "pytest", "-q", "--runslow", *workers, f"--junitxml={junit}", *paths,
                   *args.pytest_args]
        start = time.time()
        status = subprocess.run(command, cwd=ROOT, env=env).returncode
        wall = time.time() - start
        if not junit.is_file():
            print("test_slow_summary: pytest wrote no report; nothing recorded", file=sys.stderr)
            return status or 1
        summary = summarize(junit)
        differences = json.loads(diffs.read_text()) if diffs.is_file() else {}
    payload = {"commit": _git("rev-parse", "HEAD"), "uncommitted_changes": bool(_git("status", "--porcelain",
                                                                                    "vidgen", "tests")),
               "pytest_exit_status": status, "wall_seconds": round(wall, 1), **summary,
               "equality_differences": differences}
    write_result(args.out, payload, command=" ".join(["python", "eval/test_slow_summary.py", *args.pytest_args]),
                 weights=[ROOT / "pretrained"], precision="each test's own")  # the shipped weights the tests load
    print(f"test_slow_summary: {summary['counts']} in {wall / 60:.1f} min -> {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
