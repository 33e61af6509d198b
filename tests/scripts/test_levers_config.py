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


def test_step_times_read_the_trainers_log_and_the_table_shows_them(load_script, tmp_path):
    """The first step (compiling, for a compiled arm) and the mean step after it, from the trainer's log lines; the
    table gains their column only when every row has them (files read before step_times keep their table)."""
    import json
    levers = load_script("experiments/levers.py")
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(e) for e in [
        {"info": "compile: torch.compile (inductor)", "time": 0.0},
        {"step": 1, "first_step_s": 150.0, "time": 150.0},
        {"info": "stopped at step 11 of 6000: the steps took 6.0 minutes (max_train_minutes=6)", "time": 400.0}]))
    assert levers.steps_trained(log) == 11
    assert levers.step_times(log) == {"first_step_s": 150.0, "seconds_per_step_after_first": 25.0}

    def row(arm, loss, times):
        return {"arm": arm, "settings": {}, "steps": 11, "heldout_loss": loss, "shape": None, "color_motion": None,
                **times}
    timed = {"minutes": 6, "complete": True, "verdicts": None,
             "rows": [row("base", 0.1, levers.step_times(log)), row("compile", 0.099, levers.step_times(log))]}
    table = levers.readme_table(timed)
    assert "first step, then a step" in table and "| 150 s, then 25.0 s |" in table and "no (loss)" in table
    assert all(line.count("|") == table.splitlines()[0].count("|") for line in table.splitlines())
    untimed = {**timed, "rows": [{k: v for k, v in r.items() if "step_" not in k} for r in timed["rows"]]}
    assert "first step" not in levers.readme_table(untimed)
