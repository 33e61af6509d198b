"""Checkpoint files: keep-last-N rotation, and resume never picks up a partially written checkpoint."""
import shutil

import torch

from vidgen.tokenizers import CausalVAE
from vidgen.training.checkpoint import find_checkpoint, load_state, save_checkpoint


def _save(run_dir, steps, keep=2):
    torch.manual_seed(0)
    model = CausalVAE.from_preset("tiny")
    for step in steps:
        save_checkpoint(run_dir, step, model, {"step": step}, keep=keep)


def test_rotation_keeps_the_newest_n(tmp_path):
    _save(tmp_path, [1, 2, 3, 4, 5], keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_00000004", "step_00000005"]
    assert find_checkpoint("auto", tmp_path).name == "step_00000005"
    assert load_state(find_checkpoint("auto", tmp_path))["step"] == 5


def test_interrupted_writes_are_never_resumed_from(tmp_path):
    _save(tmp_path, [1, 2], keep=3)
    root = tmp_path / "checkpoints"
    # a kill during a write leaves a temporary folder (weights but no state) ...
    partial = root / ".tmp_step_00000003_4242"
    shutil.copytree(root / "step_00000002", partial)
    (partial / "state.pt").unlink()
    # ... and, had a step folder lost its state file, it must not be taken either
    shutil.copytree(root / "step_00000002", root / "step_00000004")
    (root / "step_00000004" / "state.pt").unlink()
    assert find_checkpoint("auto", tmp_path).name == "step_00000002"
    (root / "latest").write_text("step_00000009")  # a pointer to a folder that is gone
    assert find_checkpoint("auto", tmp_path).name == "step_00000002"
    (root / "latest").unlink()
    assert find_checkpoint("auto", tmp_path).name == "step_00000002"
    _save(tmp_path, [5], keep=3)  # the next save clears temporary folders left by killed runs
    assert not list(root.glob(".tmp_step_*"))
    assert find_checkpoint("auto", tmp_path).name == "step_00000005"
    assert find_checkpoint("", tmp_path) is None
