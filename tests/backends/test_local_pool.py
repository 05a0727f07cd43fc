"""Several trials at once on this machine (backends.local_pool): the turn-taking of the
workers' computing and the driver's latency measurements, and real searches with two
worker processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import optuna
import pandas as pd
import pytest

from autocompress.backends.local_pool import WORKERS_ENV, PoolGate, QuietBoard, default_workers, threads_per_worker
from autocompress.errors import ConfigError
from tests.helpers import FAST_PROFILE_YAML, FIXTURES, SPACE_YAML, TINY_DATA_SPEC, TINY_MODEL_SPEC


# --------------------------------------------------------------------------- defaults


def test_trials_run_one_at_a_time_unless_asked_and_share_the_cores(monkeypatch):
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert default_workers() == 1
    assert threads_per_worker(2, cpus=2) == 1 and threads_per_worker(2, cpus=8) == 4 and threads_per_worker(4, cpus=2) == 1


def test_the_environment_sets_the_default_and_a_bad_value_is_refused(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert default_workers() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv(WORKERS_ENV, bad)
        with pytest.raises(ConfigError, match=f"{WORKERS_ENV} must be an integer >= 1, got '{bad}'"):
            default_workers()


# --------------------------------------------------------------------------- taking turns


def test_a_measurement_waits_until_no_worker_computes_and_workers_wait_for_it():
    board = QuietBoard(2)
    gates = [PoolGate(board, 0), PoolGate(board, 1)]
    events: list[tuple[str, float]] = []
    stop = threading.Event()

    def work(gate: PoolGate, name: str) -> None:
        with gate.busy():
            while not stop.is_set():
                events.append((name, time.time()))  # "computing" while it holds the board
                time.sleep(0.002)
                gate.step()

    threads = [threading.Thread(target=work, args=(g, f"w{i}")) for i, g in enumerate(gates)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    assert board.computing() == [0, 1]
    board.request()
    deadline = time.monotonic() + 5
    while board.computing():  # both step aside at their next step
        assert time.monotonic() < deadline, "the workers did not step aside"
        time.sleep(0.001)
    m0 = time.time()
    time.sleep(0.05)  # the measurement: nothing computes meanwhile
    m1 = time.time()
    board.release()
    time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    inside = [e for e in events if m0 <= e[1] <= m1]
    assert not inside, f"{len(inside)} compute steps during the measurement"
    assert {n for n, ts in events if ts > m1} == {"w0", "w1"}  # both went on after it
    assert board.computing() == []
    # each gate's windows: what it computed, none overlapping the measurement
    for g in gates:
        assert g.windows and all(not (m0 < b1 and b0 < m1) for b0, b1 in g.windows)


def test_a_paused_worker_does_not_hold_up_a_measurement():
    board = QuietBoard(1)
    gate = PoolGate(board, 0)
    with gate.busy():
        assert board.computing() == [0]
        with gate.paused():  # e.g. waiting for the driver's answer
            assert board.computing() == []
        assert board.computing() == [0]
    assert board.computing() == []


# --------------------------------------------------------------------------- searches


def _search(tmp_path, *extra, model=TINY_MODEL_SPEC, data=TINY_DATA_SPEC, task=None, space=SPACE_YAML, env=None, timeout=600):
    (tmp_path / "space.yaml").write_text(space)
    (tmp_path / "profile.yaml").write_text(FAST_PROFILE_YAML)
    source = ["--task", task] if task is not None else ["--model", model, "--data", data]
    cmd = [sys.executable, "-m", "autocompress.cli", "search", *source,
           "--space", str(tmp_path / "space.yaml"), "--profile", str(tmp_path / "profile.yaml"), *map(str, extra)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "AUTOCOMPRESS_CACHE": str(tmp_path / "cache"), **(env or {})})


def test_two_workers_build_the_trials_and_no_measurement_overlaps_their_work(tmp_path):
    out = tmp_path / "run"  # the task from a --task file: each worker loads it again (the dying task below: --model/--data)
    done = _search(tmp_path, "--budget", 6, "--workers", 2, "--out", out, task=f"{FIXTURES / 'tiny_task.py'}:build_task")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Trials: 2 at a time in worker processes (1 thread each" in done.stdout
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 6 and (trials["state"] == "COMPLETE").all(), trials[["state", "failure_reason"]].to_string()
    built = trials[trials["duplicate_of"].isna()] if "duplicate_of" in trials else trials
    assert set(built["worker"]) == {0, 1}  # both workers built candidates
    for rel in pd.read_csv(out / "pareto.csv")["onnx"]:
        assert (out / rel).is_file()
    study = optuna.load_study(study_name="autocompress", storage=f"sqlite:///{out / 'study.db'}")
    busy = [(t.number, tuple(w)) for t in study.trials for w in t.user_attrs.get("busy_windows", [])]
    timed = [(t.number, tuple(w)) for t in study.trials for w in t.user_attrs.get("measure_windows", [])]
    assert busy and len(timed) >= len(built)
    for n, (m0, m1) in timed:
        for k, (b0, b1) in busy:
            assert not (m0 < b1 and b0 < m1), f"trial {n}'s measurement {m0:.3f}-{m1:.3f} overlaps trial {k}'s work {b0:.3f}-{b1:.3f}"
    # ... while two trials did compute at the same time otherwise
    assert any(a != b and w[0] < v[1] and v[0] < w[1] for a, w in busy for b, v in busy)
    import json

    timing = json.loads((out / "run.json").read_text())["timing"][-1]
    assert timing["workers"] == 2 and timing["quiet_wait_s"] >= 0


DYING = str(FIXTURES / "dying_task.py")


def test_a_worker_that_dies_fails_its_trial_and_the_search_goes_on(tmp_path):
    """Every candidate with a fine-tune kills its worker process: those trials fail with
    the reason, the worker is restarted, the others finish."""
    out, marker = tmp_path / "run", tmp_path / "died"
    done = _search(tmp_path, "--budget", 5, "--workers", 2, "--out", out, model=f"{DYING}:build_model", data=f"{DYING}:build_data",
                   env={"DYING_TASK_MARKER": str(marker), "DYING_TASK_ALWAYS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert marker.is_file()  # a worker process really died
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 5
    died = trials[trials["state"] == "FAIL"]
    assert len(died) >= 1 and died["failure_reason"].str.contains("the trial's process died").all()
    assert (trials.loc[trials["state"] == "COMPLETE", "param.finetune.steps"] == 0).all()
    assert (trials["state"] == "COMPLETE").sum() >= 1


def test_workers_are_refused_with_a_bad_count_or_beside_ray(tmp_path):
    for extra, message in ((["--workers", 0], "--workers must be >= 1, got 0"),
                           (["--workers", 2, "--backend", "ray"], "--workers is for the local backend; with --backend ray use --max-concurrent")):
        done = _search(tmp_path, "--budget", 2, "--out", tmp_path / "never", *extra)
        assert done.returncode == 2 and done.stderr.strip().splitlines() == [f"autocompress: error: {message}"], done.stderr
        assert not (tmp_path / "never").exists()


def test_a_free_worker_waits_while_the_structured_start_waits_for_its_trial_in_flight(tmp_path):
    from autocompress.backends.study import RunStudy
    from autocompress.space import load_space
    from tests.backends.test_trial_sequence import _demo_binding

    space, _ = load_space("default").bind(*_demo_binding())
    rs = RunStudy(f"sqlite:///{tmp_path / 'study.db'}", space, climb_limit=1.0)
    rs.open(new=True)
    asked = [rs.study.ask() for _ in range(2)]  # two of the three hand recipes in flight, one queued
    assert not rs.climb_in_flight(budget=30)  # the queued recipe is for the free worker
    asked.append(rs.study.ask())
    assert all("recipe" in t.user_attrs for t in asked)
    assert rs.climb_in_flight(budget=30)  # nothing queued; the climb's next round waits for them
    assert not rs.climb_in_flight(budget=3)  # ... unless the climb has no share of the budget left
    for t in asked:
        rs.study.tell(t, [0.9, 0.5, 1000.0])
    assert not rs.climb_in_flight(budget=30)  # nothing in flight: the climb plans (or the sampler samples)
    assert not RunStudy(f"sqlite:///{tmp_path / 'other.db'}", space, climb_limit=None).climb_in_flight(budget=30)
