"""Live progress of a search: one stream of events, two renderers.

The driver tells a `Tracker` what happens: a note, the trials start, a trial enters a
pipeline stage, a trial finishes (its record). The tracker keeps the counts (trials done of
the budget, failed ones, the best speedup and size reduction within the drop limit so far,
the time left) and hands every event, as a `Progress` snapshot, to a sink: `BarSink` draws
a progress bar (rich) on a terminal, `LineSink` prints plain lines for logs and pipes (one
per finished trial, with the time left). Verbosity: QUIET prints only what is said at QUIET
(the run's path at the end), NORMAL the notes and trial lines, VERBOSE a line per pipeline
stage and each trial's details too. Pure: rich is imported by BarSink only.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Protocol, TextIO

from autocompress.faults import checkpoint
from autocompress.pareto import DROP_TOLERANCE

QUIET, NORMAL, VERBOSE = -1, 0, 1


def format_duration(seconds: Optional[float]) -> str:
    """'42s', '3m05s', '1h02m'; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass(frozen=True)
class Progress:
    """One event and the search's state after it. kind: 'note' (a line of text at `level`),
    'start' (the trials begin), 'stage' (trial `trial` entered pipeline stage `stage`),
    'trial' (trial `trial` finished; `text` is its line), 'end'."""

    kind: str
    done: int = 0  # trials finished that count against the budget
    budget: int = 0
    elapsed_s: float = 0.0  # since the trials began
    eta_s: Optional[float] = None  # time left: None until a trial of this session finished
    failed: int = 0
    best_speedup: Optional[float] = None  # within the drop limit
    best_size: Optional[float] = None  # size reduction within the drop limit
    trial: Optional[int] = None
    stage: Optional[str] = None
    text: str = ""
    level: int = NORMAL

    def status(self) -> str:
        """The bar's text: 'best 3.21x speedup, 4.10x smaller · 1 failed · #12 finetune'."""
        known = [f"{v:.2f}x {what}" for v, what in ((self.best_speedup, "speedup"), (self.best_size, "smaller")) if v is not None]
        parts = ["best " + (", ".join(known) or "-"), f"{self.failed} failed"]
        if self.trial is not None and self.stage is not None:
            parts.append(f"#{self.trial} {self.stage}")
        return " · ".join(parts)

    def tail(self) -> str:
        """What a plain trial line ends with: 'ETA 3m05s' and the failed count once there is one."""
        return f"ETA {format_duration(self.eta_s)}" + (f"  {self.failed} failed" if self.failed else "")


class Sink(Protocol):
    def __call__(self, event: Progress) -> None: ...

    def close(self) -> None: ...


class Tracker:
    """Counts what the events say and hands each on to `sink` as a Progress snapshot."""

    def __init__(self, sink: Sink, *, clock: Callable[[], float] = time.monotonic):
        self.sink = sink
        self._clock = clock
        self._t0: Optional[float] = None
        self._done0 = 0
        self.done = 0
        self.budget = 0
        self.failed = 0
        self.best_speedup: Optional[float] = None
        self.best_size: Optional[float] = None
        self._time_budget: Optional[float] = None
        self._drop_limit = math.inf
        self._teacher_size = 0
        self._trial: Optional[int] = None
        self._stage: Optional[str] = None

    # ---- what the driver says
    def note(self, text: str, level: int = NORMAL) -> None:
        self._emit("note", text=text, level=level)

    def start(self, *, budget: int, done: int = 0, records: tuple[Mapping[str, Any], ...] | list = (), drop_limit: Optional[float] = None,
              teacher_size_bytes: int = 0, time_budget: Optional[float] = None) -> None:
        """The trials begin: `budget` in all, `done` of them finished before (a resumed run,
        whose `records` count towards the best and the failed ones)."""
        self.budget, self.done, self._done0 = budget, done, done
        self._drop_limit = math.inf if drop_limit is None else drop_limit
        self._teacher_size = teacher_size_bytes
        self._time_budget = time_budget
        for rec in records:
            self._count(rec)
        self._t0 = self._clock()
        self._emit("start")

    def stage(self, trial: int, name: str) -> None:
        self._trial, self._stage = trial, name
        self._emit("stage", trial=trial, stage=name)
        checkpoint(name, trial)  # test-facing: autocompress.faults

    def trial(self, rec: Mapping[str, Any], *, done: int, line: str) -> None:
        """Trial `rec` (a record: state, metric_drop, latency_ratio, size_bytes) finished;
        `done` trials now count against the budget; `line` says it in one line."""
        self.done = done
        self._count(rec)
        if rec.get("number") == self._trial:
            self._trial, self._stage = None, None
        self._emit("trial", trial=rec.get("number"), text=line)
        checkpoint("trial", rec.get("number"))  # test-facing: autocompress.faults

    def end(self) -> None:
        self._emit("end")

    def close(self) -> None:
        self.sink.close()

    # ---- the counts
    def _count(self, rec: Mapping[str, Any]) -> None:
        state = rec.get("state")
        if state == "FAIL" and not rec.get("interrupted"):
            self.failed += 1
        if state != "COMPLETE":
            return
        drop, ratio, size = (_number(rec.get(k)) for k in ("metric_drop", "latency_ratio", "size_bytes"))
        if drop is None or drop > self._drop_limit + DROP_TOLERANCE:
            return
        if ratio is not None and ratio > 0:
            self.best_speedup = max(self.best_speedup or 0.0, 1.0 / ratio)
        if size is not None and size > 0 and self._teacher_size:
            self.best_size = max(self.best_size or 0.0, self._teacher_size / size)

    def eta(self, elapsed: float) -> Optional[float]:
        """Seconds left: the mean time of this session's trials times the trials left (no
        more than the time budget leaves); None before one finished."""
        ran = self.done - self._done0
        if ran <= 0:
            return None
        left = elapsed / ran * max(0, self.budget - self.done)
        if self._time_budget is not None:
            left = min(left, max(0.0, self._time_budget - elapsed))
        return left

    def _emit(self, kind: str, **kw: Any) -> None:
        elapsed = 0.0 if self._t0 is None else self._clock() - self._t0
        kw.setdefault("trial", self._trial)
        kw.setdefault("stage", self._stage)
        self.sink(Progress(kind, done=self.done, budget=self.budget, elapsed_s=elapsed, eta_s=self.eta(elapsed), failed=self.failed,
                           best_speedup=self.best_speedup, best_size=self.best_size, **kw))


