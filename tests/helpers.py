"""Constants and small helpers shared by the tests."""

from __future__ import annotations

import os
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
FIXTURES = TESTS_DIR / "fixtures"
TINY_TASK = FIXTURES / "tiny_task.py"
TINY_MODEL_SPEC = f"{TINY_TASK}:build_model"
TINY_DATA_SPEC = f"{TINY_TASK}:build_data"

FAST_PROFILE_YAML = "name: fast\nwarmup: 2\nrepeats: 5\npasses: 3\nmax_passes: 3\n"

# A small search space for end-to-end runs: few fine-tune steps, three prune ratios.
SPACE_YAML = """\
prune:
  ratio: {low: 0.0, high: 0.5, step: 0.25}
finetune:
  steps: [0, 10]
  batch_size: 32
quantize:
  mode: [fp32, int8]
"""


def search_args(inputs, *extra) -> list[str]:
    """argv for `autocompress search` on the tiny task with the given space/profile files."""
    return ["search", "--model", TINY_MODEL_SPEC, "--data", TINY_DATA_SPEC, "--profile", str(inputs.profile),
            "--space", str(inputs.space), *map(str, extra)]


def state_snapshot(model):
    """Detached copies of every tensor in a state_dict, to compare with later."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_state_equal(model, snapshot):
    now = model.state_dict()
    assert list(now) == list(snapshot)
    for k, v in snapshot.items():
        assert now[k].shape == v.shape, k
        assert now[k].dtype == v.dtype, k
        assert now[k].equal(v), k


def complete_trials(storage: str) -> dict[int, tuple]:
    """number -> values of the COMPLETE trials of a run's study ({} before it exists)."""
    import optuna

    try:
        study = optuna.load_study(study_name="autocompress", storage=storage)
    except Exception:  # noqa: BLE001 - the study may not exist yet
        return {}
    return {t.number: tuple(t.values) for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}


def wait_for_complete(proc, storage: str, n: int, timeout: float) -> None:
    """Poll until the search in `proc` has `n` finished trials; fail if it ends first or
    `timeout` seconds pass."""
    import time

    deadline = time.monotonic() + timeout
    while len(complete_trials(storage)) < n:
        assert proc.poll() is None, "the search ended before it could be stopped"
        assert time.monotonic() < deadline, f"no {n} finished trials within {timeout} s"
        time.sleep(0.2)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def marked_processes(mark: str) -> list[int]:
    """Pids of the live processes whose environment holds `mark` ("NAME=VALUE" set for a search: the search
    and every process it started, which inherit it; through /proc, Linux)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if mark.encode() in f.read():
                    with open(f"/proc/{d}/stat") as s:
                        if s.read().split(") ", 1)[1].split()[0] != "Z":  # a zombie has ended
                            pids.append(int(d))
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return pids


def first_trial_off_the_front(run_dir) -> int:
    """The number of a completed, non-duplicate trial of the run that is not on its front
    (its files were not kept); skips the test when every completed trial is on the front."""
    import pandas as pd
    import pytest

    trials = pd.read_csv(Path(run_dir) / "trials.csv")
    off = trials[~trials["pareto"] & trials["state"].eq("COMPLETE") & trials["duplicate_of"].isna()]
    if off.empty:
        pytest.skip("every completed trial of this run is on its front")
    return int(off["number"].iloc[0])
