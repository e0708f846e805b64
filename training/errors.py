"""Errors the command line turns into a clear message (exit code 2) instead of a traceback."""


class CineSyncError(Exception):
    """Base class for user-facing errors in training, evaluation and data loading."""


class DataError(CineSyncError):
    """A data file is missing, malformed or empty; the message names the file and the problem."""


class ConfigError(CineSyncError):
    """A training or evaluation option or config file is invalid."""


class DivergedError(CineSyncError):
    """A model's scores are not numbers (NaN): training diverged."""
