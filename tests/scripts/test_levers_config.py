"""experiments/levers.py's configs: every arm is a known trainer setting, and a bf16 arm is refused where bf16 would
be emulated."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "experiments/configs/generators").glob("levers_*.yaml"))


def test_a_bf16_arm_is_refused_on_a_cpu_without_bf16_units(load_script, monkeypatch):
    levers = load_script("experiments/levers.py")
    monkeypatch.setattr(levers.torch.cuda, "is_available", lambda: False)
    spec = yaml.safe_load((ROOT / "experiments/configs/generators/levers_bf16_stage7.yaml").read_text())
    reason = levers.bf16_refusal(spec, ["base", "bf16_compile"], units=[])
    assert "bf16_compile" in reason and "no bf16 units" in reason
    assert levers.bf16_refusal(spec, ["base", "bf16_compile"], units=["avx512_bf16"]) is None
    assert levers.bf16_refusal(spec, ["base"], units=[]) is None  # the fp32 arm alone runs anywhere


def test_the_refusal_stops_the_script_before_any_training(load_script, monkeypatch, capsys):
    levers = load_script("experiments/levers.py")
    monkeypatch.setattr(levers.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("vidgen.precision.cpu_bf16_units", lambda: [])
    monkeypatch.setattr(levers, "train_arms", lambda *a: pytest.fail("trained despite the refusal"))
    with pytest.raises(SystemExit):
        levers.main(["--config", "experiments/configs/generators/levers_bf16_stage7.yaml"])
    assert "no bf16 units" in capsys.readouterr().err


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_arm_sets_known_trainer_settings(path, load_script):
    from vidgen.training import GeneratorTrainConfig, load_config
    levers = load_script("experiments/levers.py")
    spec = yaml.safe_load(path.read_text())
    for arm, settings in spec["arms"].items():
        overrides = levers.arm_overrides(spec, arm, spec["minutes"])  # what the script passes the trainer
        cfg = load_config(ROOT / spec["base"], overrides, schema=GeneratorTrainConfig)  # unknown or invalid: ConfigError
        for key, value in settings.items():  # the arm's own settings arrive as written
            got = cfg
            for part in key.split("."):
                got = got[part] if isinstance(got, dict) else getattr(got, part)
            assert got == value, (path.name, arm, key, got)
