"""One way for every benchmark and evaluation script to write its results file under ``docs/results/``.

Each file carries what is needed to judge and reproduce it: the command, library versions, thread count, host CPU
count, the CPU's model and bf16 units, the load average at the start of the run and at its end, and the date. README
tables are generated from these files by ``readme_tables.py``.

The start is when this module is first imported (scripts import it at the top, before any work) or the last
:func:`mark_start` call; ``loadavg_start_age_s`` records how long after the process started the start load was read,
so a reading taken late shows.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from vidgen.io.weights import weights_digest  # noqa: F401  (scripts take it from here)


def _process_age_s() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None


def cpu_description() -> str:
    """The CPU's model name and the bf16 units it lists (Linux ``/proc/cpuinfo``; else the platform's name)."""
    from vidgen.precision import cpu_bf16_units
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor() or platform.machine())
    return f"{name} ({', '.join(cpu_bf16_units()) or 'no bf16 units'})"


def mark_start() -> dict:
    """Read the load average now as the run's start (done once when this module is imported)."""
    global _START
    _START = {"loadavg_start": list(os.getloadavg()), "loadavg_start_age_s": _process_age_s()}
    return _START


_START: dict = {}
mark_start()


def environment(threads: int | None = None) -> dict:
    """The provenance block every results file starts with: ``loadavg_start`` as read by :func:`mark_start`,
    ``loadavg_end`` read now."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("torchvision", "diffusers", "transformers"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    return {"threads": threads if threads is not None else torch.get_num_threads(), "host_cpus": os.cpu_count(),
            "cpu": cpu_description(),
            **_START, "loadavg_end": list(os.getloadavg()), "versions": versions,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S")}


ROOT = Path(__file__).resolve().parents[1]


def source_provenance(files) -> dict:
    """Which code made a result: the git commit (``VIDGEN_SOURCE_COMMIT``, which the device scripts carry to a
    machine without the repository's history, else ``git``), whether the tree had uncommitted changes, and the
    sha256 of each of ``files`` (paths relative to the repository root) as they are now; with
    ``VIDGEN_SOURCE_SHA256`` (``path=sha256,...`` at the carried commit) also whether they still match it."""
    import hashlib
    import subprocess
    commit, dirty = os.environ.get("VIDGEN_SOURCE_COMMIT", ""), os.environ.get("VIDGEN_SOURCE_DIRTY")
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                    check=True).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                   capture_output=True, text=True, check=True).stdout.strip() != ""
        except (OSError, subprocess.CalledProcessError):
            commit = None
    sha = {str(f): hashlib.sha256((ROOT / f).read_bytes()).hexdigest() for f in files}
    out = {"commit": commit or None, "dirty": dirty in (True, "1", "true") if dirty is not None else None,
           "sha256": sha}
    carried = os.environ.get("VIDGEN_SOURCE_SHA256", "")
    at_commit = dict(item.split("=", 1) for item in carried.split(",") if "=" in item)
    if at_commit:  # the files' hashes at the carried commit: a tree changed after it was recorded is flagged
        out["files_match_commit"] = all(at_commit.get(f) == h for f, h in sha.items() if f in at_commit)
    return out


#: the files of the shipped Triton attention kernel, hashed into every device result (what code it ran)
KERNEL_FILES = ("vidgen/attention/triton_jit.py", "vidgen/attention/triton_kernel.py")


def kernel_provenance() -> dict:
    """``source``: :func:`source_provenance` of :data:`KERNEL_FILES`; ``triton``: the version that ran (None if
    triton is not installed)."""
    try:
        import triton
    except ImportError:
        triton = None
    return {"source": source_provenance(KERNEL_FILES), "triton": getattr(triton, "__version__", None)}


def target(name: str, measured, at_least: float, unit: str = "x") -> dict:
    """A target as a result states it: met, missed by how much, or not measured (``measured`` None)."""
    if measured is None:
        return {"target": name, "at_least": at_least, "unit": unit, "measured": None, "result": "not measured"}
    met = measured >= at_least
    return {"target": name, "at_least": at_least, "unit": unit, "measured": round(float(measured), 4),
            "result": "met" if met else f"missed by {at_least - measured:.2f}{unit}"}


def pinned_versions(*names: str) -> dict:
    """The versions ``constraints.txt`` pins for ``names``."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.strip().partition("==")
        if name in names:
            pins[name] = version
    return pins


def write_result(path: str | Path, payload: dict, command: str | None = None, threads: int | None = None) -> Path:
    """Write ``payload`` with the provenance block as indented JSON (``command`` defaults to this process's argv)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": command or " ".join(["python", *sys.argv]), **environment(threads), **payload}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, path)  # a reader never sees half a file
    return path
