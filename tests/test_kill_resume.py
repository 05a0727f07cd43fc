"""Kill anywhere, resume: a real `autocompress search` process kills itself with SIGKILL at
one of its own events (autocompress.faults: a trial entering a pipeline stage, a trial
just finished, the writing of the outputs at the end), then `--resume` finishes the run.
Every finished trial survives unchanged and appears once, the interrupted one is run
again, finished trials' files are whole, no temporary file is left and the outputs are
written again."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.helpers import FAST_PROFILE_YAML, TINY_DATA_SPEC, TINY_MODEL_SPEC, marked_processes

BUDGET = 4
# Every candidate fine-tunes and is quantized to int8, so each trial passes through the
# stages the kill points name; the ratios give distinct candidates for the seed below.
SPACE = """\
prune:
  ratio: {low: 0.0, high: 0.6, step: 0.05}
finetune:
  steps: [10]
  batch_size: 32
quantize:
  mode: [int8]
"""
TEMP_NAME = re.compile(r"\.tmp|^\.tmp-|\.partial")

KILL_POINTS = {
    "finetune": "finetune:1",  # trial 1 enters its fine-tune
    "quantize": "quantize:2",  # trial 2 enters quantization
    "latency": "latency:2",  # trial 2 enters latency timing
    "between_trials": "trial:1",  # trial 1 finished and stored, trial 2 not started
    "finalize": "finalize",  # the end of the search: pareto.csv written, summary.txt not yet
}


def _search(tmp_path, *extra, kill_at=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "AUTOCOMPRESS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("AUTOCOMPRESS_KILL_AT", None)
    if kill_at is not None:
        env["AUTOCOMPRESS_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "autocompress.cli", "search", "--workers", "1", "--budget", str(BUDGET), "--quiet", *map(str, extra)],
                          capture_output=True, text=True, env=env, timeout=300)


def _trials(out):
    """number -> (state, params, values, user_attrs) of every trial in the run's study."""
    import optuna

    study = optuna.load_study(study_name="autocompress", storage=f"sqlite:///{out / 'study.db'}")
    return {t.number: (t.state.name, t.params, t.values, t.user_attrs) for t in study.get_trials()}


def _temp_files(out) -> list[str]:
    return [str(p.relative_to(out)) for p in out.rglob("*") if TEMP_NAME.search(p.name)]


def _check_files_whole(out, numbers) -> None:
    """Each finished trial's model.onnx opens in ONNX Runtime and its model.pt loads."""
    import onnxruntime as ort
    import torch

    for n in numbers:
        d = out / "trials" / str(n)
        ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
        assert torch.load(d / "model.pt", map_location="cpu", weights_only=True), n


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_at_an_event_then_resume(tmp_path, point):
    space, profile, out = tmp_path / "space.yaml", tmp_path / "profile.yaml", tmp_path / "run"
    space.write_text(SPACE)
    profile.write_text(FAST_PROFILE_YAML)
    killed = _search(tmp_path, "--model", TINY_MODEL_SPEC, "--data", TINY_DATA_SPEC, "--space", space, "--profile", profile,
                     "--seed", "0", "--max-acc-drop", "100", "--out", out, kill_at=KILL_POINTS[point])
    assert killed.returncode == -9, f"the search was not killed at {KILL_POINTS[point]} (rc {killed.returncode}): {killed.stderr[-2000:]}"

    before = _trials(out)
    complete = {n: t for n, t in before.items() if t[0] == "COMPLETE"}
    running = [n for n, t in before.items() if t[0] == "RUNNING"]
    if point in ("finetune", "quantize", "latency"):  # killed inside trial k: k and no later trial started
        k = int(KILL_POINTS[point].split(":")[1])
        assert running == [k] and sorted(complete) == list(range(k)), before
    elif point == "between_trials":
        assert not running and sorted(complete) == [0, 1], before
    else:
        assert not running and len(complete) == BUDGET, before
        assert (out / "pareto.csv").is_file() and not (out / "summary.txt").exists()
    assert _temp_files(out) == []
    _check_files_whole(out, complete)

    started = time.time_ns()
    done = _search(tmp_path, "--resume", out)
    assert done.returncode == 0, done.stderr[-3000:]

    after = _trials(out)
    for n, (state, params, values, _) in complete.items():  # finished trials kept as they were
        assert after[n][:3] == (state, params, values), n
    assert sum(t[0] == "COMPLETE" for t in after.values()) == BUDGET
    assert not any(t[0] in ("RUNNING", "WAITING") for t in after.values())
    for k in running:  # the interrupted trial: marked so, and run again with its parameters
        assert after[k][0] == "FAIL" and after[k][3].get("interrupted"), after[k]
        retries = [n for n, t in after.items() if t[3].get("retry_of") == k]
        assert len(retries) == 1 and after[retries[0]][0] == "COMPLETE" and after[retries[0]][1] == before[k][1], after

    trials = pd.read_csv(out / "trials.csv")
    assert sorted(trials["number"]) == sorted(after), "each trial once in trials.csv"
    assert (trials["state"] == "COMPLETE").sum() == BUDGET
    front = pd.read_csv(out / "pareto.csv")
    assert len(front) >= 1
    import onnxruntime as ort

    for rel in front["onnx"]:
        ort.InferenceSession(str(out / rel), providers=["CPUExecutionProvider"])
    for name in ("summary.txt", "pareto.csv", "pareto.png", "trials.csv"):
        assert (out / name).stat().st_mtime_ns >= started, f"{name} was not written again"
    assert _temp_files(out) == []


