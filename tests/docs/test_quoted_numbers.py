"""Numbers the docs quote equal the results files they come from, at the precision the docs quote them.

Each check names a doc, a pattern that finds a sentence's numbers in it (whitespace and line breaks collapsed) and a
function that reads the same numbers from a results file. The sentence must be found, and each number in it must equal
the file's value rounded half-up to the decimals the doc gives ("704" for 703.5, "0.58" for 0.576). A doc and a file
that disagree fail, and so does a rewritten sentence, until its check here is rewritten with it.
"""
from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SP_FILE = "docs/results/bench_sequence_parallel.json"
HOST_FILE = "docs/results/bench_attention_host.json"
OLD_KERNEL_FILE = "experiments/results/device_h200_2026-11-27/run1_bench_attention_gpu.json"
CACHES_FILE = "docs/results/bench_caches.json"
#: the methods of the cache table in docs/real-models.md, by the label its rows give them
CACHE_ROWS = {"first_block": r"`FirstBlockCacheConfig\(threshold=0\.05\)`",
              "mag_cache": r"`MagCacheConfig` \(calibrated ratios, defaults\)",
              "taylorseer": r"`TaylorSeerCacheConfig\(\)` \(defaults\)",
              "taylorseer_lite": r"`TaylorSeerCacheConfig\(use_lite_mode=True\)`"}


def _sp(record: dict) -> list:
    ranks = record["per_rank"]
    worst = lambda sp, key: max(r[key] for r in ranks[sp])  # noqa: E731
    extra = [r["allocator_peak_mb"] - r["peak_live_mb"] for sp in ("sp2", "sp4") for r in ranks[sp]]
    activation = [max(r["peak_breakdown_mb"]["Activation"] for r in ranks[sp]) for sp in ("sp1", "sp2", "sp4")]
    return [
        ("the clip's tokens", [record["tokens"], *record["token_grid"]]),
        ("peak live MB and ratios", [worst("sp1", "peak_live_mb"), worst("sp2", "peak_live_mb"),
                                     record["ratio_sp2_to_sp1"], record["target_ratio"],
                                     worst("sp4", "peak_live_mb"), record["ratio_sp4_to_sp1"]]),
        ("weights and optimizer state", [ranks["sp1"][0]["peak_breakdown_mb"]["Parameter"],
                                         ranks["sp1"][0]["peak_breakdown_mb"]["Optstate"]]),
        ("activations at the peak", activation),
        ("the allocator's peak at sp 1", [ranks["sp1"][0]["allocator_peak_mb"]]),
        ("the allocator's excess at sp > 1", [min(extra), max(extra)]),
    ]


