"""What the adherence scorer reads off real clips whose shapes leave the frame: the scorer's ceiling on wrap data.

For the 192 tuning prompts (``tuning_prompts(192, seed=1)``, the prompts a wrap-trained teacher's rule was read on), one
rendered 17-frame, 64-px clip of each prompt's attributes (``render_shape_video``, seeded by the prompt's seed) with
``wrap`` off, on (shapes leave and re-enter) and ``"torus"`` (shapes cross the edge drawn on both sides), scored as generated videos are (``vidgen.demo.run.score``): colour+motion and shape, overall and
for the translating prompts. A model that drew its training clips perfectly would score this.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/scorer_wrap_ceiling.py

Writes ``experiments/results/scorer_wrap_ceiling.json``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.results import write_result  # noqa: E402
from experiments.flow_exit_look import TRANSLATIONS  # noqa: E402


def main() -> int:
    from vidgen.data.shapes import render_shape_video
    from vidgen.demo.prompts import tuning_prompts
    from vidgen.demo.run import NUM_FRAMES, SIZE, score
    from vidgen.metrics.adherence import AttributeScorer
    prompts, scorer, result = tuning_prompts(192, seed=1), AttributeScorer(), {}
    moving = [p for p in prompts if p.attributes.motion in TRANSLATIONS]
    for wrap in (False, True, "torus"):
        videos = torch.stack([render_shape_video(p.attributes, NUM_FRAMES, (SIZE, SIZE),
                                                 torch.Generator().manual_seed(p.seed), wrap=wrap).clamp(-1, 1)
                              for p in prompts])
        _, everything = score(scorer, videos, prompts)
        _, translating = score(scorer, videos[[i for i, p in enumerate(prompts) if p in moving]], moving)
        result[f"wrap_{str(wrap).lower()}"] = {
            "all": {k: everything["all"][k] for k in ("color_motion", "shape")},
            "translations": {k: translating["all"][k] for k in ("color_motion", "shape")}}
        print(f"wrap={wrap}: {result[f'wrap_{str(wrap).lower()}']}", flush=True)
    write_result(ROOT / "experiments" / "results" / "scorer_wrap_ceiling.json",
                 {"prompts": len(prompts), "translating_prompts": len(moving), "frames": NUM_FRAMES, "size": SIZE,
                  **result}, command="python experiments/scorer_wrap_ceiling.py", weights=(), precision="fp32",
                 threads=torch.get_num_threads())
    return 0


if __name__ == "__main__":
    sys.exit(main())
