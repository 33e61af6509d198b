"""The ``routing`` section of a generator run: token routing around a span of the backbone's blocks in training.

During training, a random ``ratio`` of each clip's video tokens skips blocks ``[start, end)`` and rejoins the other
tokens after them (TREAD, arXiv 2501.04765); the kept tokens attend one another at their true grid positions. At
inference every token goes through every block. ``ratio: 0`` (the default) trains as without the section. The
mechanism is :mod:`vidgen.generators.routing`; which tokens are routed comes from each step's seeded generator, so a
resumed run stays bit-identical.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from vidgen.errors import ConfigError, UnsupportedError


@dataclass
class RoutingConfig:
    """``ratio``: the fraction of video tokens routed around blocks ``[start, end)``, in [0, 1) (0 = off). ``start``
    and ``end`` index the backbone's blocks as Python does (a negative index counts from the last block: the default
    ``end: -1`` stops before the last block)."""

    ratio: float = 0.0  # the fraction of video tokens routed around blocks [start, end), in [0, 1) (0 = off)
    start: int = 1  # the first routed block
    end: int = -1  # the block after the last routed one; negative counts from the last block
    _ranges = {"ratio": (0, 1, "below"), "end": (None, None)}

    def __post_init__(self):
        ratio = self.ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) \
                or not 0 <= ratio < 1:
            raise ConfigError(f"routing.ratio must be a number >= 0 and < 1 (the fraction of tokens routed around "
                              f"blocks [start, end); 0 = off), got {ratio!r}")
        for name, low in (("start", 0), ("end", None)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
                raise ConfigError(f"routing.{name} must be a whole number{' >= 0' if low is not None else ''} (a "
                                  f"block index), got {value!r}")
        if (self.end >= 0) and self.start >= self.end:
            raise ConfigError(f"routing.start={self.start} must be below routing.end={self.end}: the routed span is "
                              "blocks [start, end); set start < end (a negative end counts from the last block)")

    def span(self, depth: int) -> tuple[int, int]:
        """The routed blocks ``(start, end)`` of a backbone of ``depth`` blocks; a ConfigError if none would be."""
        end = self.end + depth if self.end < 0 else self.end
        if not 0 <= self.start < end <= depth:
            raise ConfigError(f"routing.start={self.start}, routing.end={self.end}: blocks [{self.start}, {end}) are "
                              f"not a non-empty span of this model's {depth} blocks; set 0 <= start < end <= {depth} "
                              "(a negative end counts from the last block)")
        return self.start, end


def check_run_routing(cfg, model, sp=None, log=None) -> RoutingConfig:
    """``cfg.routing`` once checked against the run's generator: it must support routing (the flow generator), the
    span must lie in its blocks, and those blocks must be routable (full attention, no sequence parallelism);
    refused by name (``UnsupportedError`` / ``ConfigError``) otherwise."""
    import torch

    from vidgen.generators.routing import TokenRoute, check_routing
    routing = cfg.routing
    if not getattr(model, "supports_routing", False):
        raise UnsupportedError(f"routing.ratio={routing.ratio}: token routing is implemented in the flow generator's "
                               f"training loss; model.generator={cfg.model.generator} ({type(model).__name__}) does "
                               "not support it; set routing.ratio=0")
    start, end = routing.span(len(model.backbone.blocks))
    check_routing(model.backbone, TokenRoute(torch.empty(0, 0, dtype=torch.long), start, end), sp)
    if log is not None:
        log(f"token routing: {routing.ratio:g} of the video tokens skip blocks [{start}, {end}) in training")
    return routing
