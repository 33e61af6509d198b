"""``eval/step_cache_probe.py``: the first-block caching rule replayed on a recorded trajectory."""
from __future__ import annotations

import torch


def test_the_rule_skips_against_the_last_computed_step(load_script):
    probe = load_script("eval/step_cache_probe.py")
    ones = torch.ones(4)
    assert probe.replay([ones] * 5, 0.05) == 4  # nothing changes: every step after the first reuses the cache
    assert probe.replay([ones * (2 ** i) for i in range(5)], 0.5) == 0  # every step changes by 100 %
    # 3 % a step: under 5 % against the last computed step once, then the drift adds up and the step is computed
    drifting = [ones * (1.03 ** i) for i in range(5)]
    assert probe.replay(drifting, 0.05) == 2
    assert probe.replay(drifting, 0.02) == 0
