"""A short digest of a folder of saved weights: which weights a results file was measured on."""
from __future__ import annotations

import hashlib
from pathlib import Path


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
