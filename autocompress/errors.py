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


class ExportError(AutocompressError):
    """A model cannot be exported to ONNX. `detail` says where and why in one line; whose
    error it is, the caller decides: the user's for the teacher (a TaskError), a failed
    candidate for a candidate."""

    def __init__(self, detail: str):
        super().__init__(f"the model could not be exported to ONNX: {detail}")
        self.detail = detail


class CandidateError(AutocompressError):
    """One candidate failed to build, export or measure; the search records it and goes on."""


class CandidateStopped(AutocompressError):
    """A candidate was not promoted at a multi-fidelity rung: not a failure; its trial is
    PRUNED with the reason and the rung results so far."""

    def __init__(self, reason: str, rung_results: list):
        super().__init__(reason)
        self.reason = reason
        self.rung_results = rung_results


def one_line(exc: BaseException, *, limit: int = 400) -> str:
    """'TypeName: first line of the message', for one-line errors and failure reasons."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    out = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return out if len(out) <= limit else out[: limit - 3] + "..."
