"""``vidgen eval ...``: evaluation commands.

Sub-commands are contributed by ``EVAL_COMMAND_MODULES`` (each exposes ``register(eval_subparsers)``).
"""
from __future__ import annotations

import importlib

EVAL_COMMAND_MODULES: list[str] = [
    "vidgen.cli.eval_metrics",
    "vidgen.cli.eval_recon",
]


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluation: FVD, FID, reconstruction benchmark")
    eval_sub = parser.add_subparsers(dest="eval_command", metavar="METRIC")
    eval_sub.required = True
    for name in EVAL_COMMAND_MODULES:
        importlib.import_module(name).register(eval_sub)
