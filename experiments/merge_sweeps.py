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

``--check READ``: a read of the chosen setting alone on the weights that ship (``sweep_sampling.py --pretrained
pretrained``, which records their ``weights_digest``). Sampling is seeded, so the read must repeat the chosen row's
scores exactly; then the file records the check and its digest, which model cards and tests compare with the shipped
folder ("sweep the model you ship", issue #34). With ``--check`` and no sources it checks an existing ``--out``:

    python experiments/merge_sweeps.py --check experiments/results/check_flow_shipped_192.json \
        --out docs/results/sampling_sweep_flow.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

SAME = ("host_cpus", "versions", "pipeline", "prompts", "prompt_seed", "motions", "tokenizer", "precision")
SCORES = ("seen", "all", "held_out", "silhouette_only", "motion_right")  # what a repeated read must repeat exactly


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


def attach_check(merged: dict, read: dict, source: Path) -> dict:
    """``merged`` with ``check``: ``read`` (one row, the chosen setting) repeats the chosen row's scores exactly."""
    for key in SAME:
        if json.dumps(read.get(key), sort_keys=True) != json.dumps(merged.get(key), sort_keys=True):
            raise SystemExit(f"merge_sweeps: the check {source} differs from the sweep in {key!r}")
    digest = read.get("weights_digest", read.get("weights_sha256"))  # older reads kept the short digest there
    if not isinstance(digest, str):
        raise SystemExit(f"merge_sweeps: the check {source} names no weights_digest; rerun it with sweep_sampling.py")
    sampling = lambda row: json.dumps(row["sampling"], sort_keys=True)  # noqa: E731
    chosen = [row for row in merged["rows"] if sampling(row) == json.dumps(merged["chosen"], sort_keys=True)]
    checked = [row for row in read["rows"] if sampling(row) == sampling(chosen[0])] if chosen else []
    if not checked:
        raise SystemExit(f"merge_sweeps: the check {source} has no row of the chosen setting {merged['chosen']}")
    differ = [k for k in SCORES if checked[0].get(k) != chosen[0].get(k)]
    if differ:
        raise SystemExit(f"merge_sweeps: the check {source} does not repeat the chosen row ({', '.join(differ)} "
                         "differ): the sweep ran on other weights or settings; sweep the model you ship")
    return {**merged, "check": {"file": str(source), "weights_sha256": digest,
                                **{k: read.get(k) for k in ("command", "date", "threads")}}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="*", type=Path)
    parser.add_argument("--chosen", help="JSON: the sampling setting chosen (one row's 'sampling')")
    parser.add_argument("--rule", help="the decision rule, or where it is written down")
    parser.add_argument("--note", default="", help="what a reader must know to compare the rows")
    parser.add_argument("--check", type=Path, default=None, help="a read of the chosen setting on the shipped weights")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.sources:
        if args.chosen is None or args.rule is None:
            parser.error("merging sources needs --chosen and --rule")
        merged = merge(args.sources, json.loads(args.chosen), args.rule, args.note)
    elif args.check is not None and args.out.exists():
        merged = json.loads(args.out.read_text())
    else:
        parser.error("give the sources to merge, or --check with an existing --out")
    if args.check is not None:
        merged = attach_check(merged, json.loads(args.check.read_text()), args.check)
    args.out.write_text(json.dumps(merged, indent=1) + "\n")
    checked = f"; {args.check} repeats the chosen row (weights {merged['check']['weights_sha256']})" \
        if args.check is not None else ""
    print(f"wrote {args.out}: {len(merged['rows'])} rows from {len(merged['runs'])} reads{checked}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
