"""vidgen: video tokenization and generation toolkit.

Conventions used everywhere in the package:

* a video is a float tensor ``(3, T, H, W)`` with values in ``[-1, 1]``; a batch is ``(B, 3, T, H, W)``;
* an image is a 1-frame video;
* bad input raises a subclass of :class:`vidgen.errors.VidgenError`.
"""
from vidgen.errors import (
    ConfigError,
    InvalidInputError,
    MissingWeightsError,
    ShardError,
    UnsupportedError,
    VidgenError,
    VideoIOError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "InvalidInputError",
    "MissingWeightsError",
    "ShardError",
    "UnsupportedError",
    "VidgenError",
    "VideoIOError",
    "__version__",
]
