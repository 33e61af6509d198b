"""The measured differences of the equality tests (2 processes against 1, sequence-parallel against one process,
killed-and-resumed against straight), kept for the record: ``record(what, value, tolerance)`` notes the largest
difference a test measured and the tolerance it asserted (absolute, or absolute + relative), under the running test's id. With
``VIDGEN_DIFFERENCES_FILE`` set, conftest writes them there as JSON when the session ends
(``eval/test_slow_summary.py`` sets it for ``make test-slow``)."""
from __future__ import annotations

import json
import os
from pathlib import Path

RECORDED: dict = {}


def record(what: str, value: float, tolerance: float, rtol: float = 0.0, excess: float | None = None) -> float:
    """Note ``value`` (the largest |difference| measured) for ``what`` in the running test; returns ``value``.

    An absolute test asserts ``value <= tolerance``. A mixed one (``rtol`` > 0) asserts
    ``|a - b| <= tolerance + rtol * |b|`` elementwise; ``excess`` is then its largest ``|a - b| - rtol * |b|``, the
    number the assertion compares with ``tolerance``, and is recorded beside the plain difference."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
    entry = RECORDED.setdefault(test, {}).setdefault(what, {"max_abs_difference": 0.0, "tolerance": tolerance})
    entry["max_abs_difference"] = max(entry["max_abs_difference"], float(value))
    if rtol:
        entry["rtol"] = rtol
        entry["max_excess_over_rtol_part"] = max(entry.get("max_excess_over_rtol_part", float("-inf")), float(excess))
    return value


def write(path: str | Path, merge: bool = False) -> None:
    """Write this process's records to ``path``; ``merge``: with those of the files ``path.gw*`` that pytest-xdist
    workers wrote (each then removed)."""
    path, records = Path(path), dict(RECORDED)
    if merge:
        for part in sorted(path.parent.glob(path.name + ".gw*")):
            records.update(json.loads(part.read_text()))
            part.unlink()
    path.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