#: (doc, results file, [(pattern, description)], reader) ; the reader returns [(description, values)] in pattern order
CHECKS = {
    "sequence-parallel memory": (
        "docs/training.md", SP_FILE,
        [r"a (\d+)-token clip \((\d+)x(\d+)x(\d+) tokens",
         r"it is (\d+) MB at sp 1, (\d+) MB per rank at sp 2 \(\*\*(\d+\.\d+)x\*\*, target (\d+\.\d+)x\) and (\d+) MB "
         r"per rank at sp 4 \(\*\*(\d+\.\d+)x\*\*\)",
         r"the weights \((\d+) MB\) and AdamW's state \((\d+) MB\)",
         r"The activations at the peak are (\d+), (\d+) and (\d+) MB",
         r"gives the same peak at sp 1 \((\d+\.\d+) MB\)",
         r"at sp 2 and 4 it counts (\d+) to (\d+) MB more per rank"],
        _sp),
    "attention3d host time": (
        "docs/attention.md", HOST_FILE,
        [r"`docs/results/bench_attention_host\.json`: an (.+?), 2 cores",
         r"one `attention3d` call with a window costs \*\*(\d+) µs\*\* of host time at a tiny shape \((\d+) tokens, "
         r"`(\w+)` backend\), \*\*(\d+\.\d+)×\*\* a plain SDPA call there \((\d+) µs\); without a window it costs "
         r"(\d+) µs \((\d+\.\d+)×\)"],
        lambda r: [("CPU", [r["cpu"].split(" (")[0]]),
                   ("host time", [r["host_us"], r["shape"]["tokens"], r["auto_backend"]["attention3d_window"],
                                  r["ratio_to_sdpa"], r["sdpa_us"], r["methods"]["attention3d"]["cpu_us"],
                                  r["methods"]["attention3d"]["cpu_ratio_to_sdpa"]])]),
    "the old Triton kernel against flex": (
        "docs/attention.md", OLD_KERNEL_FILE,
        [r"ran \(b\) in (\d+) ms forward \((\d+\.\d+)× flex\) and ([\d,]+) ms forward\+backward \((\d+\.\d+)× flex\)",
         r"it was (\d+\.\d+)–(\d+\.\d+)× flex forward and (\d+\.\d+)–(\d+\.\d+)× forward\+backward"],
        lambda r: _old_kernel(r)),
    "step caches on a random Wan": (
        "docs/real-models.md", CACHES_FILE,
        [r"\| no cache \| (\d+\.\d+) \| 1 \| (\d+) of (\d+) \| 0 \|",
         *[rf"\| {label} \| (\d+\.\d+) \| (\d+\.\d+) \((\d+\.\d+)-(\d+\.\d+)\) \| (\d+) of (\d+) \| "
           rf"(\d+(?:\.\d+)?) / (\d+(?:\.\d+)?) \|" for label in CACHE_ROWS.values()],
         r"the load average was (\d+\.\d+) at the start and (\d+\.\d+) at the end"],
        lambda r: _caches(r)),
    "the student of stage 8 at its last read": (
        "docs/faster-sampling.md", "experiments/results/distill_tuning_dmd2_stage8_step1900_192.json",
        [r"On the shipped stage 8 it ran its full (\d+) steps",
         r"at 4 steps, (\d+\.\d+)x faster, (\d+\.\d+) % colour\+motion against the teacher's (\d+\.\d+) %, but "
         r"(\d+\.\d+) % shape against (\d+\.\d+) %",
         r"(\d+) of (\d+) drawn against the teacher's (\d+), with (\d+) read as hexagons \(the teacher's: (\d+)\)"],
        lambda r: _student(r)),
    "compile alone in fp32 on stage 7": (
        "docs/training.md", "experiments/results/levers_compile_stage7.json",
        [r"On an ([^,]+?) without bf16 units, compiling the backbone",
         r"an fp32 training step \((\d+\.\d+) s against (\d+\.\d+) s\), and its first step took (\d+) s against "
         r"(\d+) s, so the compiled arm made (\d+) steps to the base arm's (\d+) and its held-out loss was "
         r"(\d+\.\d+) % lower"],
        lambda r: _compile_lever(r)),
    "bf16 + compile on stage 7": (
        "docs/training.md", "experiments/results/levers_bf16_stage7.json",
        [r"With AVX512-BF16 on an ([^,]+?), a bf16 \+ compile step took (\d+\.\d) s against fp32's (\d+\.\d) s, and its "
         r"first step \(the\s+compile\) (\d+) s against (\d+) s, so it made (\d+) steps to the base arm's (\d+) and its "
         r"held-out loss was (\d+\.\d) % higher"],
        lambda r: _bf16_lever(r)),
    "the shipped pipelines against the targets": (
        "docs/results.md", "docs/results/demo_full.json",
        [r"\*\*flow meets three\*\* \((\d+\.\d) % seen, (\d+\.\d) % held-out, (\d+) prompts each, one standard error "
         r"is about 3 points; (\d+) of (\d+) turns, (\d+) %\) and misses shape \((\d+\.\d) %\)",
         r"Autoregressive misses seen pairs by one prompt \((\d+\.\d) %\), held-out pairs by three \((\d+\.\d) %\), "
         r"shape \((\d+\.\d) %\) and turns \((\d+) of (\d+)\)",
         r"Masked misses all four: (\d+\.\d) % seen, (\d+\.\d) % held-out, shape (\d+\.\d) %, (\d+) of (\d+) turns"],
        lambda r: _targets(r)),
    "flow's ship read": (
        "docs/results.md", "experiments/results/story_read_flow.json",
        [r"\((\d+\.\d) % of segments follow their prompt at context (\d)\) and the (\d+) tuning prompts \(shape "
         r"(\d+\.\d) %, colour\+motion (\d+\.\d) %, (\d+) of (\d+) turns;"],
        lambda r: _ship_read(r)),
    "the causal stages on the tuning prompts": (
        "docs/streaming.md", "experiments/results/causal_ship_read_192.json",
        [r"stage 1 read (\d+\.\d) % colour\+motion at (\d) Euler steps a chunk and guidance (\d) \(the same at (\d) "
         r"steps; (\d+\.\d) % and (\d+\.\d) % at guidance (\d)\), Self-Forcing \(a checkpoint short of its planned "
         r"steps\) (\d+\.\d) % at (\d) steps and (\d+\.\d) % at (\d), and the bidirectional teacher, `shapes-flow`'s "
         r"stage 6, (\d+\.\d) %"],
        lambda r: _causal_stages(r)),
    "masked training steps by layout and patch": (
        "docs/generators.md", "docs/results/bench_layouts.json",
        [r"A training step of the `mini` masked model over (\d+) tokens \(batch (\d+), (\d+) threads\) takes "
         r"(\d+\.\d+)-(\d+\.\d+) s in fp32 and (\d+\.\d+)-(\d+\.\d+) s in bf16 in every layout \(full, "
         r"spatio-temporal, window: the linear layers dominate at this width\), and (\d+\.\d+) s in fp32 and "
         r"(\d+\.\d+) s in bf16 with 1x2x2 patches"],
        lambda r: _layouts(r)),
    **{f"the causal stories under {switch}": (
        "docs/streaming.md", f"experiments/results/causal_ship_rule_shapes-causal_{switch}_stories.json",
        [rf"colour: (?:reset \d+ of \d+, )?{switch} (\d+) of (\d+)[,;]"],
        lambda r: [("stories", [r["stories_passing"], len(r["stories"])])]) for switch in ("reset", "recache")},
}


