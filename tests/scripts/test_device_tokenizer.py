"""experiments/device/tokenizer_gpu.py, the parts that need no GPU and no training: a step is timed from the run's
log past the warm-up, a run folder survives the 15 MiB parts the device returns (and a resume without its final
weights), and the judge refuses a run that stopped before its plan's end. A CPU dry run of the whole call is in the
script's header (tokenizer_gpu.sh)."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture
def driver(load_script):
    return load_script("experiments/device/tokenizer_gpu.py")


def test_a_step_is_timed_past_the_first_logged_steps_of_the_newest_process(driver, tmp_path):
    killed = [{"info": "precision: fp32", "time": 0.0}, {"step": 20, "loss": 1.0, "time": 10.0}]
    entries = killed + [{"info": "precision: fp32", "time": 50.0}] + [
        {"step": s, "loss": 1.0, "time": 100.0 + (0.0 if s == 10 else 5.0 + 0.5 * (s - 20))} for s in (10, 20, 30, 40)]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    assert driver.step_seconds(tmp_path, after=10) == pytest.approx(0.5)  # step 10's compile and render left out
    with pytest.raises(SystemExit, match="too few logged steps"):
        driver.step_seconds(tmp_path, after=30)


def test_a_run_folder_survives_the_returned_parts(driver, tmp_path, monkeypatch):
    run = tmp_path / "runs" / "r"
    (run / "checkpoints" / "step_00000300").mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text("step_00000300")
    (run / "samples").mkdir()
    (run / "samples" / "s.mp4").write_bytes(b"x" * 10)
    payload = torch.randint(0, 256, (10_000_000,), dtype=torch.uint8,
                            generator=torch.Generator().manual_seed(0)).numpy().tobytes()  # gzip cannot shrink it
    (run / "checkpoints" / "step_00000300" / "state.pt").write_bytes(payload)
    (run / "plan.json").write_text('{"total": 600}')
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(driver, "PART_BYTES", 4 * 2 ** 20)
    parts = driver.pack(run, out)
    assert [p.name for p in parts] == ["run.tar.part00", "run.tar.part01", "run.tar.part02"]
    assert all(p.stat().st_size <= 4 * 2 ** 20 for p in parts)
    restored = tmp_path / "elsewhere" / "runs" / "r"
    restored.parent.mkdir(parents=True)
    assert driver.restore(restored, out) == "resumed from the carried parts at step 300"
    assert (restored / "checkpoints" / "step_00000300" / "state.pt").read_bytes() == payload
    assert not (restored / "samples").exists()  # samples stay behind
    assert driver.restore(restored, out).startswith("resumed from this machine's r at step 300")


def test_the_judge_reads_the_returned_run_and_refuses_one_that_stopped_early(driver, tmp_path, monkeypatch):
    returned_run = tmp_path / "device" / "r"
    (returned_run / "checkpoints").mkdir(parents=True)
    (returned_run / "checkpoints" / "latest").write_text("step_00000250")
    (returned_run / "final").mkdir()
    (returned_run / "plan.json").write_text('{"total": 600}')
    (returned_run / "status.json").write_text('{"state": "complete", "step": 250}')
    returned = tmp_path / "files_at"
    returned.mkdir()
    driver.pack(returned_run, returned)
    returned.chmod(0o555)  # the device's files come back read-only
    run = tmp_path / "runs" / "r"
    (run / "checkpoints").mkdir(parents=True)  # an older copy here is replaced, not judged
    (run / "checkpoints" / "latest").write_text("step_00000600")
    monkeypatch.setattr(driver, "run_dir", lambda config, extra=(): run)
    try:
        with pytest.raises(SystemExit, match="stopped at step 250 of its plan's 600"):
            driver.main(["judge", str(returned)])
    finally:
        returned.chmod(0o755)
    assert (run / "plan.json").is_file()
    with pytest.raises(SystemExit, match="no run.tar.partNN"):
        driver.main(["judge", str(tmp_path / "nothing returned")])
