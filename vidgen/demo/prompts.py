"""The demo's prompt set: captions of the shapes data, half with colour x motion pairs seen in training, half with
the held-out pairs (:data:`vidgen.data.shapes.HELD_OUT_PAIRS`), and the real clips that go with them.

The set is a pure function of ``(n, seed)``: colours and motions are spread evenly (a seeded shuffle of all
combinations, then a round-robin over colour x motion pairs), so a small set still covers every colour and motion.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vidgen.data.common import make_generator
from vidgen.data.shapes import ShapeAttributes, all_combinations, render_shape_video
from vidgen.errors import InvalidInputError


@dataclass(frozen=True)
class DemoPrompt:
    attributes: ShapeAttributes
    held_out: bool  # its colour x motion pair never appears in training
    seed: int  # seed of the generated video (and of the real reference clip)

    @property
    def caption(self) -> str:
        return self.attributes.caption

    def expected(self) -> dict:
        return {"color": self.attributes.color, "motion": self.attributes.motion, "shape": self.attributes.shape}


def _spread(combos: list[ShapeAttributes], n: int, generator: torch.Generator) -> list[ShapeAttributes]:
    """``n`` combinations, cycling over colour x motion pairs so each pair comes up before any repeats."""
    order = [combos[i] for i in torch.randperm(len(combos), generator=generator)]
    by_pair: dict[tuple, list] = {}
    for c in order:
        by_pair.setdefault((c.color, c.motion), []).append(c)
    pairs = list(by_pair)
    pairs = [pairs[i] for i in torch.randperm(len(pairs), generator=generator)]
    picked, round_ = [], 0
    while len(picked) < n:
        for pair in pairs:
            items = by_pair[pair]
            if round_ < len(items) and len(picked) < n:
                picked.append(items[round_])
        round_ += 1
        if round_ > max(len(v) for v in by_pair.values()):
            break
    return picked


def demo_prompts(n: int, seed: int = 0) -> list[DemoPrompt]:
    """``n`` prompts: ``n // 2`` with held-out colour x motion pairs, the rest with seen ones (seen first)."""
    if not isinstance(n, int) or n < 2:
        raise InvalidInputError(f"--prompts must be an int >= 2 (half seen, half held-out pairs), got {n!r}")
    g = make_generator(seed, "demo/prompts", 0)
    held = _spread(all_combinations("test"), n // 2, g)
    seen = _spread(all_combinations("train"), n - len(held), g)
    if len(held) < n // 2 or len(seen) < n - n // 2:
        raise InvalidInputError(f"--prompts {n}: the shapes data has only {len(all_combinations('all'))} attribute "
                                "combinations")
    prompts = [(a, False) for a in seen] + [(a, True) for a in held]
    return [DemoPrompt(a, held_out, seed * 100_003 + i) for i, (a, held_out) in enumerate(prompts)]


#: the full evaluation's prompt set (``python -m vidgen.demo --full``): ``demo_prompts(EVALUATION_PROMPTS,
#: EVALUATION_SEED)``; every smaller demo set with that seed draws from the same combinations
EVALUATION_PROMPTS, EVALUATION_SEED = 128, 0


def tuning_prompts(n: int, seed: int = 1) -> list[DemoPrompt]:
    """``n`` prompts for choosing settings (sampler sweeps, ship decisions, early stopping) that the evaluation never
    sees: seen colour x motion pairs only, and no caption of the full evaluation set. Held-out pairs are scored only by
    the final evaluation (unlike ``demo_prompts(n, seed=1)``, which shares captions and held-out pairs with it)."""
    if not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"tuning prompts: n must be an int >= 1, got {n!r}")
    if seed == EVALUATION_SEED:
        raise InvalidInputError(f"tuning prompts: seed {seed} is the evaluation's seed; use another one")
    evaluated = {p.caption for p in demo_prompts(EVALUATION_PROMPTS, EVALUATION_SEED)}
    pool = [a for a in all_combinations("train") if a.caption not in evaluated]
    picked = _spread(pool, n, make_generator(seed, "demo/tuning-prompts", 0))
    if len(picked) < n:
        raise InvalidInputError(f"tuning prompts: only {len(pool)} seen-pair captions are outside the evaluation set, "
                                f"asked for {n}")
    return [DemoPrompt(a, False, seed * 100_003 + i) for i, a in enumerate(picked)]


def prompt_groups(prompts: list[DemoPrompt]) -> dict[str, list[int]]:
    """Indices of the prompts with seen and with held-out colour x motion pairs:
    ``{"seen": [...], "held_out": [...]}``."""
    return {"seen": [i for i, p in enumerate(prompts) if not p.held_out],
            "held_out": [i for i, p in enumerate(prompts) if p.held_out]}


def real_clip(prompt: DemoPrompt, num_frames: int, size: int, stream: str = "demo/real") -> torch.Tensor:
    """A real clip (3, T, H, W) in [-1, 1] with the prompt's attributes, seeded by the prompt and ``stream``
    (another stream gives an independent clip of the same prompt)."""
    return render_shape_video(prompt.attributes, num_frames, (size, size),
                              make_generator(prompt.seed, stream, 0)).clamp(-1, 1)
