"""Error types that the command line turns into one clear line instead of a traceback.

Every message names the file, key or value at fault, so a user can act on it
without reading our source.
"""


class PcdistillError(Exception):
    """Base class for user-facing errors (bad input, bad config, bad checkpoint)."""


class DataError(PcdistillError, ValueError):
    """A dataset file is missing, corrupt, or holds values we refuse to train on."""


class ConfigError(PcdistillError, ValueError):
    """A config key or value is unknown or out of range."""


class ModelError(PcdistillError, ValueError):
    """An unknown model name, or a checkpoint that does not fit the architecture."""


class Interrupted(PcdistillError):
    """A run stopped by SIGINT / SIGTERM after checkpointing its current step; `signum`
    sets the exit status (128 + signal number, as a shell reports it)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
