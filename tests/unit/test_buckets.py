"""Buckets: the nearest aspect-preserving bucket with the least resize, too-short clips refused with a reason; the
bucket batch sampler draws one shape a step (the same on every process), is deterministic for a seed, resumes
exactly (also with another process count) and N processes together draw what one process draws."""
from __future__ import annotations

import pytest

from vidgen.data.shards import (DEFAULT_BUCKETS, Bucket, BucketBatchSampler, assign_bucket, crop_fraction,
                                 equal_token_batches, parse_buckets)
from vidgen.errors import ConfigError

BUCKETS = parse_buckets(["17x64x64", "9x64x64", "17x64x96", "17x96x64", "33x64x64"])


def test_default_set_includes_the_shipped_shape():
    assert Bucket(17, 64, 64) in parse_buckets(DEFAULT_BUCKETS)


@pytest.mark.parametrize("clip, expected", [
    ((20, 64, 64), "17x64x64"),      # square: most frames that fit
    ((40, 128, 128), "33x64x64"),    # long square clip: the longer bucket
    ((12, 64, 64), "9x64x64"),       # too short for 17: the 9-frame bucket
    ((17, 360, 640), "17x64x96"),    # 16:9 landscape -> 3:2 bucket
    ((17, 640, 360), "17x96x64"),    # portrait
    ((17, 100, 110), "17x64x64"),    # near-square
])
def test_assign_nearest_aspect_then_least_resize_then_most_frames(clip, expected):
    bucket, reason = assign_bucket(*clip, BUCKETS)
    assert bucket.name == expected and reason == ""


def test_too_short_is_refused_with_a_reason_and_crop_is_the_least():
    assert assign_bucket(5, 64, 64, BUCKETS) == (None, "too short: 5 frames, the shortest bucket needs 9")
    assert crop_fraction(64, 64, Bucket(17, 64, 64)) == 0
    assert crop_fraction(360, 640, Bucket(17, 64, 96)) == pytest.approx(1 - (96 / 64) / (640 / 360))


@pytest.mark.parametrize("spec", ["17x64", "0x64x64", "a x b x c", [17, 64], ""])
def test_bad_bucket_specs(spec):
    with pytest.raises(ConfigError, match="FRAMESxHEIGHTxWIDTH|no buckets"):
        parse_buckets(spec if isinstance(spec, str) else [spec])


def test_equal_token_batches():
    assert equal_token_batches({"a": 5 * 8 * 8, "b": 5 * 8 * 12, "c": 9 * 8 * 8}, 8) == {"a": 8, "b": 5, "c": 4}


COUNTS = {"17x64x64": 23, "17x64x96": 11, "9x64x64": 5}
BATCH = {"17x64x64": 4, "17x64x96": 2, "9x64x64": 3}


def _run(sampler, steps):
    return [sampler.take() for _ in range(steps)]


def test_one_shape_a_step_deterministic_and_walks_each_bucket_as_epochs():
    a = _run(BucketBatchSampler(COUNTS, BATCH, seed=3), 60)
    assert a == _run(BucketBatchSampler(COUNTS, BATCH, seed=3), 60)
    assert a != _run(BucketBatchSampler(COUNTS, BATCH, seed=4), 60)
    assert {name for name, _ in a} == set(COUNTS)
    for name, idx in a:
        assert len(idx) == BATCH[name] and all(0 <= i < COUNTS[name] for i in idx)
    first = [i for name, idx in a if name == "17x64x64" for i in idx][:COUNTS["17x64x64"]]
    assert sorted(first) == list(range(COUNTS["17x64x64"]))  # a full permutation before any repeat


def test_weights_pick_the_buckets():
    only = _run(BucketBatchSampler(COUNTS, BATCH, seed=0, weights={"9x64x64": 1.0}), 20)
    assert {name for name, _ in only} == {"9x64x64"}
    with pytest.raises(ConfigError, match=r"bucket weights name bucket\(s\) \['1x2x3'\]"):
        BucketBatchSampler(COUNTS, BATCH, seed=0, weights={"1x2x3": 1.0})


def test_resume_is_exact_and_processes_together_draw_what_one_draws():
    whole = _run(BucketBatchSampler(COUNTS, BATCH, seed=1), 40)
    s = BucketBatchSampler(COUNTS, BATCH, seed=1)
    _run(s, 17)
    state = s.state_dict()
    resumed = BucketBatchSampler(COUNTS, BATCH, seed=1)
    resumed.load_state_dict(state)
    assert _run(resumed, 23) == whole[17:]
    # two processes with half the batch: the same bucket each step, their shares together are one process's batch
    half = {k: v // 2 if v % 2 == 0 else v for k, v in BATCH.items()}
    one = _run(BucketBatchSampler(COUNTS, {k: 2 * v for k, v in half.items()}, seed=1), 30)
    ranks = [_run(BucketBatchSampler(COUNTS, half, seed=1, rank=r, world=2), 30) for r in range(2)]
    for (name, idx), (n0, i0), (n1, i1) in zip(one, *ranks):
        assert name == n0 == n1 and sorted(idx) == sorted(i0 + i1)
    # a run resumed with another process count continues the same walk of each bucket
    two = BucketBatchSampler(COUNTS, half, seed=1, rank=0, world=2)
    two.load_state_dict(BucketBatchSampler(COUNTS, {k: 2 * v for k, v in half.items()}, seed=1).state_dict())
    assert two.take()[0] == one[0][0]
