"""The block-causal pipeline's targets, each met or missed by how much and why, from the results files that measured
them: speed (``bench_streaming.json``), adherence and FVD (``demo_full.json``, the 128-prompt evaluation) and memory
over length (``causal_memory.json``: live tensor bytes held, ``eval/causal_memory.py``). Nothing is measured here; the reasons are the same files' numbers put side by
side (where a frame's time goes, which attribute the misses fall on).

    python eval/causal_targets.py            # -> docs/results/causal_targets.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402

RESULTS = ROOT / "docs" / "results"
MEMORY_TARGET = 1.05  # peak memory from 100 to 1,025 frames, at most this ratio


def _target(name: str, measured: float, target: float, at_least: bool, unit: str, why=lambda: "") -> dict:
    """One target's row; ``why()`` (the reason, from the same results) is asked for only when it is missed."""
    met = measured >= target if at_least else measured <= target
    row = {"target": name, "measured": round(measured, 4), "goal": f"{'>=' if at_least else '<='} {target}{unit}",
           "goal_value": target, "met": met}
    if not met:
        row["missed_by"] = round(abs(measured - target) / target, 4)  # as a fraction of the target
        if unit == " %":
            row["missed_by_points"] = round(abs(measured - target), 2)
        row["why"] = why()
    return row


def speed_targets(bench: dict) -> list[dict]:
    """First frame, real time and the ratios to the other pipelines, with where the causal pipeline's frame time goes
    against the budget a target leaves it."""
    rows, causal = bench["pipelines"], bench["pipelines"]["causal"]
    sampling = causal["sampling"]
    per_frame = 1e3 / causal["steady_fps"]
    calls = causal.get("backbone_calls")
    spent = (f"a frame costs {per_frame:.1f} ms: {causal['generate_ms_per_frame']:.1f} ms making its latents "
             f"({calls} backbone calls of {causal['tokens_per_call']:.0f} tokens for {bench['frames']} frames: "
             f"{sampling['num_inference_steps']} denoising steps a chunk, the first also caching the chunk before "
             f"it) and "
             f"{causal['decode_ms_per_frame']:.1f} ms decoding" if calls else f"a frame costs {per_frame:.1f} ms")

    def budget(fps: float) -> str:
        return f"the target leaves {1e3 / fps:.1f} ms a frame; {spent}"

    out = [_target("first frame (s)", causal["first_frame_s"], bench["targets"]["first_frame_s"], False, " s",
                   lambda: spent),
           _target("steady frames/s (real time)", causal["steady_fps"], bench["targets"]["steady_fps"], True, "",
                   lambda: budget(bench["targets"]["steady_fps"]))]
    for other, key in (("autoregressive", "vs_autoregressive"), ("flow", "vs_flow")):
        if other not in rows:
            continue
        goal = bench["targets"][key]
        theirs = rows[other]
        why = (budget(goal * theirs["steady_fps"]) + f"; the {other} pipeline's frame costs "
               f"{1e3 / theirs['steady_fps']:.1f} ms ({theirs.get('generate_ms_per_frame', float('nan')):.1f} ms "
               f"making latents)")
        paired = bench.get("causal", {}).get("ratio_rounds", {}).get(key)  # the ratio within each round, judged on
        measured = paired["median"] if paired else causal["steady_fps"] / theirs["steady_fps"]  # their median
        row = _target(f"steady frames/s against {other}", measured, goal, True, "x", lambda why=why: why)
        if paired:
            row.update(judged_on="median of the per-round ratios", minimum=round(paired["min"], 4),
                       per_round=[round(x, 3) for x in paired["rounds"]])
        elif "rounds" in causal and "rounds" in theirs:  # files before the median rule: the ratio of the medians
            row["per_round"] = [round(a["steady_fps"] / b["steady_fps"], 3)
                                for a, b in zip(causal["rounds"], theirs["rounds"])]
        out.append(row)
    return out


def motion_misses(videos: list[dict], name: str) -> Counter:
    return Counter((v["motion"], v["detected"][name]["motion"]) for v in videos
                   if v["detected"][name]["motion"] != v["motion"])


def adherence_targets(demo: dict) -> list[dict]:
    """Colour+motion at least the flow pipeline's, on seen and held-out pairs; why (per split): colour against
    motion, and the motions the misses fall on."""
    causal, flow = demo["pipelines"]["causal"]["adherence"], demo["pipelines"]["flow"]["adherence"]

    def why(split: str) -> str:
        videos = [v for v in demo["videos"] if v.get("held_out", False) == (split == "held_out")]
        mine, theirs = motion_misses(videos, "causal"), motion_misses(videos, "flow")
        asked = Counter(v["motion"] for v in videos)
        said = (f"colour {100 * causal[split]['color']:.1f} % against flow's {100 * flow[split]['color']:.1f} %, "
                f"motion {100 * causal[split]['motion']:.1f} % against {100 * flow[split]['motion']:.1f} %")
        if not mine:
            return said + "; no motion missed"
        worst = sorted({m for m, _ in mine}, key=lambda m: (-sum(n for (a, _), n in mine.items() if a == m), m))[:2]

        def lost(m: str, misses: Counter) -> str:
            return f"{sum(n for (a, _), n in misses.items() if a == m)} of {asked[m]}"

        read_as = Counter(g for (a, g) in mine.elements() if a in worst).most_common(1)[0][0]
        return (said + ": " + "; ".join(f"'{m}' missed {lost(m, mine)} times (flow: {lost(m, theirs)})"
                                        for m in worst) + f"; most read as {read_as!r}")

    return [_target(f"colour+motion, {split.replace('_', '-')} pairs, at least flow's (%)",
                    100 * causal[split]["color_motion"], round(100 * flow[split]["color_motion"], 2), True, " %",
                    lambda split=split: why(split))
            for split in ("seen", "held_out")]


