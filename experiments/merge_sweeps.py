#!/usr/bin/env python
"""Merge reads of ``sweep_sampling.py`` that ran on the same model and prompts into one results file, rows unchanged.

A sampling decision often compares the shipped setting's read with a later read of the candidates. The merged file
(what a model card cites) names its sources, their commands and dates, the setting chosen and the rule that chose it.

    python experiments/merge_sweeps.py experiments/results/ship_masked_shipped_192.json \\
        experiments/results/ship_masked_sampling_192.json \\
        --chosen '{"num_inference_steps": 12, "guidance_scale": 1.5, "top_k": null}' \\
        --rule "experiments/log.md, 2026-11-26 third session: ..." --note "..." \\
        --out docs/results/sampling_sweep_masked.json

Refuses sources that differ in pipeline, prompt count, prompt seed, motions, tokenizer, precision or library
versions, and a ``--chosen`` setting that no row holds.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

SAME = ("host_cpus", "versions", "pipeline", "prompts", "prompt_seed", "motions", "tokenizer", "precision")


def merge(sources: list[Path], chosen: dict, rule: str, note: str) -> dict:
    reads = [json.loads(p.read_text()) for p in sources]
    for key in SAME:
        values = {json.dumps(r.get(key), sort_keys=True) for r in reads}
        if len(values) > 1:
            raise SystemExit(f"merge_sweeps: the sources differ in {key!r}: {sorted(values)}")
    rows = [row for r in reads for row in r["rows"]]
    if not any(row["sampling"] == chosen for row in rows):
        raise SystemExit(f"merge_sweeps: no row has the chosen setting {chosen}")
    return {**{k: reads[0][k] for k in SAME if k in reads[0]}, "note": note,
            "runs": [{"file": str(p), **{k: r.get(k) for k in ("command", "date", "threads")}}
                     for p, r in zip(sources, reads)],
            "rows": rows, "chosen": chosen, "rule": rule}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", type=Path)
    parser.add_argument("--chosen", required=True, help="JSON: the sampling setting chosen (one row's 'sampling')")
    parser.add_argument("--rule", required=True, help="the decision rule, or where it is written down")
    parser.add_argument("--note", default="", help="what a reader must know to compare the rows")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    merged = merge(args.sources, json.loads(args.chosen), args.rule, args.note)
    args.out.write_text(json.dumps(merged, indent=1) + "\n")
    print(f"wrote {args.out}: {len(merged['rows'])} rows from {len(args.sources)} reads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
