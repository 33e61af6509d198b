"""One way for every benchmark and evaluation script to write its results file under ``docs/results/``.

Each file carries what is needed to judge and reproduce it: the command, the commit (and whether the tree had
uncommitted changes), the sha256 of every weights file measured, the precision, library versions, thread count, host
CPU count, the CPU's model and bf16 units, the load average at the start of the run and at its end, and the date
(:data:`PROVENANCE` names the fields a results file must hold; ``tests/scripts/test_results_files.py`` checks every file).
README tables are generated from these files by ``readme_tables.py``.

A speed figure is judged over rounds: :func:`rounds_summary` gives the median and the minimum of per-round values
(at least :data:`MIN_ROUNDS` rounds for a target), :func:`alternate` orders the methods of a round so that rounds
alternate, and :func:`checked_seconds` refuses a negative time.

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
from vidgen.precision import cpu_description  # noqa: F401  (scripts take it from here)


def _process_age_s() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None


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


def target(name: str, measured, at_least: float, unit: str = "x", rounds: dict | None = None) -> dict:
    """A target as a result states it: met, missed by how much, or not measured (``measured`` None). With ``rounds``
    (a :func:`rounds_summary`) it is judged on their median, which must come from at least :data:`MIN_ROUNDS`
    rounds, and the minimum is kept beside it."""
    if rounds is not None:
        if rounds["n"] < MIN_ROUNDS:
            raise ValueError(f"target {name!r}: judged on {rounds['n']} rounds, at least {MIN_ROUNDS} needed")
        measured = rounds["median"]
    if measured is None:
        return {"target": name, "at_least": at_least, "unit": unit, "measured": None, "result": "not measured"}
    met = measured >= at_least
    out = {"target": name, "at_least": at_least, "unit": unit, "measured": round(float(measured), 4),
           "result": "met" if met else f"missed by {at_least - measured:.2f}{unit}"}
    if rounds is not None:
        out.update(judged_on="median", minimum=round(float(rounds["min"]), 4), rounds=rounds["n"])
    return out


#: the fewest rounds a speed target is judged on (their median; the minimum is stated beside it)
MIN_ROUNDS = 5


class NegativeTimeError(ValueError):
    """A measured (or derived) time below zero: a clock misread or a difference within the noise, never a result."""


def checked_seconds(seconds: float, what: str) -> float:
    """``seconds``, refused if negative or not a number (:class:`NegativeTimeError`)."""
    if not seconds >= 0:  # also NaN
        raise NegativeTimeError(f"{what}: a time of {seconds!r} s; a negative time is an error, not a result")
    return seconds


def rounds_summary(values) -> dict:
    """Per-round values (times, rates or ratios of values paired within each round) as a results file records
    them: every round, their median, minimum and maximum, and how many."""
    import statistics
    values = [float(v) for v in values]
    if not values:
        raise ValueError("rounds_summary: no rounds")
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "rounds": values}


def paired_ratios(numerators, denominators) -> dict:
    """:func:`rounds_summary` of ``numerators[i] / denominators[i]``: ratios paired within each round."""
    numerators, denominators = list(numerators), list(denominators)
    if len(numerators) != len(denominators):
        raise ValueError(f"paired_ratios: {len(numerators)} rounds against {len(denominators)}")
    return rounds_summary(n / d for n, d in zip(numerators, denominators))


def alternate(items, round_index: int) -> list:
    """``items`` in their order on even rounds and reversed on odd ones: each method runs first as often as last,
    so a drift of the machine's load within a round does not favour one."""
    items = list(items)
    return items if round_index % 2 == 0 else items[::-1]


def require_rounds(rounds: int, quick: bool = False) -> int:
    """``rounds``, refused below :data:`MIN_ROUNDS` unless the run is a smoke run (``quick``) that judges nothing."""
    if rounds < MIN_ROUNDS and not quick:
        raise SystemExit(f"--rounds {rounds}: a speed target is judged on the median of at least {MIN_ROUNDS} "
                         "rounds (use the smoke run's flag for fewer)")
    return rounds


def pinned_versions(*names: str) -> dict:
    """The versions ``constraints.txt`` pins for ``names``."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.strip().partition("==")
        if name in names:
            pins[name] = version
    return pins


#: the fields every results file holds (``weights_sha256`` is ``{}`` for a measurement of no weights file)
PROVENANCE = ("commit", "weights_sha256", "cpu", "precision", "threads", "loadavg_start", "loadavg_end")


def missing_provenance(record: dict) -> list[str]:
    """The fields of :data:`PROVENANCE` that ``record`` lacks (or holds empty: no commit, a CPU without its bf16
    units said); ``[]`` for a file that says where it came from."""
    missing = []
    for key in PROVENANCE:
        value = record.get(key)
        if value is None or (key == "weights_sha256" and not isinstance(value, dict)) or \
                (key == "cpu" and "bf16" not in str(value)) or (key == "precision" and value in ("", {})):
            missing.append(key)
    return missing


def sha256_file(path: str | Path) -> str:
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def weights_sha256(paths) -> dict:
    """The sha256 of every weights file measured: each of ``paths`` is a weights file or a folder (a pipeline folder,
    a checkpoint) whose weights files (:data:`WEIGHTS_SUFFIXES`) are all hashed; keyed by path, relative to the
    repository root where the file lies inside it. A path that holds no weights file is an error."""
    out = {}
    for given in ([paths] if isinstance(paths, (str, Path)) else paths):
        given = Path(given)
        files = [given] if given.is_file() else sorted(f for f in given.rglob("*") if f.suffix in WEIGHTS_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"weights_sha256: no weights file at {given}")
        for f in files:
            resolved = f.resolve()
            key = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else str(f)
            out[key] = sha256_file(f)
    return out


def write_result(path: str | Path, payload: dict, command: str | None = None, threads: int | None = None, *,
                 weights=None, precision=None) -> Path:
    """Write ``payload`` with the provenance block as indented JSON (``command`` defaults to this process's argv).

    ``weights``: the weights files (or folders of them) the run measured, hashed into ``weights_sha256`` (pass
    ``()`` for a run of no weights file: randomly initialised models, kernels); ``precision``: the compute precision
    (a string, or one per method), unless ``payload`` says it. The commit is read here (:func:`source_provenance`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    source = source_provenance(())
    record = {"command": command or " ".join(["python", *sys.argv]), "commit": source["commit"],
              "dirty": source["dirty"], **environment(threads)}
    if weights is not None:
        record["weights_sha256"] = weights_sha256(weights)
    if precision is not None:
        record["precision"] = precision
    record.update(payload)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, path)  # a reader never sees half a file
    return path
