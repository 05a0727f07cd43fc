"""A driver killed with SIGKILL mid-search loses no finished trial: the real CLI in a
subprocess, killed, then resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pandas as pd

from tests.helpers import FAST_PROFILE_YAML, TINY_DATA_SPEC, TINY_MODEL_SPEC, complete_trials, wait_for_complete

SLOW_TRIALS_SPACE = """\
prune:
  ratio: {low: 0.0, high: 0.6, step: 0.05}
finetune:
  steps: [150, 200]
  batch_size: 32
"""


def test_sigkill_mid_search_then_resume_loses_nothing(tmp_path):
    space, profile, out = tmp_path / "space.yaml", tmp_path / "profile.yaml", tmp_path / "run"
    space.write_text(SLOW_TRIALS_SPACE)
    profile.write_text(FAST_PROFILE_YAML)
    args = [sys.executable, "-m", "autocompress.cli", "search", "--model", TINY_MODEL_SPEC, "--data", TINY_DATA_SPEC,
            "--space", str(space), "--profile", str(profile)]
    proc = subprocess.Popen([*args, "--budget", "50", "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "AUTOCOMPRESS_CACHE": str(tmp_path / "cache")})
    storage = f"sqlite:///{out / 'study.db'}"
    try:
        wait_for_complete(proc, storage, 3, timeout=120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = complete_trials(storage)
    assert len(before) >= 3

    done = subprocess.run([*args[:3], "search", "--resume", str(out), "--budget", str(len(before) + 2)],
                          capture_output=True, text=True, env={**os.environ, "AUTOCOMPRESS_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    after = complete_trials(storage)
    assert all(after.get(n) == v for n, v in before.items()), "a finished trial changed or vanished"
    assert len(after) >= len(before) + 2
    trials = pd.read_csv(out / "trials.csv")
    assert set(before) <= set(trials.loc[trials["state"] == "COMPLETE", "number"])
    assert (out / "pareto.csv").is_file() and (out / "summary.txt").is_file()
