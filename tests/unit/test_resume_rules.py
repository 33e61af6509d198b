"""vidgen.training.resume on checkpoint folders written by hand (no training): which changes a resume may make."""
from __future__ import annotations

import pytest
import torch

from vidgen.errors import ConfigError, InvalidInputError
from vidgen.training import GeneratorTrainConfig, load_config
from vidgen.training.finetune import FineTuneConfig
from vidgen.training.resume import check_run_dir


def _checkpoint(run_dir, config: dict, step: int = 3):
    """A run_dir whose newest checkpoint was written at ``step`` by a run with ``config``."""
    folder = run_dir / "checkpoints" / f"step_{step:08d}"
    folder.mkdir(parents=True)
    torch.save({"step": step, "config": config}, folder / "state.pt")
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"")  # complete, as find_checkpoint asks
    return folder


def _generator(run_dir, *overrides) -> GeneratorTrainConfig:
    return load_config(None, [f"run_dir={run_dir}", "steps=10", *overrides], schema=GeneratorTrainConfig)


def test_an_option_switched_on_from_its_default_is_a_change(tmp_path):
    """Options left out of the portable hash at their defaults (routing, REPA, Muon, motion_frames) still count."""
    _checkpoint(tmp_path, _generator(tmp_path).to_dict())
    check_run_dir(_generator(tmp_path))
    check_run_dir(_generator(tmp_path, "steps=20", "threads=2", "log_every=5"))  # longer, and how it runs: fine
    for override, key in (("routing.ratio=0.5", "routing.ratio"), ("data.motion_frames=9", "data.motion_frames"),
                          ("optim.muon_lr=0.05", "optim.muon_lr"), ("data.batch=2", "data.batch")):
        with pytest.raises(ConfigError, match=rf"this run changes what it trains: {key} \("):
            check_run_dir(_generator(tmp_path, override))


def test_the_checkpoint_is_read_through_this_versions_schema(tmp_path):
    """A renamed key, a renamed value, and a key the checkpoint's version lacked (at its default) are not changes;
    the refusal names init_from for a new run from the checkpoint's weights."""
    old = _generator(tmp_path, "model.generator=flow", "video_tokenizer=tok").to_dict()
    old["tokenizer"] = old.pop("video_tokenizer")
    old["model"]["generator"] = "diffusion"
    del old["routing"]
    _checkpoint(tmp_path, old)
    with pytest.warns(FutureWarning):
        check_run_dir(_generator(tmp_path, "model.generator=diffusion", "video_tokenizer=tok"))
    check_run_dir(_generator(tmp_path, "model.generator=flow", "video_tokenizer=tok"))
    with pytest.raises(ConfigError, match=r"video_tokenizer \('tok' in the checkpoint, 'other' in this run\).*"
                                          r"init_from=.*step_00000003 starts it from these weights"):
        check_run_dir(_generator(tmp_path, "model.generator=flow", "video_tokenizer=other"))


def test_a_setting_the_task_fills_in_may_be_left_empty(tmp_path):
    """A fine-tune's text encoder left empty is the pipeline folder's, which its checkpoint holds filled in; any
    other value is a change, and an empty value of a key the task does not fill in is one too."""
    cfg = load_config(None, [f"run_dir={tmp_path}", "steps=10", "pipeline=folder"], schema=FineTuneConfig)
    saved = cfg.to_dict()
    saved["data"]["text_encoder"] = "folder"
    _checkpoint(tmp_path, saved)
    check_run_dir(cfg)
    with pytest.raises(ConfigError, match=r"data\.text_encoder \('folder' in the checkpoint, 'elsewhere'"):
        check_run_dir(load_config(None, [f"run_dir={tmp_path}", "steps=10", "pipeline=folder",
                                         "data.text_encoder=elsewhere"], schema=FineTuneConfig))
    other = tmp_path / "generator"
    _checkpoint(other, _generator(other, "data.text_encoder=/models/enc").to_dict())
    with pytest.raises(ConfigError, match=r"data\.text_encoder \('/models/enc' in the checkpoint, '' in this run\)"):
        check_run_dir(_generator(other))


def test_run_dir_on_a_file_is_refused_on_every_process(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match=r"run_dir .*file/run: .*file is a file, not a folder"):
        check_run_dir(_generator(tmp_path / "file" / "run"))
