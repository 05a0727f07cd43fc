"""Test-facing fault injection: a search that kills itself at a named event.

Only for tests of crash safety (tests/test_kill_resume.py). With the environment variable
AUTOCOMPRESS_KILL_AT set, the process sends itself SIGKILL (no cleanup, no finally blocks,
as an out-of-memory kill or a power cut would end it) when the event it names happens:

    AUTOCOMPRESS_KILL_AT="finetune:2"   trial 2 enters pipeline stage finetune (any stage
                                        name: quantize, latency, export, ...)
    AUTOCOMPRESS_KILL_AT="trial:1"      trial 1 has finished and is stored, before the next starts
    AUTOCOMPRESS_KILL_AT="finalize"     the end of the search: after pareto.csv, before summary.txt

The variable is read once, at import; unset, `checkpoint` is a single comparison.
"""

from __future__ import annotations

import os
import signal
from typing import Optional

KILL_AT_ENV = "AUTOCOMPRESS_KILL_AT"


def _parse(spec: Optional[str]) -> Optional[tuple[str, Optional[int]]]:
    """'finetune:2' -> ('finetune', 2); 'finalize' -> ('finalize', None); unset or '' -> None."""
    if not spec:
        return None
    event, sep, trial = spec.strip().partition(":")
    if not event or (sep and not trial.strip().isdigit()):
        raise ValueError(f"{KILL_AT_ENV} must be EVENT or EVENT:TRIAL (e.g. finetune:2, finalize), got {spec!r}")
    return event, int(trial) if sep else None


_KILL_AT = _parse(os.environ.get(KILL_AT_ENV))


def checkpoint(event: str, trial: Optional[int] = None) -> None:
    """Die by SIGKILL here when AUTOCOMPRESS_KILL_AT names `event` (for `trial`)."""
    if _KILL_AT is None:
        return
    if _KILL_AT == (event, trial):
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["KILL_AT_ENV", "checkpoint"]
