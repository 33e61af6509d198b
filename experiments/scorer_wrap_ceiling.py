"""What the rules read off real clips of each wrap mode: the ceilings a model that drew its data perfectly would meet.

* Colour+motion: for the 192 tuning prompts (``tuning_prompts(192, seed=1)``, the prompts a wrap-trained teacher's rule
  was read on), one rendered 17-frame, 64-px clip of each prompt's attributes (``render_shape_video``, seeded by the
  prompt's seed) with ``wrap`` off, on (shapes leave and re-enter), ``"torus"`` (shapes cross the edge drawn on both
  sides) and ``"torus-late"`` (they start as with wrap off, then cross the edge so), scored as generated videos are
  (``vidgen.demo.run.score``): colour+motion and shape, overall and for the translating prompts.
* The causal stream rule (``experiments/causal_ship_rule.py``: every 17-frame window of a 257-frame stream holds an
  object in >= 13 frames): one 257-frame stream at the pace of a 17-frame clip (``motion_frames=17``) per prompt the
  rule reads (the first tuning prompt of each motion) x seeds 0-3, for each wrap mode.

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
from experiments.causal_ship_rule import STREAM_FRAMES, prompts_by_motion, window_rule  # noqa: E402
from experiments.flow_exit_look import TRANSLATIONS  # noqa: E402


def stream_ceilings() -> dict:
    """Per wrap mode: streams passing the stream rule, of 28 (7 motions x seeds 0-3), and those failing."""
    from vidgen.data.shapes import render_shape_video
    from vidgen.demo.prompts import tuning_prompts
    out = {}
    for wrap in (False, True, "torus", "torus-late"):
        failing = []
        for motion, p in prompts_by_motion(tuning_prompts(192)).items():
            for seed in range(4):
                video = render_shape_video(p.attributes, STREAM_FRAMES, (64, 64), torch.Generator().manual_seed(seed),
                                           wrap=wrap, motion_frames=17).clamp(-1, 1)
                rule = window_rule(((video.permute(1, 2, 3, 0).numpy() + 1) / 2))
                if not rule["passes"]:
                    failing.append(f"{motion} seed {seed}: {rule['min_frames_held_in_a_window']}/17")
        out[f"wrap_{str(wrap).lower()}"] = {"streams_passing": 28 - len(failing), "streams": 28, "failing": failing}
        print(f"streams, wrap={wrap}: {28 - len(failing)} of 28 pass", flush=True)
    return out


def main() -> int:
    from vidgen.data.shapes import render_shape_video
    from vidgen.demo.prompts import tuning_prompts
    from vidgen.demo.run import NUM_FRAMES, SIZE, score
    from vidgen.metrics.adherence import AttributeScorer
    prompts, scorer, result = tuning_prompts(192, seed=1), AttributeScorer(), {}
    moving = [p for p in prompts if p.attributes.motion in TRANSLATIONS]
    for wrap in (False, True, "torus", "torus-late"):
        videos = torch.stack([render_shape_video(p.attributes, NUM_FRAMES, (SIZE, SIZE),
                                                 torch.Generator().manual_seed(p.seed), wrap=wrap).clamp(-1, 1)
                              for p in prompts])
        _, everything = score(scorer, videos, prompts)
        _, translating = score(scorer, videos[[i for i, p in enumerate(prompts) if p in moving]], moving)
        result[f"wrap_{str(wrap).lower()}"] = {
            "all": {k: everything["all"][k] for k in ("color_motion", "shape")},
            "translations": {k: translating["all"][k] for k in ("color_motion", "shape")}}
        print(f"wrap={wrap}: {result[f'wrap_{str(wrap).lower()}']}", flush=True)
    result["streams"] = stream_ceilings()
    write_result(ROOT / "experiments" / "results" / "scorer_wrap_ceiling.json",
                 {"prompts": len(prompts), "translating_prompts": len(moving), "frames": NUM_FRAMES, "size": SIZE,
                  "stream_frames": STREAM_FRAMES, **result}, command="python experiments/scorer_wrap_ceiling.py", weights=(), precision="fp32",
                 threads=torch.get_num_threads())
    return 0


if __name__ == "__main__":
    sys.exit(main())
