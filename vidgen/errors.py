"""Exception types raised by vidgen.

Every error a user can trigger with bad input is a :class:`VidgenError`. Input problems also subclass
``ValueError`` so generic ``except ValueError`` handlers keep working.
"""
from __future__ import annotations


class VidgenError(Exception):
    """Base class of every vidgen error."""


class VideoIOError(VidgenError, ValueError):
    """A video file or frame folder could not be read or written (missing, corrupt, unsupported...)."""


class InvalidInputError(VidgenError, ValueError):
    """A tensor or argument has the wrong shape, range, dtype or value."""


class UnknownArgumentError(InvalidInputError, TypeError):
    """A call was given a keyword argument it does not take (a ``TypeError`` too, as Python raises for one)."""


class ConfigError(VidgenError, ValueError):
    """A configuration file or option is invalid."""


class UnsupportedError(VidgenError, NotImplementedError):
    """The request is valid but not supported by the chosen backend / device / dtype."""


class MissingWeightsError(VidgenError, FileNotFoundError):
    """Pretrained weights needed for an operation are not available on this machine."""


class ShardError(VidgenError, ValueError):
    """An encoded shard dataset cannot be used: not finished, truncated, or encoded with another tokenizer."""
