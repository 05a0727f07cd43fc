"""Two `autocompress search --resume RUN --worker` processes on one SQLite study share the
budget: no trial is built twice, no trial number is repeated, the results are written once
by the last worker to finish."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import optuna
import pytest

from tests.helpers import FAST_PROFILE_YAML, TINY_DATA_SPEC, TINY_MODEL_SPEC

# prune ratios in steps of 0.001: two workers that drew the same sequence would repeat params
SPACE = """\
prune:
  ratio: {low: 0.0, high: 0.5, step: 0.001}
finetune:
  steps: [150, 300]  # trials of a few seconds: both workers get some
  batch_size: 32
quantize:
  mode: [fp32, int8]
"""
SKIPPED = ("finalize skipped here", "written by another worker")


def _search(*args, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "autocompress.cli", "search", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["study.db", "--storage"])
def test_two_workers_share_one_study(tmp_path, storage):
    """With the run's study.db, and with the study in a database outside the run (--storage:
    a SQLite file elsewhere stands in for a server workers on several machines would share)."""
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "profile.yaml").write_text(FAST_PROFILE_YAML)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUTOCOMPRESS_WORKER_COUNT": "2"}
    first = _search("--model", TINY_MODEL_SPEC, "--data", TINY_DATA_SPEC, "--space", tmp_path / "space.yaml",
                    "--profile", tmp_path / "profile.yaml", "--budget", 1, "--sampler", "random", "--out", run,
                    *(["--storage", f"sqlite:///{tmp_path / 'server.db'}"] if storage == "--storage" else []), env=env)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    budget = 6
    workers = [_search("--resume", run, "--worker", "--budget", budget, env=env) for _ in range(2)]
    outputs = [w.communicate(timeout=500)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert all(re.search(r"^\[\s*\d+/6\] #", o, re.M) for o in outputs), outputs  # each worker finished trials

    made = json.loads((run / "run.json").read_text()).get("study")
    study = (optuna.load_study(study_name=made["name"], storage=made["storage"]) if storage == "--storage"
             else optuna.load_study(study_name="autocompress", storage=f"sqlite:///{run / 'study.db'}"))
    assert (run / "study.db").exists() == (storage == "study.db")
    trials = study.get_trials()
    finished = [t for t in trials if t.state.is_finished() and not t.user_attrs.get("interrupted")]
    assert len(finished) == budget
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    params = [tuple(sorted(t.params.items())) for t in finished if "recipe" not in t.user_attrs]
    assert len(params) == len(set(params)), params
    recipes = [t.user_attrs["recipe"] for t in finished if "recipe" in t.user_attrs]
    assert len(recipes) == len(set(recipes))  # each hand recipe once, not once per worker

    # the results were written once, by the last worker, after every trial
    assert sum(not any(s in o for s in SKIPPED) for o in outputs) == 1, outputs
    for o in outputs:  # a worker that left the results to another does not point at results it did not write
        assert ("finalize skipped here" in o) == ("when the last worker finishes (nothing written by this one)" in o), o
    assert study.user_attrs["finalized_at"] == budget
    manifest = json.loads((run / "run.json").read_text())
    assert len([t for t in manifest["timing"] if "worker" in t]) == 2
    assert len({t["worker"] for t in manifest["timing"] if "worker" in t}) == 2
    with open(run / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= budget
    with open(run / "pareto.csv") as f:
        front = list(csv.DictReader(f))
    assert front
    for row in front:
        assert (run / row["onnx"]).is_file()
    kept = {int(d.name) for d in (run / "trials").iterdir() if d.is_dir() and d.name.isdigit()}
    assert kept <= {int(row["number"]) for row in front}


def test_worker_needs_a_run_to_join(capsys):
    from autocompress.cli import main

    assert main(["search", "--worker", "--budget", "3"]) == 2
    err = capsys.readouterr().err
    assert "--worker joins a run: give --resume RUN_DIR" in err and len(err.strip().splitlines()) == 1


def test_worker_count_is_checked(monkeypatch, tmp_path):
    from autocompress.driver import SearchOptions, validate
    from autocompress.errors import ConfigError

    monkeypatch.setenv("AUTOCOMPRESS_WORKER_COUNT", "zero")
    with pytest.raises(ConfigError, match="AUTOCOMPRESS_WORKER_COUNT must be an integer >= 1"):
        validate(SearchOptions(resume=str(tmp_path), worker=True))


@pytest.mark.parametrize("count, trials, cpus, threads", [("2", 1, 8, 4), ("2", 2, 8, 2), ("4", 2, 8, 1), ("1", 3, 2, 1)])
def test_worker_threads_share_the_cores_among_every_workers_trials(monkeypatch, count, trials, cpus, threads):
    """--worker with --workers N: each of the machine's $AUTOCOMPRESS_WORKER_COUNT workers runs
    N trials at once, so a trial gets cores // (count * N) threads (at least one)."""
    from autocompress.driver import worker_threads

    monkeypatch.setenv("AUTOCOMPRESS_WORKER_COUNT", count)
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    assert worker_threads(trials) == threads
