"""`autocompress report RUN_DIR` and autocompress.api.report: the three files written into a
real run (a budget-3 search on the tiny task) from what it recorded; a directory that is
not a run, or has no finished trial, is refused in one line with exit code 2."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from autocompress import api
from autocompress.cli import main
from autocompress.errors import RunDirError
from autocompress.report.build import FILES, write_report
from tests.report.runs import done, make_run
from tests.report.test_html import _array, figure_data


@pytest.fixture
def run_copy(search_run, tmp_path):
    assert search_run.rc == 0
    run = tmp_path / "run"
    shutil.copytree(search_run.out, run)
    return run


def test_report_on_a_real_run_writes_the_three_files(run_copy, capsys):
    for name in FILES:
        (run_copy / name).unlink(missing_ok=True)
    assert main(["report", str(run_copy)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(run_copy / name) for name in FILES]
    assert (run_copy / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trials = pd.read_csv(run_copy / "trials.csv")
    completed = set(trials.loc[trials["state"].eq("COMPLETE"), "number"].astype(int))
    traces, _ = figure_data((run_copy / "pareto.html").read_text())
    assert sorted(int(n) for t in traces if "customdata" in t for n in _array(t["customdata"])) == sorted(completed)
    text = (run_copy / "report.md").read_text()
    front = pd.read_csv(run_copy / "pareto.csv")
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and not line.startswith("| trial")]
    assert rows == [str(int(n)) for n in front.sort_values("latency_ms")["number"]]
    recorded = json.loads((run_copy / "run.json").read_text())["command"]  # here: the test runner's argv
    command = next(line for line in text.splitlines() if line.startswith("- Command: `"))
    assert all(arg in command for arg in recorded[1:])


def test_the_api_writes_the_same_files(tmp_path):
    run = make_run(tmp_path / "run", [done(0, 0.9, 0.5, 500), done(1, 0.85, 0.3, 300)])
    paths = api.report(run)
    assert paths == write_report(run) == [run / name for name in FILES] and all(p.stat().st_size > 0 for p in paths)


def test_a_directory_that_is_not_a_run_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("autocompress: error: RUN_DIR ") and "not a run directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written
    assert main(["report", str(tmp_path / "missing")]) == 2
    with pytest.raises(RunDirError, match="not a run directory"):
        api.report(tmp_path)


def test_a_run_without_a_finished_trial_exits_2_with_one_line(tmp_path, capsys):
    run = make_run(tmp_path / "run", [done(0, 0.9, 0.5, 500)])
    (run / "trials.csv").unlink()
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no trials.csv" in err
    assert not any((run / name).exists() for name in FILES)