def test_kill_at_spec_is_parsed_and_checked():
    from autocompress.faults import _parse

    assert _parse(None) is None and _parse("") is None
    assert _parse("finetune:2") == ("finetune", 2)
    assert _parse("finalize") == ("finalize", None)
    for bad in ("finetune:", "finetune:x", ":2"):
        with pytest.raises(ValueError, match="AUTOCOMPRESS_KILL_AT"):
            _parse(bad)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the search's processes through /proc (Linux)")
def test_sigkill_with_trials_in_worker_processes_leaves_no_orphans(tmp_path):
    """Trials in worker processes (--workers 2 --trial-timeout): the driver is killed when
    its first trial finishes, with the other worker's trial in flight. Every process it
    started ends within a few seconds (none goes on fine-tuning beside the resumed search),
    and --resume finishes the run with each finished trial once."""
    import uuid

    space, profile, out = tmp_path / "space.yaml", tmp_path / "profile.yaml", tmp_path / "run"
    # trial 0 (the int8 teacher) takes seconds; trial 1 (prune 50% + KD) fine-tunes for much longer beside it
    space.write_text(SPACE.replace("steps: [10]", "steps: [0, 1500]").replace("mode: [int8]", "mode: [fp32, int8]"))
    profile.write_text(FAST_PROFILE_YAML)
    mark = f"AUTOCOMPRESS_TEST_MARK={uuid.uuid4().hex}"
    env = {**os.environ, "AUTOCOMPRESS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "AUTOCOMPRESS_KILL_AT": "trial:0",
           mark.split("=")[0]: mark.split("=")[1]}
    argv = [sys.executable, "-m", "autocompress.cli", "search", "--workers", "2", "--trial-timeout", "600", "--budget", str(BUDGET),
            "--quiet", "--model", TINY_MODEL_SPEC, "--data", TINY_DATA_SPEC, "--space", str(space), "--profile", str(profile),
            "--seed", "0", "--sampler", "random", "--max-acc-drop", "100", "--out", str(out)]  # random: two trials at once from the start
    with open(tmp_path / "killed.log", "w") as log:  # a file, not a pipe: waiting for a pipe's end would wait for the orphans too
        killed = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        assert killed.wait(timeout=300) == -9, (tmp_path / "killed.log").read_text()[-2000:]
    assert any(t[0] == "RUNNING" for t in _trials(out).values()), "no trial was in flight in the other worker"
    deadline = time.monotonic() + 5  # the workers look for their driver once a second
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marked_processes(mark) == [], "processes of the killed search are still running"

    env.pop("AUTOCOMPRESS_KILL_AT")
    done = subprocess.run([sys.executable, "-m", "autocompress.cli", "search", "--resume", str(out), "--workers", "2", "--trial-timeout", "600",
                           "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _trials(out)
    assert sum(t[0] == "COMPLETE" for t in after.values()) == BUDGET
    assert not any(t[0] in ("RUNNING", "WAITING") for t in after.values())
    assert sorted(pd.read_csv(out / "trials.csv")["number"]) == sorted(after)
    assert _temp_files(out) == []
    assert marked_processes(mark) == []
