"""vidgen.training.ema: the average, and its warm-up after a restart (diffusers' EMAModel schedule)."""
from __future__ import annotations

import torch
import torch.nn as nn

from vidgen.training.ema import EMA


def _model(value: float) -> nn.Module:
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def test_a_run_average_uses_its_decay_from_the_first_update():
    model = _model(0.0)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    assert ema.current_decay() == 0.9 and ema.since_restart is None
    torch.testing.assert_close(ema.shadow["weight"], torch.full((2, 2), 0.1))


def test_a_restarted_average_warms_its_decay_up_and_keeps_the_count_across_a_resume():
    model = _model(0.0)
    ema = EMA(model, decay=0.999)
    ema.restart(_model(5.0))
    torch.testing.assert_close(ema.shadow["weight"], torch.full((2, 2), 5.0))
    assert ema.current_decay() == 0.1  # (1 + 0) / (10 + 0): the restart's weights keep a tenth at the first update
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], torch.full((2, 2), 0.5))
    for _ in range(599):
        ema.update(model)
    assert ema.since_restart == 600 and abs(ema.current_decay() - 601 / 610) < 1e-12
    assert ema.shadow["weight"].abs().max() < 1e-6  # without the warm-up, 0.999 ** 600 = 55 % of 5.0 would be left
    for _ in range(20000):
        ema.update(model)
    assert ema.current_decay() == 0.999  # capped at the run's decay
    again = EMA(model, decay=0.5)
    again.load_state_dict(ema.state_dict())
    assert (again.decay, again.since_restart) == (0.999, 20600)
    old = {"decay": 0.999, "shadow": ema.state_dict()["shadow"]}  # a checkpoint written before the warm-up existed
    again.load_state_dict(old)
    assert again.since_restart is None and again.current_decay() == 0.999
