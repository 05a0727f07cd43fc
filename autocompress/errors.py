"""Error types. User errors abort a run before anything is written; candidate errors are
recorded on the failing trial and the search goes on."""

from __future__ import annotations


class AutocompressError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(AutocompressError, ValueError):
    """Bad user input: a search space, a profile, a command-line value."""


class TaskError(AutocompressError):
    """A user task (model / data / checkpoint) cannot be loaded or is malformed."""


class RunDirError(AutocompressError):
    """A run directory cannot be created or resumed."""


class CandidateError(AutocompressError):
    """One candidate failed to build, export or measure; the search records it and goes on."""
