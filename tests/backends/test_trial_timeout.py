"""--trial-timeout: a trial that runs over it fails as timed out, its worker process is
ended and started again, and the search goes on (backends.local_pool with one worker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd

from tests.helpers import FAST_PROFILE_YAML, FIXTURES, SPACE_YAML, process_alive

HANGING = str(FIXTURES / "hanging_task.py")




def test_a_trial_over_the_timeout_fails_its_process_is_ended_and_the_next_trial_runs(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    (tmp_path / "profile.yaml").write_text(FAST_PROFILE_YAML)
    out, marker = tmp_path / "run", tmp_path / "hung"
    cmd = [sys.executable, "-m", "autocompress.cli", "search", "--model", f"{HANGING}:build_model", "--data", f"{HANGING}:build_data",
           "--space", str(tmp_path / "space.yaml"), "--profile", str(tmp_path / "profile.yaml"),
           "--budget", "3", "--trial-timeout", "15s", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "AUTOCOMPRESS_CACHE": str(tmp_path / "cache"), "HANGING_TASK_MARKER": str(marker)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Trials: one at a time in a worker process; a trial over --trial-timeout 15 s fails and its process is restarted" in done.stdout
    assert not process_alive(int(marker.read_text()))  # the hung trial's process was ended
    trials = pd.read_csv(out / "trials.csv").set_index("number")
    assert len(trials) == 3
    # the hand recipes: int8 teacher (no fine-tune), then two with a fine-tune: the first hangs, the second runs in the new process
    assert trials.loc[1, "state"] == "FAIL"
    assert trials.loc[1, "failure_reason"] == "timed out after 15 s (--trial-timeout); its worker process was ended and restarted"
    assert 15 <= trials.loc[1, "t_total"] < 90
    assert list(trials.loc[[0, 2], "state"]) == ["COMPLETE", "COMPLETE"] and trials.loc[2, "param.finetune.steps"] > 0
    assert set(trials["worker"]) == {0}
    assert json.loads((out / "run.json").read_text())["timing"][-1]["workers"] == 1


def test_the_trial_timeout_is_refused_where_it_cannot_apply(tmp_path, capsys):
    from autocompress.cli import main

    for extra, message in ((["--trial-timeout", "0"], "--trial-timeout must be a number of seconds > 0, got 0.0"),
                           (["--trial-timeout", "5", "--backend", "ray"], "--trial-timeout is for the local backend")):
        assert main(["search", "--budget", "1", "--out", str(tmp_path / "never"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"autocompress: error: {message}")
        assert not (tmp_path / "never").exists()
