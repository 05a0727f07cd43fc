"""The Ray Tune backend end to end on a local Ray instance started by the run: the same
run directory as the local backend, and a SIGKILLed driver resumed without losing a
finished trial. Marked `ray` (each search starts Ray: ~10 s, plus ~5 s per trial)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pandas as pd
import pytest

from tests.helpers import (FIXTURES, FAST_PROFILE_YAML, SPACE_YAML, TINY_DATA_SPEC, TINY_MODEL_SPEC, complete_trials, marked_processes,
                           wait_for_complete)

pytestmark = pytest.mark.ray


def _args(tmp_path, *extra):
    space, profile = tmp_path / "space.yaml", tmp_path / "profile.yaml"
    space.write_text(SPACE_YAML)
    profile.write_text(FAST_PROFILE_YAML)
    return [sys.executable, "-m", "autocompress.cli", "search", "--model", TINY_MODEL_SPEC, "--data", TINY_DATA_SPEC,
            "--space", str(space), "--profile", str(profile), *map(str, extra)]


def _env(tmp_path):
    return {**os.environ, "AUTOCOMPRESS_CACHE": str(tmp_path / "cache")}


def test_ray_backend_writes_the_same_run_directory(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(_args(tmp_path, "--backend", "ray", "--budget", 4, "--max-concurrent", 2, "--out", out),
                          capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("trials.csv", "pareto.csv", "pareto.png", "summary.txt", "run.json", "study.db", "space.yaml", "profile.yaml"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["backend"] == "ray" and manifest["ray"]["max_concurrent"] == 2
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4 and set(trials["state"]) <= {"COMPLETE", "FAIL"}
    assert (trials["state"] == "COMPLETE").sum() >= 3
    done_trials = trials[trials["state"] == "COMPLETE"]
    assert done_trials["description"].notna().all() and (done_trials["latency_ratio"] > 0).all()
    assert (done_trials["t_finetune"] >= 0).all()  # stage times travel back from the trial processes
    # one node: the latency service and the trials ran where the driver is
    assert done_trials["latency_node"].nunique() == 1 and (done_trials["trial_node"] == done_trials["latency_node"]).all()
    front = pd.read_csv(out / "pareto.csv")
    assert len(front) >= 1
    for rel in front["onnx"]:
        assert (out / rel).is_file()  # written by the artifact sink on the driver's node
    assert "Pareto front" in done.stdout and "╭" not in done.stdout  # our progress, not Tune's tables
    # the study is a plain Optuna study: every later command reads it like a local run
    study = optuna.load_study(study_name="autocompress", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 4 + sum(t.state.name == "WAITING" for t in study.trials)
    # one machine: a latency measurement never overlapped any trial's computing (wall-clock intervals)
    busy = [(t.number, tuple(w)) for t in study.trials for w in t.user_attrs.get("busy_windows", [])]
    timed = [(t.number, tuple(w)) for t in study.trials for w in t.user_attrs.get("measure_windows", [])]
    assert busy and timed
    for n, (m0, m1) in timed:
        for k, (b0, b1) in busy:
            assert not (m0 < b1 and b0 < m1), f"trial {n}'s measurement {m0:.3f}-{m1:.3f} overlaps trial {k}'s work {b0:.3f}-{b1:.3f}"
    # ... while the two trials did compute at the same time otherwise
    assert any(a != b and w[0] < v[1] and v[0] < w[1] for a, w in busy for b, v in busy)


def test_a_killed_ray_driver_resumes_without_losing_a_finished_trial(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_args(tmp_path, "--backend", "ray", "--budget", 30, "--max-concurrent", 1, "--out", out),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(tmp_path), start_new_session=True)
    storage = f"sqlite:///{out / 'study.db'}"
    try:
        wait_for_complete(proc, storage, 2, timeout=300)
    finally:
        proc.send_signal(signal.SIGKILL)  # the driver only; its local Ray instance is reaped with it
        proc.wait()
    before = complete_trials(storage)
    budget = len(before) + 2
    done = subprocess.run([sys.executable, "-m", "autocompress.cli", "search", "--resume", str(out), "--budget", str(budget)],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    after = complete_trials(storage)
    assert all(after.get(n) == v for n, v in before.items()), "a finished trial changed or vanished"
    trials = pd.read_csv(out / "trials.csv")
    assert set(before) <= set(trials.loc[trials["state"] == "COMPLETE", "number"])
    interrupted = trials["interrupted"].fillna(False).astype(bool) if "interrupted" in trials else False
    assert ((trials["state"] == "COMPLETE") | ((trials["state"] == "FAIL") & ~interrupted)).sum() == budget
    assert json.loads((out / "run.json").read_text())["backend"] == "ray"


DYING = str(FIXTURES / "dying_task.py")
FINETUNE_ONLY = "finetune:\n  steps: 5\n  batch_size: 32\n"


@pytest.mark.parametrize("always", [False, True])
def test_a_trial_whose_process_dies_is_retried_or_recorded_as_failed(tmp_path, always):
    space, profile, out, marker = tmp_path / "space.yaml", tmp_path / "profile.yaml", tmp_path / "run", tmp_path / "died"
    space.write_text(FINETUNE_ONLY)
    profile.write_text(FAST_PROFILE_YAML)
    mark = f"AUTOCOMPRESS_TEST_MARK={uuid.uuid4().hex}"  # inherited by the driver, its Ray instance and every worker
    env = {**_env(tmp_path), "DYING_TASK_MARKER": str(marker), "DYING_TASK_ALWAYS": "1" if always else "0", **dict([mark.split("=")])}
    with open(tmp_path / "search.log", "w") as log:  # a file, not a pipe: the driver's end is what is waited for
        proc = subprocess.Popen(
            [sys.executable, "-m", "autocompress.cli", "search", "--model", f"{DYING}:build_model", "--data", f"{DYING}:build_data",
             "--space", str(space), "--profile", str(profile), "--budget", "1", "--out", str(out), "--backend", "ray"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        assert proc.wait(timeout=600) == 0, (tmp_path / "search.log").read_text()[-3000:]
    assert marker.is_file()  # a trial process really died
    deadline = time.monotonic() + 10  # after the run: no Ray process of its own instance is left (agents included)
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: open(f"/proc/{pid}/cmdline").read().replace("\0", " ")[:100] for pid in marked_processes(mark)}
    assert not left, left
    (trial,) = pd.read_csv(out / "trials.csv").to_dict("records")
    if always:  # died on the first try and on the retry: failed, with the reason
        assert trial["state"] == "FAIL" and "process failed" in trial["failure_reason"]
    else:  # died once, the retry finished it
        assert trial["state"] == "COMPLETE" and trial["val_accuracy"] > 0


def test_ctrl_c_stops_the_ray_search_cleanly_and_keeps_what_finished(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_args(tmp_path, "--backend", "ray", "--budget", 30, "--out", out),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    storage = f"sqlite:///{out / 'study.db'}"
    wait_for_complete(proc, storage, 2, timeout=300)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted; finished trials are saved (resume with --resume RUN_DIR)" in err
    trials = pd.read_csv(out / "trials.csv")
    assert (trials["state"] == "COMPLETE").sum() >= 2 and "RUNNING" not in set(trials["state"])
    cut = trials[trials["failure_reason"].fillna("").str.startswith("interrupted")]
    study = optuna.load_study(study_name="autocompress", storage=storage)
    waiting = [t for t in study.trials if t.state.name == "WAITING"]
    assert {t.user_attrs["retry_of"] for t in waiting if "retry_of" in t.user_attrs} == set(cut["number"])  # run again on --resume
    assert (out / "pareto.csv").is_file() and (out / "summary.txt").is_file()


def test_the_demo_runs_on_the_ray_backend(tmp_path):
    """The built-in demo is loaded by name in the trial processes, not from files."""
    space, out = tmp_path / "space.yaml", tmp_path / "run"
    space.write_text("prune:\n  ratio: [0.0, 0.5]\nquantize:\n  mode: [fp32, int8]\n")
    (tmp_path / "profile.yaml").write_text(FAST_PROFILE_YAML)
    done = subprocess.run(
        [sys.executable, "-m", "autocompress.cli", "search", "--space", str(space), "--profile", str(tmp_path / "profile.yaml"),
         "--budget", "2", "--out", str(out), "--backend", "ray"],
        capture_output=True, text=True, env=_env(tmp_path), timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE", "COMPLETE"], trials.get("failure_reason")
    assert (trials["val_accuracy"] > 0.5).all()


def test_a_device_table_predicts_next_to_the_measurements_in_ray_trials(tmp_path):
    """--table on the Ray backend: the table travels to the trial processes, which record
    its prediction for the file they built next to the latency the service measured."""
    table, out = tmp_path / "table.json", tmp_path / "run"
    args = _args(tmp_path)
    made = subprocess.run([*args[:3], "profile-device", *args[4:], "--samples", "2", "--out", str(table)],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    assert made.returncode == 0, made.stderr[-3000:]
    done = subprocess.run(_args(tmp_path, "--backend", "ray", "--budget", 3, "--table", table, "--out", out),
                          capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = pd.read_csv(out / "trials.csv")
    built = trials[(trials["state"] == "COMPLETE") & trials["duplicate_of"].isna()]
    assert len(built) >= 2 and (built["latency_source"] == "measured").all()
    assert (built["latency_ratio_predicted"] > 0).all() and (built["predicted_nodes_estimated"] >= 0).all()
    assert (built["macs_ratio"] > 0).all()
    assert json.loads((out / "run.json").read_text())["latency"]["table"] == str(table.resolve())


def test_multi_fidelity_on_ray_prunes_stopped_candidates_and_keeps_them_off_the_front(tmp_path):
    """Rung decisions come from one board actor; a stopped trial ends PRUNED (Ray's
    OptunaSearch alone would have told COMPLETE with its last report)."""
    out = tmp_path / "run"
    args = _args(tmp_path, "--backend", "ray", "--budget", 6, "--max-concurrent", 2, "--fidelity", "4,10", "--reduction-factor", 4, "--out", out)
    space = tmp_path / "space.yaml"  # a searched learning rate: few duplicates; every candidate fine-tuned, so every one goes through the rungs
    space.write_text(SPACE_YAML.replace("  batch_size: 32\n", "  batch_size: 32\n  lr: {low: 1.0e-4, high: 3.0e-3, log: true}\n")
                     .replace("steps: [0, 10]", "steps: [10]"))
    done = subprocess.run(args, capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="autocompress", storage=f"sqlite:///{out / 'study.db'}")
    finished = [t for t in study.trials if t.state.name != "WAITING"]
    assert len(finished) == 6 and {t.state.name for t in finished} <= {"COMPLETE", "PRUNED", "FAIL"}
    pruned = [t for t in finished if t.state.name == "PRUNED"]
    assert pruned, [t.user_attrs.get("rung_results") for t in finished]
    for t in pruned:
        assert t.values is None and t.user_attrs["rung_results"][0]["promoted"] is False
    for t in finished:
        if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs:
            assert t.user_attrs["rung_results"][0]["promoted"] is True
    # one board for all trials: every decision saw the results reported before it
    ns = sorted(t.user_attrs["rung_results"][0]["of"] for t in finished if "duplicate_of" not in t.user_attrs and "rung_results" in t.user_attrs)
    assert ns[-1] == len(ns)
    front = pd.read_csv(out / "pareto.csv")
    assert set(front["number"]) <= {t.number for t in finished if t.state.name == "COMPLETE"}