def memory_target(memory: dict) -> dict:
    """Live tensor bytes held after any chunk, longest length against shortest (``causal_memory.json``); a file of
    the older kind (``long_video_causal.json``: peak RSS) is read as it says."""
    if "live_tensor_bytes_ratio" in memory["summary"]:
        s = memory["summary"]
        row = _target(f"live tensor bytes held {s['lengths'][0]} -> {s['lengths'][-1]} frames (ratio)",
                      s["live_tensor_bytes_ratio"], MEMORY_TARGET, False, "x",
                      lambda: f"frames held {s['frames_held_ratio']:.2f}x, KV cache {s['cache_bytes_ratio']:.3f}x")
        row["kept_its_object"] = s["kept_its_object"]
        return row
    s = memory["summary"]["causal"]
    return _target(f"peak memory {s['lengths'][0]} -> {s['lengths'][-1]} frames (ratio)",
                   s["rss_ratio_largest_to_smallest"], MEMORY_TARGET, False, "x")


def readme_table(results: dict) -> str:
    """``docs/streaming.md``'s table (``eval/readme_tables.py``, marker ``causal_targets``)."""
    lines = ["| target | goal | measured | result |", "|---|---|---|---|"]
    for row in results["targets"]:
        if row["met"]:
            result = "met"
        else:
            gap = (f"{row['missed_by_points']:.1f} points" if "missed_by_points" in row
                   else f"{100 * row['missed_by']:.0f} %")
            result = f"missed by {gap}: {row['why']}"
        rounds = row.get("per_round")
        spread = (f" (median of {len(rounds)} rounds' ratios, minimum {row['minimum']:.2f}; "
                  f"{sum(r >= row['goal_value'] for r in rounds)} of {len(rounds)} at the goal)"
                  if rounds and "minimum" in row else
                  f" (per round {min(rounds):.2f}-{max(rounds):.2f}, median {statistics.median(rounds):.2f}, "
                  f"{sum(r >= row['goal_value'] for r in rounds)} of {len(rounds)} at the goal)" if rounds else "")
        if "kept_its_object" in row and not all(row["kept_its_object"]):
            spread += " (on a stream that lost its object at some length)"
        lines.append(f"| {row['target']} | {row['goal']} | {row['measured']:.3g}{spread} | {result} |")
    lines += ["", f"From {', '.join(results['sources'])} (`python eval/causal_targets.py`); speed on "
              f"{results['speed_cpu']}, {results['speed_date'][:10]}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/results/causal_targets.json")
    args = parser.parse_args(argv)
    files = {"speed": "bench_streaming.json", "adherence": "demo_full.json", "memory": "causal_memory.json"}
    loaded = {}
    for key, name in files.items():
        path = RESULTS / name
        if not path.is_file():
            raise SystemExit(f"causal_targets: {path} is missing; run the script that writes it first")
        loaded[key] = json.loads(path.read_text())
    targets = (speed_targets(loaded["speed"]) + adherence_targets(loaded["adherence"])
               + [memory_target(loaded["memory"])])
    result = {"sources": [f"docs/results/{n}" for n in files.values()], "speed_cpu": loaded["speed"]["cpu"],
              "speed_date": loaded["speed"]["date"], "targets": targets,
              "fvd": {"causal": loaded["adherence"]["pipelines"]["causal"]["fvd"]["value"],
                      "flow": loaded["adherence"]["pipelines"]["flow"]["fvd"]["value"]}}
    # a summary of other files: the weights its sources measured (a source written before weights were recorded is
    # named), and the speed figures' precision
    result["weights_sha256"] = {k: v for d in loaded.values() for k, v in (d.get("weights_sha256") or {}).items()}
    result["sources_without_weights"] = [f"docs/results/{files[k]}" for k, d in loaded.items()
                                         if not d.get("weights_sha256")]
    path = write_result(args.out, result, threads=loaded["speed"]["threads"], precision=loaded["speed"].get("precision"))
    for row in targets:
        print(f"{row['target']}: {row['measured']:.3g} ({row['goal']}): "
              + ("met" if row["met"] else f"missed by {row.get('missed_by_points', 100 * row['missed_by']):.1f}"
                 + (" points" if "missed_by_points" in row else " %")))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
