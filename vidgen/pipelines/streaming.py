"""The loop every streamed generation runs over its chunks (the block-causal pipeline's chunks, the autoregressive
pipeline's latent frames): one progress bar, and one interrupt: a step callback that sets ``pipe._interrupt`` ends the
video after the chunk being made, with a warning naming how much of it was made."""
from __future__ import annotations

import warnings


class ChunkLoop:
    """``loop.advance(n)`` after each chunk of ``n`` units (of ``total``): moves the bar and tells whether the video
    ends there (interrupted before the last chunk; a warning says so); ``loop.close()`` at the end."""

    def __init__(self, pipe, total: int, unit: str):
        self.pipe, self.total, self.unit, self.made = pipe, total, unit, 0
        self.bar = pipe.progress(total)(None)

    def advance(self, n: int = 1) -> bool:
        self.bar.update(n)
        self.made += n
        if self.pipe.interrupt and self.made < self.total:
            warnings.warn(f"interrupted after {self.made} of {self.total} {self.unit}: the video ends there, shorter "
                          "than num_frames", stacklevel=4)
            self.close()
            return True
        return False

    def close(self) -> None:
        self.bar.close()
