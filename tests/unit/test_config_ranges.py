"""Every number of every training configuration is range-checked when the configuration is built, so a bad value
is refused before a run writes anything (vidgen.training.config.check_ranges)."""
from __future__ import annotations

import dataclasses
import math

import pytest

from vidgen.errors import ConfigError
from vidgen.training import GeneratorTrainConfig, TrainConfig, load_config, train
from vidgen.distillation.diffusers_task import DiffusersDistillConfig
from vidgen.distillation.task import DistillTrainConfig
from vidgen.training.finetune import FineTuneConfig

SCHEMAS = [TrainConfig, GeneratorTrainConfig, DistillTrainConfig, FineTuneConfig, DiffusersDistillConfig]
UNBOUNDED = {"seed", "sample.seed", "routing.end"}  # any integer seeds a generator; routing.end: negative counts back


def _numbers(cls, prefix: str = ""):
    """(dotted name, kind) of every int / float setting of ``cls`` and its sections."""
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            yield from _numbers(f.default_factory, f"{prefix}{f.name}.")
        elif f.default is not dataclasses.MISSING and type(f.default) in (int, float):
            yield prefix + f.name, type(f.default)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.__name__)
def test_every_numeric_setting_out_of_range_is_refused_by_name(schema):
    names = list(_numbers(schema))
    assert len(names) >= 10
    for name, kind in names:
        if name in UNBOUNDED:
            continue
        for bad in ("-1", ".nan") if kind is float else ("-1", "2.5"):
            with pytest.raises(ConfigError) as info:
                load_config(overrides=[f"{name}={bad}"], schema=schema)
            assert str(info.value).startswith(name), (name, bad, str(info.value))
            assert bad.lstrip(".") in str(info.value).lower() or kind is int, str(info.value)


def test_the_defaults_and_the_range_edges_are_accepted():
    cfg = load_config(overrides=["steps=1", "optim.warmup_steps=0", "ema_decay=0", "optim.min_lr_ratio=1",
                                 "data.image_batch=0", "seed=-3", "optim.betas=[0, 0.999]", "sample_every=0"])
    assert cfg.steps == 1 and cfg.seed == -3 and cfg.optim.betas == (0, 0.999)
    for schema in SCHEMAS:
        load_config(schema=schema)


def test_ranges_that_are_not_just_nonnegative():
    refused = {"steps=0": r"steps must be a whole number >= 1, got 0",
               "optim.lr=0": r"optim\.lr must be a number > 0, got 0",
               "ema_decay=1": r"ema_decay must be a number >= 0 and < 1, got 1",
               "optim.min_lr_ratio=1.5": r"optim\.min_lr_ratio must be a number >= 0 and <= 1, got 1\.5",
               "ckpt_every=0": r"ckpt_every must be a whole number >= 1",
               "optim.betas=[0.9, 1.0]": r"optim\.betas must be two numbers in \[0, 1\)"}
    for override, match in refused.items():
        with pytest.raises(ConfigError, match=match):
            load_config(overrides=[override])
    with pytest.raises(ConfigError, match=r"data\.video_batch and data\.image_batch are both 0"):
        load_config(overrides=["data.video_batch=0", "data.image_batch=0"])


def test_a_config_built_in_python_is_checked_too():
    with pytest.raises(ConfigError, match=r"^steps must be a whole number >= 1, got -5"):
        TrainConfig(steps=-5)
    with pytest.raises(ConfigError, match=r"^loss\.gan must be a number >= 0, got -0\.1"):
        TrainConfig(loss=dataclasses.replace(TrainConfig().loss, gan=-0.1))
    assert math.isclose(TrainConfig().optim.lr, 5e-4)


def test_negative_steps_write_nothing(tmp_path):
    """``steps=-5`` used to exit 0 and save an untrained final/."""
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"steps must be a whole number >= 1, got -5"):
        train(load_config(overrides=["model.preset=tiny", f"run_dir={run_dir}", "steps=-5"]))
    assert not run_dir.exists()
