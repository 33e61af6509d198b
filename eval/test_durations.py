"""Test time per test file from a pytest JUnit XML report: what each fresh-clone record lists, so that a suite that
grows slower shows where.

    make test PYTEST_ADDOPTS="--junitxml=/tmp/junit.xml"      # or: pytest --junitxml=/tmp/junit.xml tests
    python eval/test_durations.py /tmp/junit.xml                 # seconds per file, slowest first, and the total
    python eval/test_durations.py new.xml --against old.xml      # the same, beside another run's, with the ratio
"""
from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict


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
    args = parser.parse_args(argv)
    print(table(per_file(args.report), per_file(args.against) if args.against else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
