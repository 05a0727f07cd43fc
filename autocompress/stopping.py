"""When a search stops before its budget because its trials keep failing.

Two rules, fed the trials of this session as they finish (`FailureWatch.see`):
- `--max-failures N`: N failed trials (hand recipes included; trials interrupted by Ctrl-C
  are not failures).
- the same error: the first SAME_ERROR_TRIALS trials other than the hand recipes all
  failed with the same error once numbers are left out (`error_shape`). That is a setup
  problem (a space the model cannot take, a broken install), not unlucky candidates, and
  every further trial would spend its time on it too. Always on.

The trial in flight finishes (with several workers, all of them); the outputs are written
as after any search. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

SAME_ERROR_TRIALS = 5
_NUMBER = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def error_shape(reason: str) -> str:
    """A failure reason with every number written as '#': 'shape [3, 48]' and 'shape [3, 24]'
    are the same error."""
    return _NUMBER.sub("#", reason).strip()


@dataclass(frozen=True)
class Stop:
    """Why a search stopped early: `rule` "max_failures" or "same_error", the line that says
    so, and the failure reason it is about."""

    rule: str
    message: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message, "error": self.error}


class FailureWatch:
    """Counts this session's finished trials (records as backends.study.record makes them)
    and says when the search should stop (`stop`, None while it goes on)."""

    def __init__(self, max_failures: Optional[int] = None, *, same_error_trials: Optional[int] = None):
        if max_failures is not None and max_failures < 1:
            raise ValueError(f"max_failures must be >= 1, got {max_failures}")
        self.max_failures = max_failures
        self.same_error_trials = SAME_ERROR_TRIALS if same_error_trials is None else same_error_trials
        self.failures = 0
        self._first: list[Optional[str]] = []  # the first non-recipe trials: each one's error shape, None if it did not fail
        self.stop: Optional[Stop] = None

    def see(self, rec: Mapping[str, Any]) -> Optional[Stop]:
        """Take one finished trial; the reason to stop, once there is one (it stays)."""
        if self.stop is not None or (rec.get("state") == "FAIL" and rec.get("interrupted")):
            return self.stop  # interrupted: built again on --resume, neither a failure nor an outcome
        failed = rec.get("state") == "FAIL"
        reason = str(rec.get("failure_reason") or "no reason recorded")
        self.failures += failed
        if not rec.get("recipe") and len(self._first) < self.same_error_trials:
            self._first.append(error_shape(reason) if failed else None)
            shapes = set(self._first)
            if len(self._first) == self.same_error_trials and len(shapes) == 1 and None not in shapes:
                self.stop = Stop("same_error", f"Stopped early: the first {self.same_error_trials} trials other than the hand recipes "
                                               f"all failed with the same error: {reason}", reason)
                return self.stop
        if failed and self.max_failures is not None and self.failures >= self.max_failures:
            self.stop = Stop("max_failures", f"Stopped early: {self.failures} trial{'s' if self.failures > 1 else ''} failed "
                                             f"(--max-failures {self.max_failures}); the last: {reason}", reason)
        return self.stop


__all__ = ["SAME_ERROR_TRIALS", "FailureWatch", "Stop", "error_shape"]
