"""Live progress: the tracker's counts on hand-made events, both sinks, the choice between
them, and a real tiny search's lines where stdout is not a terminal (--quiet and -v too)."""

from __future__ import annotations

import io
import re

import pytest

from autocompress.progress import NORMAL, QUIET, VERBOSE, BarSink, LineSink, Progress, Tracker, format_duration, terminal_sink
from tests.helpers import search_args


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _done(number, drop, ratio, size, state="COMPLETE"):
    return {"number": number, "state": state, "metric_drop": drop, "latency_ratio": ratio, "size_bytes": size}


def test_the_tracker_counts_trials_failures_and_the_best_within_the_drop_limit():
    events: list[Progress] = []
    clock = Clock()
    t = Tracker(type("Collect", (), {"__call__": lambda self, e: events.append(e), "close": lambda self: None})(), clock=clock)
    t.note("teacher measured")
    t.start(budget=4, drop_limit=1.0, teacher_size_bytes=1000)
    assert events[-1].kind == "start" and events[-1].eta_s is None and events[-1].best_speedup is None
    t.stage(0, "prune")
    assert (events[-1].kind, events[-1].trial, events[-1].stage) == ("stage", 0, "prune")
    clock.now += 10
    t.trial(_done(0, 0.5, 0.5, 500), done=1, line="trial 0")  # within the limit: 2x, 2x smaller
    e = events[-1]
    assert (e.kind, e.done, e.budget, e.failed, e.text) == ("trial", 1, 4, 0, "trial 0")
    assert e.best_speedup == pytest.approx(2.0) and e.best_size == pytest.approx(2.0)
    assert e.eta_s == pytest.approx(30.0)  # 10 s a trial, 3 left
    assert e.stage is None  # the trial that was in a stage has finished
    clock.now += 10
    t.trial(_done(1, 5.0, 0.1, 100), done=2, line="trial 1")  # 10x faster, but beyond the drop limit
    assert events[-1].best_speedup == pytest.approx(2.0) and events[-1].best_size == pytest.approx(2.0)
    clock.now += 10
    t.trial({"number": 2, "state": "FAIL", "failure_reason": "export: boom"}, done=3, line="trial 2")
    assert events[-1].failed == 1 and events[-1].eta_s == pytest.approx(10.0)
    t.trial({"number": 3, "state": "FAIL", "interrupted": True}, done=3, line="trial 3")  # re-enqueued: not a failure
    assert events[-1].failed == 1
    t.end()
    assert [e.kind for e in events] == ["note", "start", "stage", "trial", "trial", "trial", "trial", "end"]
    assert events[-1].status() == "best 2.00x speedup, 2.00x smaller · 1 failed"


def test_a_resumed_search_counts_its_earlier_trials_and_the_time_budget_caps_the_eta():
    events: list[Progress] = []
    clock = Clock()
    t = Tracker(type("Collect", (), {"__call__": lambda self, e: events.append(e), "close": lambda self: None})(), clock=clock)
    t.start(budget=10, done=2, records=[_done(0, 0.0, 0.25, 250), {"number": 1, "state": "FAIL"}], drop_limit=1.0,
            teacher_size_bytes=1000, time_budget=25.0)
    assert events[-1].failed == 1 and events[-1].best_speedup == pytest.approx(4.0) and events[-1].eta_s is None
    clock.now += 5
    t.trial(_done(2, 0.0, 0.5, 500), done=3, line="")
    assert events[-1].eta_s == pytest.approx(20.0)  # 7 trials x 5 s = 35 s, but the time budget leaves 20 s


def _event(kind, **kw):
    base = {"done": 1, "budget": 4, "elapsed_s": 10.0, "eta_s": 30.0, "failed": 0, "best_speedup": 2.0, "best_size": 3.0}
    return Progress(kind, **{**base, **kw})


