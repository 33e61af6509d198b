"""Checkpoint files: keep-last-N rotation, resume never picks up a partially written checkpoint, and a checkpoint
loads for evaluation with its EMA weights."""
import shutil

import pytest
import torch

from vidgen.errors import ConfigError
from vidgen.tokenizers import CausalVAE
from vidgen.training.checkpoint import find_checkpoint, load_state, load_trained, save_checkpoint
from vidgen.training.ema import EMA


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


def test_a_checkpoint_loads_for_evaluation_with_its_ema_weights(tmp_path):
    torch.manual_seed(0)
    model = CausalVAE.from_preset("tiny")
    ema = EMA(model, 0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # the live weights move away from the average
    ema.update(model)
    average = {k: v.clone() for k, v in ema.shadow.items()}
    assert any(not torch.equal(average[k], v) for k, v in model.state_dict().items())
    ckpt = save_checkpoint(tmp_path, 7, model, {"step": 7, "ema": ema.state_dict()})
    loaded = load_trained(CausalVAE, ckpt)
    assert not loaded.training
    assert all(torch.equal(v, average[k]) for k, v in loaded.state_dict().items())
    raw = load_trained(CausalVAE, ckpt, ema=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in raw.state_dict().items())
    model.save_pretrained(tmp_path / "final")  # a final folder has no state.pt: its weights as they are
    assert all(torch.equal(v, model.state_dict()[k])
               for k, v in load_trained(CausalVAE, tmp_path / "final").state_dict().items())
    with pytest.raises(ConfigError, match="no config.json"):
        load_trained(CausalVAE, tmp_path / "checkpoints")


def test_resuming_into_another_model_is_refused_with_the_differing_settings(tmp_path):
    """Every trainer resumes through ``restore``: a checkpoint of another model (here another width) gives a
    ConfigError naming the differing settings and weights, not a raw state-dict size mismatch."""
    from vidgen.generators import FlowVideoTransformer
    from vidgen.training.checkpoint import restore
    torch.manual_seed(0)
    small = FlowVideoTransformer.from_preset("tiny")
    ckpt = save_checkpoint(tmp_path, 3, small, {"step": 3, "opt": {}, "sched": {}, "sampler": {}})
    wide = FlowVideoTransformer.from_preset("tiny", architecture={"dim": 2 * small.backbone_config.dim})
    with pytest.raises(ConfigError, match=r"resume: the checkpoint .*step_00000003 was written by a run with another "
                                          r"model; differing settings: architecture .*differing weights: .* in the "
                                          r"checkpoint, .* in this run"):
        restore(ckpt, wide, None, None, None)
    assert restore(ckpt, FlowVideoTransformer.from_preset("tiny"), _Stateless(), _Stateless(), _Stateless()) == 3


class _Stateless:
    def load_state_dict(self, state):
        pass


def test_rotation_spares_the_steps_keep_every_names(tmp_path):
    torch.manual_seed(0)
    model = CausalVAE.from_preset("tiny")
    for step in [2, 4, 6, 8, 10]:
        save_checkpoint(tmp_path, step, model, {"step": step}, keep=2, keep_every=4)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == [
        "step_00000004", "step_00000008", "step_00000010"]
    assert find_checkpoint("auto", tmp_path).name == "step_00000010"
