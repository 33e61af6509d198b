"""Output folders: created with their parents, or refused by name when the path cannot be one."""
from __future__ import annotations

from pathlib import Path

from vidgen.errors import InvalidInputError


def check_folder(path: str | Path, what: str) -> Path:
    """``path``, refused (:class:`~vidgen.errors.InvalidInputError` naming ``what``, the option or key that gave it)
    when it or a folder above it is a file, so it cannot be a folder; nothing is created."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise InvalidInputError(f"{what} {path}: {parent} is a file, not a folder; give a folder path")
    return path


def make_folder(path: str | Path, what: str) -> Path:
    """``path`` as a folder (created with its parents when missing); a file in the way, or a path that cannot be
    created, is an :class:`~vidgen.errors.InvalidInputError` naming ``what``."""
    path = check_folder(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidInputError(f"{what} {path}: cannot create the folder ({err.strerror or err})") from err
    return path