@pytest.mark.parametrize("verbosity, expected", [
    (QUIET, ["Results in run"]),
    (NORMAL, ["teacher", "[  1/4] #0  ETA 30s", "[  2/4] #1 FAILED: boom  ETA 20s  1 failed", "Results in run"]),
    (VERBOSE, ["teacher", "      #0 prune ...", "[  1/4] #0  ETA 30s", "      details", "[  2/4] #1 FAILED: boom  ETA 20s  1 failed",
               "Results in run"]),
])
def test_the_line_sink_prints_by_verbosity(verbosity, expected):
    lines: list[str] = []
    sink = LineSink(lines.append, verbosity=verbosity)
    for e in (_event("note", text="teacher"), _event("start"), _event("stage", trial=0, stage="prune"),
              _event("trial", trial=0, text="[  1/4] #0"), _event("note", text="      details", level=VERBOSE),
              _event("trial", trial=1, text="[  2/4] #1 FAILED: boom", done=2, failed=1, eta_s=20.0),
              _event("end"), _event("note", text="Results in run", level=QUIET)):
        sink(e)
    assert lines == expected


def test_the_bar_sink_draws_the_counts_and_prints_lines_above_the_bar():
    from rich.console import Console

    out = io.StringIO()
    sink = BarSink(console=Console(file=out, force_terminal=True, width=120, color_system=None))
    sink(_event("note", text="teacher measured"))
    sink(_event("start", done=0))
    sink(_event("stage", done=0, trial=0, stage="finetune"))
    sink(_event("trial", trial=0, text="[  1/4] #0 p.5 q8", failed=1))
    sink(_event("end", failed=1))
    text = out.getvalue()
    assert "teacher measured" in text and "[  1/4] #0 p.5 q8" in text
    assert "1/4" in text and "best 2.00x speedup, 3.00x smaller · 1 failed" in text and "ETA" in text
    assert "#0 finetune" in text  # the stage while the trial ran
    sink.close()  # closing twice is harmless


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_terminal_sink_draws_a_bar_on_a_terminal_only():
    assert isinstance(terminal_sink(stream=_Stream(True)), BarSink)
    assert isinstance(terminal_sink(stream=_Stream(False)), LineSink)
    assert isinstance(terminal_sink(stream=_Stream(True), verbosity=QUIET), LineSink)  # quiet: no bar
    assert isinstance(terminal_sink(stream=_Stream(True), bar=False), LineSink)  # e.g. a Ray run
    stream = _Stream(False)
    terminal_sink(stream=stream)(_event("trial", text="[  1/4] #0"))
    assert stream.getvalue() == "[  1/4] #0  ETA 30s\n"


def test_format_duration():
    assert [format_duration(s) for s in (None, float("nan"), 0.4, 42, 185, 3720)] == ["?", "?", "0s", "42s", "3m05s", "1h02m"]


# --------------------------------------------------------------------------- a real search


def test_a_search_prints_a_line_per_trial_with_the_eta_and_the_failures_when_stdout_is_not_a_terminal(
        cli_inputs, tmp_path, capsys, failing_prune):
    from autocompress.cli import main

    assert main(search_args(cli_inputs, "--budget", 4, "--out", tmp_path / "run", "-v")) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # no bar, no terminal codes
    lines = out.splitlines()
    trials = [line for line in lines if line.startswith("[") and "/4] #" in line]
    assert len(trials) == 4 and all("ETA " in line for line in trials)
    failed = [i for i, line in enumerate(trials) if "FAILED: prune: RuntimeError: no pruning today" in line]
    assert failed  # the hand recipe that prunes
    assert all(f"  {n} failed" in line for n, line in ((sum(j <= i for j in failed), trials[i]) for i in range(failed[0], 4)))
    assert not any("failed" in line for line in trials[:failed[0]])
    assert trials[-1].endswith("ETA 0s" + (f"  {len(failed)} failed"))
    assert any(line.strip().startswith("#0 ") and line.endswith(" ...") for line in lines)  # -v: a line per stage
    assert any(line.startswith("      ") and re.search(r"export \d+\.\d\ds · quantize \d+\.\d\ds", line) for line in lines)  # -v: stage times
    assert not any(line.strip() in ("#0 heads ...", "#0 prune ...") for line in lines)  # #0 (int8 teacher) neither prunes nor drops heads
    assert lines[-1].startswith(f"Results in {tmp_path / 'run'}")
    summary = (tmp_path / "run" / "summary.txt").read_text()
    assert f"{len(failed)} failed" in summary and max(map(len, summary.splitlines())) <= 100


