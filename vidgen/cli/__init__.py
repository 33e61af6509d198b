"""The ``vidgen`` command line.

Each command group lives in its own module exposing ``register(subparsers)``; the module adds its
parser(s) and sets ``func`` (called with the parsed ``argparse.Namespace``; returns an exit code).
To add a group, append its module name to ``COMMAND_MODULES``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from vidgen.errors import VidgenError

COMMAND_MODULES = [
    "vidgen.cli.info",
    "vidgen.cli.data",
    "vidgen.cli.eval",
    "vidgen.cli.generate",
    "vidgen.app.serve",  # `vidgen serve`: the app sits above the command line (it reuses vidgen.cli.generate)
]


#: import-time notices of the pinned torch / torchao / diffusers versions that no vidgen command can act on, by the
#: logger that emits them (the Python API leaves them as they are)
IMPORT_NOTICES = {"torch.utils._pytree": "is an Enum subclass and is now natively supported by torch.compile",
                  "diffusers.quantizers.torchao.torchao_quantizer": "Unable to import `torchao` Tensor objects"}


def _drop_import_notice(record: logging.LogRecord) -> bool:
    return IMPORT_NOTICES.get(record.name, "\0") not in record.getMessage()


def quiet_import_notices() -> None:
    """Drop the :data:`IMPORT_NOTICES` records on their loggers (each command prints them otherwise); one filter
    object, which ``addFilter`` adds once however many commands a process runs."""
    for name in IMPORT_NOTICES:
        logging.getLogger(name).addFilter(_drop_import_notice)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidgen", description="Video tokenization and generation toolkit.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_import_notices()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VidgenError as err:
        print(f"vidgen: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
