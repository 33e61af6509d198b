"""Every shipped pipeline gives the frames recorded in tests/data/shipped_frames.json (eval/shipped_frames.py): a
change of the generation code cannot change what users see unnoticed. Exact (sha256 of the float32 frames) on the
machine kind the hashes were recorded on; within a thumbnail tolerance on another CPU kind, whose float kernels may
round differently. A re-shipped folder has new weights: its record must be made again from them."""
import pytest


@pytest.fixture(scope="module")
def frames_script(load_script):
    return load_script("eval/shipped_frames.py")


@pytest.fixture(scope="module")
def pipes():
    return {}


def _check(frames_script, pipes, name):
    records, thumbs = frames_script.load()
    assert name in records, f"{name}: no record; run python eval/shipped_frames.py record --only {name}"
    record = records[name]
    folder = frames_script.ROOT / record["folder"]
    assert frames_script.weights_hash(folder) == record["weights_sha256"], (
        f"{record['folder']}: its weights changed since the frames were recorded (a re-shipped folder): record them "
        f"again from the new weights with python eval/shipped_frames.py record --only {name}")
    frames = frames_script.run_case(name, pipes)
    ok, what = frames_script.compare(name, frames, record, thumbs[name])
    assert ok, what


@pytest.mark.parametrize("name", ["masked", "flow-short", "flow-distilled", "causal"])
def test_shipped_frames_unchanged(frames_script, pipes, name):
    assert name in frames_script.FAST
    _check(frames_script, pipes, name)


@pytest.mark.slow  # 20-45 s a case on 2 cores: make test keeps four short cases, flow's at 5 frames
@pytest.mark.parametrize("name", ["autoregressive", "flow", "flow-story", "causal-story", "autoregressive-long", "causal-200"])
def test_shipped_frames_unchanged_long(frames_script, pipes, name):
    _check(frames_script, pipes, name)


def test_comparison_can_fail(frames_script):
    """The check is not vacuous: a one-ulp change of one value changes the hash on the recorded machine, and a change
    of one thumbnail cell beyond the bound fails elsewhere."""
    import numpy as np
    records, thumbs = frames_script.load()
    record = dict(records["flow"])
    frames = np.zeros(tuple(record["shape"]), dtype=np.float32)
    record["frames_sha256"] = frames_script.frames_hash(frames)
    record["machine"] = frames_script.machine()
    assert frames_script.compare("flow", frames, record, thumbs["flow"])[0]
    nudged = frames.copy()
    nudged[3, 10, 10, 1] = np.nextafter(np.float32(0), np.float32(1))
    assert not frames_script.compare("flow", nudged, record, thumbs["flow"])[0]
    record["machine"] = "another CPU kind"
    thumb = frames_script.thumbnail(frames)
    assert frames_script.compare("flow", frames, record, thumb)[0]
    shifted = frames.copy()
    shifted[0, :8, :8, 0] = 1.0  # one thumbnail cell (an 8x8-pixel block) moves by 1
    assert not frames_script.compare("flow", shifted, record, thumb)[0]
