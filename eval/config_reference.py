#!/usr/bin/env python
"""docs/config.md's tables of every training config key: rendered from the dataclasses of ``vidgen.training`` (name,
default, and the comment the source gives the field), so the reference cannot drift from the code.

    python eval/config_reference.py          # rewrite the tables in docs/config.md
    python eval/config_reference.py --check  # exit 1 if they differ from the code (a test runs this)

A table sits between ``<!-- config:NAME -->`` and ``<!-- /config:NAME -->`` markers.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "config.md"
FIELD = re.compile(r"^    (\w+)\s*:\s*[^#]*?(?:\s+#\s*(.*))?$")  # a class-body field line, its trailing comment


def field_notes(cls) -> dict[str, str]:
    """Each field's comment in ``cls``'s source: the one on its line, after the comment lines just above it."""
    notes, above = {}, []
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if line.startswith("    #"):
            above.append(text.lstrip("#").strip())
            continue
        match = FIELD.match(line)
        if match and not line.startswith("    _"):
            notes[match.group(1)] = " ".join([*above, *([match.group(2)] if match.group(2) else [])])
        above = []
    return notes


def _default(f: dataclasses.Field):
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return list(value) if isinstance(value, tuple) else value


def rows(cls, prefix: str = "", own_only: bool = False) -> list[tuple[str, str, str]]:
    """(key, default, note) of every field of ``cls`` (nested dataclasses have their own rows, ``section.key``);
    with ``own_only``, only the fields ``cls``'s own body sets (new ones, or a base's with another default)."""
    declared = field_notes(cls)  # the fields cls's own body sets, new or with another default
    notes = {}
    for klass in reversed(cls.__mro__):  # a subclass's comment wins over its base's
        if dataclasses.is_dataclass(klass):
            notes.update({name: note for name, note in field_notes(klass).items() if note})
    out = []
    for f in dataclasses.fields(cls):
        if own_only and f.name not in declared:
            continue
        value = _default(f)
        if dataclasses.is_dataclass(value):
            continue  # its own table
        out.append((prefix + f.name, f"`{json.dumps(value)}`", notes.get(f.name, "")))
    return out


def table(entries: list[tuple[str, str, str]]) -> str:
    lines = ["| key | default | what it does |", "|---|---|---|"]
    lines += [f"| `{key}` | {default} | {note.replace('``', '`').replace('|', '/')} |" for key, default, note in entries]
    return "\n".join(lines)


def tables() -> dict[str, str]:
    from vidgen.training.config import (DataConfig, GeneratorDataConfig, GeneratorModelConfig, GeneratorTrainConfig,
                                        LossConfig, ModelConfig, OptimConfig, RunConfig, SampleConfig, TrainConfig)
    from vidgen.distillation.task import DistillConfig, DistillTrainConfig
    from vidgen.training.finetune import FineTuneConfig, FineTuneDataConfig, LoraSettings
    from vidgen.training.repa import RepaConfig
    from vidgen.training.routing import RoutingConfig
    return {
        "run": table(rows(RunConfig) + rows(OptimConfig, "optim.")),
        "tokenizer": table(rows(TrainConfig, own_only=True) + rows(ModelConfig, "model.") + rows(DataConfig, "data.")
                           + rows(LossConfig, "loss.")),
        "generator": table(rows(GeneratorTrainConfig, own_only=True) + rows(GeneratorModelConfig, "model.")
                           + rows(GeneratorDataConfig, "data.") + rows(SampleConfig, "sample.")
                           + rows(RoutingConfig, "routing.") + rows(RepaConfig, "repa.")),
        "distill": table(rows(DistillTrainConfig, own_only=True) + rows(DistillConfig, "distill.")),
        "finetune": table(rows(FineTuneConfig, own_only=True) + rows(LoraSettings, "lora.")
                          + rows(FineTuneDataConfig, "data.", own_only=True)),
    }


def render(text: str) -> str:
    for name, body in tables().items():
        pattern = re.compile(rf"(<!-- config:{name} -->\n).*?(\n<!-- /config:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{PAGE}: no <!-- config:{name} --> markers")
        text = pattern.sub(lambda m: m.group(1) + body + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    current = PAGE.read_text()
    wanted = render(current)
    if wanted == current:
        return 0
    if args.check:
        print(f"{PAGE.relative_to(ROOT)} differs from vidgen.training's configs: run python eval/config_reference.py",
              file=sys.stderr)
        return 1
    PAGE.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
