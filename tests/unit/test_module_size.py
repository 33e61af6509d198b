"""No module of the library is over 400 physical lines: a longer one is split by what its parts do."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 400


def physical_lines(path: Path) -> int:
    data = path.read_bytes()
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def test_no_module_is_over_400_lines():
    sizes = {path.relative_to(ROOT).as_posix(): physical_lines(path) for path in (ROOT / "vidgen").rglob("*.py")}
    assert sizes, "no modules found under vidgen/"
    over = sorted(((n, name) for name, n in sizes.items() if n > MAX_LINES), reverse=True)
    assert not over, f"modules over {MAX_LINES} lines: " + ", ".join(f"{name} ({n})" for n, name in over)