def _layouts(record: dict) -> list:
    rows = [row for row in record["rows"]
            if row["kind"] == "masked" and row["preset"] == "mini" and row["grid"] == record["config"]["grid"]]
    fine = lambda p: [row["seconds_per_step"] for row in rows  # noqa: E731
                      if row["patch_size"] == [1, 1, 1] and row["precision"] == p]
    coarse = {row["precision"]: row["seconds_per_step"] for row in rows if row["patch_size"] == [1, 2, 2]}
    tokens = {row["tokens"] for row in rows if row["patch_size"] == [1, 1, 1]}
    assert len(tokens) == 1
    return [("the steps", [tokens.pop(), record["config"]["batch"], record["threads"], min(fine("fp32")),
                           max(fine("fp32")), min(fine("bf16")), max(fine("bf16")), coarse["fp32"], coarse["bf16"]])]


def _causal_stages(record: dict) -> list:
    read = {(row["name"], row["steps"], row["settings"]["guidance_scale"]): 100 * row["color_motion"]
            for row in record["rows"]}
    teacher = next(v for (name, _, _), v in read.items() if name == "teacher")
    assert read[("stage1", 8, 1)] == read[("stage1", 4, 1)]  # "the same at 8 steps"
    return [("the reads", [read[("stage1", 4, 1)], 4, 1, 8, read[("stage1", 4, 3)], read[("stage1", 8, 3)], 3,
                           read[("stage2", 2, 1)], 2, read[("stage2", 4, 1)], 4, teacher])]


