"""docs/scale.md's data-memory numbers equal docs/results/bench_data_memory.json, at the precision the page quotes them
(the rule of tests/docs/test_quoted_numbers.py: each quoted number is the file's value rounded half-up to the decimals
given), and its claims about them hold in the file: the sampler's growth is linear, nothing grows faster than
linearly, the training run read more than 10,000 clips."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from test_quoted_numbers import _text, _wrong, check_quotes

ROOT = Path(__file__).resolve().parents[2]
DOC = "docs/scale.md"
RESULTS = "docs/results/bench_data_memory.json"
PERM = "bucket sampler: its permutation (int64 tensor) and Python heap"
INDEX = "shard index in memory (Python heap: the open dataset, LitData's index, after the reads)"
CAPTIONS = "caption table on disk, memory-mapped (`text_keys.npy`, `text_rows.npy`)"
STATE = "bucket sampler `state_dict()` (`torch.save` bytes)"
EPOCH = "epoch sampler (in-memory datasets): Python heap peak while drawing one batch"
MB = 2 ** 20


def _expected(r: dict) -> list:
    """(pattern, what, values) for every sentence of the data-memory section, values read from the results file."""
    c0, c1, c2 = r["counts"]
    at = {n: r["per_count"][str(n)] for n in r["counts"]}
    slope = lambda row, a, b: r["per_clip"][row]["slope_bytes_a_clip"][f"{a}-{b}"]  # noqa: E731
    t, s = r["training"], r["training_summary"]
    return [
        (r"one permutation of each bucket's clip indices \((\d+) bytes a clip", "the sampler, a clip",
         [slope(PERM, c1, c2)]),
        (r"measured at ([\d,]+), ([\d,]+) and ([\d,]+) clips, each in a fresh process", "the counts", [c0, c1, c2]),
        (r"reading (\d+) random batches of (\d+) clips with their captions, the bucket sampler drawing ([\d,]+) batches",
         "the phases' sizes", [at[c2]["index_reads"]["clips_read"] / r["batch"], r["batch"],
                               at[c2]["sampler_draws"]["batches"]]),
        (r"\*\*(\d+\.\d+) bytes a clip\*\* from ([\d,]+) to ([\d,]+) clips and (\d+\.\d+) from ([\d,]+) to ([\d,]+), "
         r"(\d+\.\d+) MB at ([\d,]+) clips", "the permutation",
         [slope(PERM, c0, c1), c0, c1, slope(PERM, c1, c2), c1, c2, r["per_clip"][PERM]["bytes"][str(c2)] / MB, c2]),
        (r"the RSS rose (\d+\.\d+) MB above the phase's start at ([\d,]+) clips", "the epoch boundary",
         [at[c2]["sampler_epoch_boundary"]["rss_peak_delta"] / MB, c2]),
        (r"is ([\d,]+) bytes through `torch.save` at every count", "the state_dict",
         [at[c2]["sampler_state_dict"]["torch_save"]]),
        (r"The shard index in memory grows by (\d+\.\d+) bytes a clip from ([\d,]+) to ([\d,]+) clips \(LitData keeps "
         r"an entry a shard, ([\d,]+) shards at ([\d,]+) clips\)", "the index",
         [slope(INDEX, c1, c2), c1, c2, at[c2]["disk"]["shards"], c2]),
        (r"its rise from ([\d,]+) to ([\d,]+) is the shard LitData reads \(the ([\d,]+)-clip dataset's only shard holds "
         r"([\d,]+) clips, the others ([\d,]+)\)", "the shard sizes",
         [c0, c1, c0, c0 if at[c0]["disk"]["shards"] == 1 else -1, r["clips_a_shard"]]),
        (r"The caption table, (\d+\.\d+) bytes a caption on disk", "the caption table", [slope(CAPTIONS, c1, c2)]),
        (r"Random reads slow with the shard count, from (\d+) clips/s within one shard to (\d+) clips/s across ([\d,]+)",
         "the read rates", [at[c0]["index_reads"]["clips_per_s"], at[c2]["index_reads"]["clips_per_s"],
                            at[c2]["disk"]["shards"]]),
        (r"The training run read ([\d,]+) clips \((\d+) steps of (\d+), from a ([\d,]+)-clip dataset", "the run",
         [t["clips_read"], t["steps"], t["batch"], r["training_clips"]]),
        (r"From (\d+) % of its steps to the end its RSS stayed between (\d+\.\d+) and (\d+\.\d+) MB, rising and falling "
         r"without a trend \((\d+\.\d+) MB after the last step\), and its Python heap grew by (\d+\.\d+) MB, (\d+) "
         r"bytes a clip read", "the run's memory",
         [10, s["rss_min_max_after_10"][0] / MB, s["rss_min_max_after_10"][1] / MB, s["at"]["100%"]["rss"] / MB,
          s["python_heap_growth_10_to_100"] / MB, s["python_heap_growth_a_clip_read"]]),
        (r"(\d+\.\d+) bytes a clip of Python heap for the moment of each draw \((\d+\.\d+) MB at ([\d,]+) clips\) and "
         r"(\d+\.\d+) ms a batch there, against (\d+\.\d+) ms at ([\d,]+)", "the epoch sampler",
         [slope(EPOCH, c1, c2), at[c2]["epoch_sampler"]["python_peak"] / MB, c2,
          at[c2]["epoch_sampler"]["seconds_a_batch"] * 1e3, at[c1]["epoch_sampler"]["seconds_a_batch"] * 1e3, c1]),
    ]


def check(text: str | None = None) -> int:
    """Assert every quoted number of the section equals the results file; returns how many were checked."""
    text = _text(DOC) if text is None else text
    return check_quotes(DOC, RESULTS, text, _expected(json.loads((ROOT / RESULTS).read_text())))


def test_quoted_numbers_equal_the_results_file():
    assert check() > 40


def test_a_wrong_number_fails():
    text = _text(DOC)
    for pattern, _, _ in _expected(json.loads((ROOT / RESULTS).read_text())):
        match = re.search(pattern, text)
        for group in range(1, len(match.groups()) + 1):
            start, end = match.span(group)
            with pytest.raises(AssertionError, match="quotes"):
                check(text[:start] + _wrong(match.group(group)) + text[end:])


def test_the_claims_hold_in_the_results_file():
    r = json.loads((ROOT / RESULTS).read_text())
    text = _text(DOC)
    c0, c1, c2 = r["counts"]
    for name, row in r["per_clip"].items():  # "Nothing grows faster than linearly"
        first, second = row["slope_bytes_a_clip"][f"{c0}-{c1}"], row["slope_bytes_a_clip"][f"{c1}-{c2}"]
        assert second <= 1.02 * max(first, 0) + 0.02, f"{name}: {first} then {second} bytes a clip"
    assert "Nothing grows faster than linearly" in text
    assert len(set(r["per_clip"][STATE]["bytes"].values())) == 1  # "at every count"
    # "three epoch boundaries"
    assert r["training"]["clips_read"] // r["training_clips"] == 3 and "three epoch boundaries" in text
    assert r["training"]["clips_read"] >= 10_000
    # the old claim is gone from the page and from the plan's table
    assert "1.000x" not in text and "| ratio |" not in text