def test_quiet_prints_only_where_the_results_are(cli_inputs, tmp_path, capsys):
    from autocompress.cli import main

    assert main(search_args(cli_inputs, "--budget", 1, "--out", tmp_path / "run", "--quiet")) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [f"Results in {tmp_path / 'run'}: summary.txt, pareto.csv, trials.csv, pareto.png, pareto.html, report.md; "
                                "ONNX + state_dict per front point under trials/"]
    assert all((tmp_path / "run" / name).is_file() for name in ("summary.txt", "pareto.csv", "trials.csv", "pareto.png", "pareto.html", "report.md"))


def test_a_report_that_fails_at_the_end_of_a_search_loses_nothing_and_is_said_even_when_quiet(cli_inputs, tmp_path, capsys, monkeypatch):
    """The plots come last: summary.txt, pareto.csv and the front's files are written, the
    non-front files removed and the search ends well; the failure is said with the command
    that writes the report again."""
    import pandas as pd

    from autocompress.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("no backend for the plot")

    monkeypatch.setattr("autocompress.report.plot.render_pareto_png", broken)  # report.build imports it when it runs
    run = tmp_path / "run"
    assert main(search_args(cli_inputs, "--budget", 2, "--out", run, "--quiet")) == 0
    out = capsys.readouterr().out
    assert "could not be written (RuntimeError: no backend for the plot)" in out and f"autocompress report {run}" in out
    assert out.splitlines()[-1].startswith(f"Results in {run}")
    listed = out.splitlines()[-1]
    assert "pareto.png" not in listed and "summary.txt" in listed  # the files it has, not a report that failed
    for name in ("pareto.html", "report.md"):
        assert (name in listed) == (run / name).is_file(), name
    assert (run / "summary.txt").read_text().startswith("Pareto front: ")
    front = pd.read_csv(run / "pareto.csv")
    kept = sorted(int(p.name) for p in (run / "trials").iterdir() if p.name.isdigit())
    assert kept == sorted(int(n) for n in front["number"])  # the non-front trials' files removed, as without the failure
    assert not (run / "pareto.png").exists()


def test_quiet_and_verbose_are_flags_of_search_and_verbosity_is_checked():
    from autocompress.cli import build_parser
    from autocompress.driver import SearchOptions, validate
    from autocompress.errors import ConfigError

    parse = build_parser().parse_args
    assert (parse(["search", "-q"]).quiet, parse(["search", "-vv"]).verbose, parse(["search"]).verbose) == (True, 2, 0)
    with pytest.raises(SystemExit):
        parse(["search", "--quiet", "--verbose"])
    with pytest.raises(ConfigError, match="verbosity must be an integer >= -1.*got -2"):
        validate(SearchOptions(verbosity=-2))
    validate(SearchOptions(verbosity=VERBOSE))


def test_the_status_shows_what_is_known_of_the_best():
    """A tracker told no teacher size knows the best speedup only: the bar's text still renders."""
    assert _event("trial", best_size=None).status() == "best 2.00x speedup · 0 failed"
    assert _event("trial", best_speedup=None, best_size=None).status() == "best - · 0 failed"
    events: list[Progress] = []
    t = Tracker(type("Collect", (), {"__call__": lambda self, e: events.append(e), "close": lambda self: None})())
    t.start(budget=2, drop_limit=1.0)  # no teacher size
    t.trial(_done(0, 0.5, 0.5, 500), done=1, line="")
    assert events[-1].status() == "best 2.00x speedup · 0 failed"
