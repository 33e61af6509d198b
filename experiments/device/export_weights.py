#!/usr/bin/env python
"""Export a run's EMA weights from the lent GPU machine in files the device tool returns (each at most 16 MiB).

    python experiments/device/export_weights.py runs/<run> $OUT/<run> [<folder>]

Reads ``<folder>`` (one of the run's checkpoints or its final/), else the run's ``final`` folder, or its last
checkpoint when a deadline stopped it, and writes config.json plus the
weights in fp32 split into files of at most 15 MiB (``weights_a.safetensors``, ``weights_b`` ...; a 10.5 M parameter
model needs three). ``unpack_weights.py`` joins them on the dev machine.
"""
import json
import sys
from pathlib import Path

import yaml
from safetensors.torch import save_file

from vidgen.generators import GENERATORS, generator_class
from vidgen.training.checkpoint import load_trained

run, out = Path(sys.argv[1]), Path(sys.argv[2])
src = Path(sys.argv[3]) if len(sys.argv) > 3 else run / "final"
if not src.exists():  # stopped early: the last checkpoint, with its EMA weights
    src = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
saved = json.loads((src / "config.json").read_text()).get("_class_name") if (src / "config.json").is_file() else None
kind = {c.__name__: c for c in GENERATORS.values()}.get(saved)  # a distillation's student is the teacher's kind
model = load_trained(kind or generator_class(yaml.safe_load((run / "config.yaml").read_text())["model"]["generator"]),
                     src)
t = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
parts, size = [{}], 0
for k in sorted(t):
    if size and size + t[k].numel() * 4 > 15 * 2 ** 20:
        parts, size = parts + [{}], 0
    parts[-1][k], size = t[k], size + t[k].numel() * 4
if len(parts) > 8:  # never drop a part silently: the device returns at most 8 files in all
    raise SystemExit(f"{run.name}: {len(parts)} weight files of <= 15 MiB; the device returns at most 8")
out.mkdir(parents=True, exist_ok=True)
for name, part in zip("abcdefgh", parts):
    save_file(part, str(out / f"weights_{name}.safetensors"))
model.save_config(str(out))
print(run.name, "weights from", src)