def _targets(record: dict) -> list:
    def row(name, turns_percent=False):
        e = record["pipelines"][name]
        a, turning = e["adherence"], e["turning"]
        seen, held = 100 * a["seen"]["color_motion"], 100 * a["held_out"]["color_motion"]
        if turns_percent:
            return [seen, held, a["seen"]["n"], turning["turned"], turning["n"], 100 * turning["fraction"],
                    100 * a["all"]["shape"]]
        return [seen, held, 100 * a["all"]["shape"], turning["turned"], turning["n"]]
    return [("flow", row("flow", True)), ("autoregressive", row("autoregressive")), ("masked", row("masked"))]


def _ship_read(record: dict) -> list:
    ships = next(row for row in record["rows"] if row["verdict"]["ships"])
    best = max(ships["story"], key=lambda s: s["color_motion"])
    return [("the shipped checkpoint", [100 * best["color_motion"], best["context_frames"], record["prompts"],
                                        100 * ships["shape"], 100 * ships["color_motion"], ships["turned"],
                                        ships["rotating"]])]


def _bf16_lever(record: dict) -> list:
    base, arm = (next(row for row in record["rows"] if row["arm"] == name) for name in ("base", "bf16_compile"))
    return [("CPU and steps", [record["cpu"].split(" (")[0], arm["seconds_per_step_after_first"],
                               base["seconds_per_step_after_first"], arm["first_step_s"], base["first_step_s"],
                               arm["steps"], base["steps"],
                               100 * (record["verdicts"]["bf16_compile"]["loss_ratio"] - 1)])]  # the rule's ratio


def _compile_lever(record: dict) -> list:
    base, arm = (next(row for row in record["rows"] if row["arm"] == name) for name in ("base", "compile"))
    return [("CPU", [record["cpu"].split(" (")[0]]),
            ("the steps", [arm["seconds_per_step_after_first"], base["seconds_per_step_after_first"],
                           arm["first_step_s"], base["first_step_s"], arm["steps"], base["steps"],
                           100 * (1 - record["verdicts"]["compile"]["loss_ratio"])])]  # the rule's own ratio


def _student(record: dict) -> list:
    teacher = next(row for row in record["rows"] if row["name"] == "teacher")
    four = next(row for row in record["rows"] if row["name"] != "teacher" and row["steps"] == 4)
    star, teacher_star = four["shapes"]["star"], teacher["shapes"]["star"]
    drawn, asked = map(int, star["right"].split("/"))
    return [("the run's steps", [int(re.search(r"at step (\d+)", record["note"]).group(1))]),
            ("the 4-step read", [four["speedup_batch_1"], 100 * four["color_motion"], 100 * teacher["color_motion"],
                                 100 * four["shape"], 100 * teacher["shape"]]),
            ("the stars", [drawn, asked, int(teacher_star["right"].split("/")[0]), star["read_as"]["hexagon"],
                           teacher_star["read_as"]["hexagon"]])]


def _caches(record: dict) -> list:
    rows, calls = record["methods"], 2 * record["call"]["num_inference_steps"]
    none = rows["none"]
    out = [("no cache", [none["s_per_call"]["median"], none["last_block_self_attention_calls"], calls])]
    for method in CACHE_ROWS:
        row = rows[method]
        out.append((method, [row["s_per_call"]["median"], row["speedup_vs_none"]["median"],
                             row["speedup_vs_none"]["min"], row["speedup_vs_none"]["max"],
                             row["last_block_self_attention_calls"], calls, row["frames_max_abs_diff"],
                             row["frames_mean_abs_diff"]]))
    return out + [("the load", [record["loadavg_start"][0], record["loadavg_end"][0]])]


def _old_kernel(record: dict) -> list:
    rows = {row["key"]: row["passes"] for row in record["rows"]}
    speed = {p: [rows[k][p]["backends"]["flex"]["ms"] / rows[k][p]["backends"]["triton"]["ms"] for k in rows]
             for p in ("forward", "forward_backward")}
    b = rows["b"]
    return [("shape (b)", [b["forward"]["backends"]["triton"]["ms"], b["forward"]["triton_speedup_vs_flex"],
                           b["forward_backward"]["backends"]["triton"]["ms"],
                           b["forward_backward"]["triton_speedup_vs_flex"]]),
            ("ranges over the shapes", [min(speed["forward"]), max(speed["forward"]),
                                        min(speed["forward_backward"]), max(speed["forward_backward"])])]


