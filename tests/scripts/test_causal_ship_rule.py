"""experiments/causal_ship_rule.py: which streams the causal ship rule gates."""
from __future__ import annotations


def _stream(motion, passes):
    return {"motion": motion, "seed": 0, "passes": passes}


def test_shrink_is_reported_not_gated(load_script):
    rule = load_script("experiments/causal_ship_rule.py")
    stories = [{"passes": True}]
    held = [_stream(m, True) for m in rule.MOTIONS if m not in rule.UNGATED]
    assert rule.rules(held + [_stream("shrink", False)], stories) == {"long_streams": True, "stories": True}
    assert not rule.rules(held[:-1] + [_stream(held[-1]["motion"], False)], stories)["long_streams"]
    assert not rule.rules(held, [{"passes": True}, {"passes": False}])["stories"]
    assert rule.UNGATED == ("shrink",)  # the one motion whose data streams fail (scorer_wrap_ceiling.json)