def _number(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class LineSink:
    """Plain lines through `write` (print by default): the notes, one line per finished
    trial ending with the time left, and with VERBOSE a line per stage."""

    def __init__(self, write: Callable[[str], None] = print, *, verbosity: int = NORMAL):
        self.write = write
        self.verbosity = verbosity

    def __call__(self, p: Progress) -> None:
        if p.kind == "note" and p.level <= self.verbosity:
            self.write(p.text)
        elif p.kind == "trial" and self.verbosity >= NORMAL:
            self.write(f"{p.text}  {p.tail()}")
        elif p.kind == "stage" and self.verbosity >= VERBOSE:
            self.write(f"      #{p.trial} {p.stage} ...")

    def close(self) -> None:
        pass


class BarSink:
    """A progress bar on a terminal (rich): trials done of the budget, elapsed time, time
    left, and p.status() (the best speedup and size reduction within the drop limit, failed
    trials, the current trial's stage); notes and trial lines print above it."""

    def __init__(self, *, verbosity: int = NORMAL, console: Any = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, ProgressColumn, TextColumn, TimeElapsedColumn
        from rich.text import Text

        class Left(ProgressColumn):  # the tracker's estimate, counted down between events
            def render(self, task) -> Text:
                until = task.fields.get("until")
                return Text("ETA " + format_duration(None if until is None else until - time.monotonic()), style="progress.remaining")

        self.verbosity = verbosity
        self.console = console if console is not None else Console()
        self.bar = Bar(TextColumn("[bold]search"), BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(), Left(),
                       TextColumn("{task.fields[status]}"), console=self.console, refresh_per_second=4)
        self._task = None

    def __call__(self, p: Progress) -> None:
        if p.kind == "note":
            if p.level <= self.verbosity:
                self.console.print(p.text, markup=False, highlight=False, soft_wrap=True)
            return
        if p.kind == "start" and self._task is None:
            self.bar.start()
            self._task = self.bar.add_task("search", total=p.budget, completed=p.done, status=p.status(), until=None)
        if p.kind == "trial" and self.verbosity >= NORMAL:
            self.console.print(p.text, markup=False, highlight=False, soft_wrap=True)
        if p.kind == "stage" and self.verbosity >= VERBOSE:
            self.console.print(f"      #{p.trial} {p.stage} ...", markup=False, highlight=False)
        if self._task is not None:
            until = None if p.eta_s is None else time.monotonic() + p.eta_s
            self.bar.update(self._task, completed=p.done, total=p.budget, status=p.status(), until=until)
            self.bar.refresh()
        if p.kind == "end":
            self.close()

    def close(self) -> None:
        if self._task is not None:
            self.bar.stop()
            self._task = None


def terminal_sink(*, verbosity: int = NORMAL, bar: bool = True, stream: Optional[TextIO] = None) -> Sink:
    """The sink for a search run from a terminal or a log: a bar where `stream` (stdout) is
    a terminal and `bar` allows one (and not QUIET), else plain lines."""
    stream = sys.stdout if stream is None else stream
    if bar and verbosity >= NORMAL and stream.isatty():
        try:
            return BarSink(verbosity=verbosity)
        except ImportError:  # rich missing: lines
            pass
    return LineSink(lambda text: print(text, file=stream, flush=True), verbosity=verbosity)


__all__ = ["BarSink", "LineSink", "NORMAL", "Progress", "QUIET", "Tracker", "VERBOSE", "format_duration", "terminal_sink"]
