"""One way for every benchmark and evaluation script to write its results file under ``docs/results/``.

Each file carries what is needed to judge and reproduce it: the command, library versions, thread count, host CPU
count and load at the start, and the date. README tables are generated from these files by ``readme_tables.py``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch


def environment(threads: int | None = None) -> dict:
    """The provenance block every results file starts with."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("torchvision", "diffusers", "transformers"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    return {"threads": threads if threads is not None else torch.get_num_threads(), "host_cpus": os.cpu_count(),
            "loadavg_start": list(os.getloadavg()), "versions": versions, "date": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write_result(path: str | Path, payload: dict, command: str | None = None, threads: int | None = None) -> Path:
    """Write ``payload`` with the provenance block as indented JSON (``command`` defaults to this process's argv)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": command or " ".join(["python", *sys.argv]), **environment(threads), **payload}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def weights_digest(folder: str | Path) -> str:
    """A short SHA-256 over every ``*.safetensors`` file under ``folder`` (their relative paths and bytes): which
    weights a read ran on, so a results file can be matched to the pipeline folder that ships."""
    folder, digest = Path(folder), hashlib.sha256()
    files = sorted(folder.rglob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"weights_digest: no *.safetensors under {folder}")
    for f in files:
        digest.update(f.relative_to(folder).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]