def _text(path: str) -> str:
    return " ".join((ROOT / path).read_text().split())


def _agrees(quoted: str, value) -> bool:
    if isinstance(value, str):
        return quoted == value
    quoted = quoted.replace(",", "")
    places = len(quoted.split(".")[1]) if "." in quoted else 0
    return str(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)) == quoted


def check(name: str, text: str | None = None) -> int:
    """Assert every number of check ``name`` in its doc (or in ``text``) equals its results file; returns the count."""
    doc, results, patterns, reader = CHECKS[name]
    text = _text(doc) if text is None else text
    expected = reader(json.loads((ROOT / results).read_text()))
    assert len(expected) == len(patterns)
    return check_quotes(doc, results, text, [(p, what, values) for p, (what, values) in zip(patterns, expected)])


def check_quotes(doc, results, text: str, expected) -> int:
    """Assert each ``(pattern, what, values)``: the doc ``text`` quotes ``what`` where ``pattern`` matches, and each
    quoted number equals its value in the results file at the quoted precision; returns how many were checked."""
    checked = 0
    for pattern, what, values in expected:
        found = re.findall(pattern, text)
        assert found, f"{doc}: no sentence quoting {what} ({pattern!r}); update it here if the doc was rewritten"
        for groups in found:
            groups = (groups,) if isinstance(groups, str) else groups
            assert len(groups) == len(values)
            for quoted, value in zip(groups, values):
                assert _agrees(quoted, value), f"{doc} quotes {what} as {quoted}, {results} has {value}"
                checked += 1
    return checked


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_quoted_numbers_equal_the_results_files(name):
    assert check(name) > 0


def test_readme_quotes_no_sequence_parallel_ratio_the_file_lacks():
    """README.md quotes no sequence-parallel memory figure today; one added later must be the file's."""
    record = json.loads((ROOT / SP_FILE).read_text())
    for quoted, sp in re.findall(r"(\d+\.\d+)x[^.]{0,40}? at sp (\d)", _text("README.md")):
        assert _agrees(quoted, record[f"ratio_sp{sp}_to_sp1"]), f"README.md: {quoted}x at sp {sp}"


def _wrong(quoted: str) -> str:
    """``quoted`` with its last digit changed (a name gets a letter appended)."""
    if not quoted[-1].isdigit():
        return quoted + "X"
    return quoted[:-1] + str((int(quoted[-1]) + 1) % 10)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_a_wrong_number_fails(name):
    """The check can fail: the doc with any one quoted number changed does not pass."""
    doc, _, patterns, _ = CHECKS[name]
    text = _text(doc)
    for pattern in patterns:
        match = re.search(pattern, text)
        for group in range(1, len(match.groups()) + 1):
            start, end = match.span(group)
            with pytest.raises(AssertionError, match="quotes"):
                check(name, text[:start] + _wrong(match.group(group)) + text[end:])


def test_the_covering_window_claim_is_what_its_test_asserts():
    """docs/bring-your-own-model.md states the covering-window check as tests/unit/test_diffusers_window.py asserts it:
    the same tolerance, the same backends."""
    doc = _text("docs/bring-your-own-model.md")
    claim = re.search(r"a window that covers the grid equals the dense model within (\S+), on the `(\w+)` and "
                      r"blocked `(\w+)` backends", doc)
    assert claim, "docs/bring-your-own-model.md no longer states the covering-window check"
    source = (ROOT / "tests" / "unit" / "test_diffusers_window.py").read_text()
    test = source[source.index("def test_a_window_covering_the_grid_equals_the_dense_model"):]
    backends = re.findall(r'parametrize\("backend", \[(.*?)\]\)\s*\n(?:@.*\n)*def test_a_window_covering', source)
    assert f"abs().max() <= {claim.group(1)}" in test.split("\ndef ")[0]
    assert backends and [b.strip(' "') for b in backends[0].split(",")] == [claim.group(2), claim.group(3)]
