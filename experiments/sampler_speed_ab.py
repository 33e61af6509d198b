"""Did the one flow sampler and the call object cost speed? The same calls of the shipped folders timed on two
checkouts side by side (the code before the change and after), in alternating rounds, each call in a fresh child
process of its checkout, so both run on the same machine under the same load: a 100-frame causal stream and a
17-frame flow call, fp32, 2 threads. Writes experiments/results/sampler_speed_ab.json (the per-round seconds, the
median after/before ratio and its worst round).

    git worktree add /tmp/before 6211cfc
    python experiments/sampler_speed_ab.py --before /tmp/before --after . --rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
from results import write_result  # noqa: E402

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(2)
from vidgen.pipelines import load_pipeline
kind = sys.argv[1]
pipe = load_pipeline("pretrained/shapes-" + kind, dtype="fp32")
pipe.set_progress_bar_config(disable=True)
def once():
    g = torch.Generator().manual_seed(0)
    if kind == "causal":
        for _ in pipe.stream("a red square rotating on a black background", num_frames=100, generator=g):
            pass
    else:
        pipe("a red square rotating on a black background", num_frames=17, generator=g)
once()  # warm-up (first-call costs)
start = time.perf_counter()
once()
print(json.dumps({"seconds": time.perf_counter() - start, "vidgen": __import__("vidgen").__file__}))
"""


def time_once(checkout: Path, kind: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, kind], cwd=checkout, capture_output=True, text=True,
                         check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    record = json.loads(out.stdout.strip().splitlines()[-1])
    if not record["vidgen"].startswith(str(checkout.resolve())):
        raise RuntimeError(f"{checkout}: the child imported vidgen from {record['vidgen']}")
    return record["seconds"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=ROOT)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "sampler_speed_ab.json"))
    args = parser.parse_args(argv)
    rows = {}
    for kind in ("causal", "flow"):
        rounds = []
        for r in range(args.rounds):
            order = ("before", "after") if r % 2 == 0 else ("after", "before")  # odd rounds in reverse
            got = {side: time_once(getattr(args, side), kind) for side in order}
            rounds.append(got)
            print(kind, r, got, flush=True)
        ratios = [x["after"] / x["before"] for x in rounds]
        rows[kind] = {"rounds": rounds, "ratio_after_over_before_median": statistics.median(ratios),
                      "ratio_worst_round": max(ratios)}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=args.before, capture_output=True, text=True).stdout
    write_result(args.out, {"before_commit": commit.strip(), "calls": {
        "causal": "pipe.stream('a red square rotating on a black background', num_frames=100), seed 0",
        "flow": "pipe('a red square rotating on a black background', num_frames=17), seed 0"}, "rows": rows},
                 threads=2, weights=[ROOT / "pretrained" / "shapes-causal", ROOT / "pretrained" / "shapes-flow"],
                 precision="fp32")
    print(json.dumps({k: (v["ratio_after_over_before_median"], v["ratio_worst_round"]) for k, v in rows.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
