"""A latency measurement that hangs fails its candidate, not the search: the worker process
is killed after its timeout and a new one times the next candidate. The hang is real: the
candidate's path is a named pipe nobody writes, so ONNX Runtime blocks opening it."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest
import torch

from autocompress.errors import ConfigError
from autocompress.evaluation.latency import DEFAULT_LATENCY_TIMEOUT_S, LATENCY_TIMEOUT_ENV, LatencyWorker, latency_timeout_s
from autocompress.export import export_onnx
from autocompress.hardware import HardwareProfile
from tests.helpers import process_alive, search_args

PROFILE = HardwareProfile(name="t", warmup=1, repeats=3, passes=2, max_passes=2)


@pytest.fixture
def small_and_hanging(tmp_path):
    torch.manual_seed(0)
    small = export_onnx(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval(), (3, 8, 8), tmp_path / "small.onnx")
    hanging = tmp_path / "hanging.onnx"
    os.mkfifo(hanging)
    return small, hanging




def test_a_hung_measurement_times_out_and_the_next_one_gets_a_new_worker(small_and_hanging):
    small, hanging = small_and_hanging
    with LatencyWorker(small, PROFILE, (3, 8, 8), timeout_s=2) as worker:
        assert worker.measure(small).passes == 2
        pid = worker._proc.pid
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError, match=r"^latency worker timed out after 2 s without progress; it was killed"):
            worker.measure(hanging)
        assert 2 <= time.perf_counter() - t0 < 20
        assert not process_alive(pid)  # that process ended (and was waited for) ...
        assert worker.measure(small).passes == 2  # ... and a new one serves the next candidate
        assert worker._proc.pid != pid


def test_a_measurement_longer_than_the_timeout_goes_on_while_it_makes_progress(tmp_path):
    from autocompress.evaluation import measure_interleaved

    torch.manual_seed(0)
    model = export_onnx(torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.Conv2d(32, 32, 3)).eval(), (3, 48, 48), tmp_path / "m.onnx")
    timeout = 2.5
    probe = HardwareProfile(name="probe", warmup=1, repeats=10, passes=20, max_passes=20)
    t0 = time.perf_counter()
    measure_interleaved(model, model, probe, (3, 48, 48))
    per_pass = (time.perf_counter() - t0) / 20
    passes = int(3 * timeout / per_pass) + 1  # short blocks, three timeouts' worth of them
    many = HardwareProfile(name="many", warmup=1, repeats=10, passes=passes, max_passes=passes)
    with LatencyWorker(model, many, (3, 48, 48), timeout_s=timeout) as worker:
        t0 = time.perf_counter()
        result = worker.measure(model)
        took = time.perf_counter() - t0
    assert result.passes == passes
    assert took > 1.5 * timeout, f"the measurement took {took:.1f} s: too short to show anything"


def test_the_timeout_comes_from_the_environment_and_is_checked(monkeypatch, small_and_hanging):
    monkeypatch.delenv(LATENCY_TIMEOUT_ENV, raising=False)
    assert latency_timeout_s() == DEFAULT_LATENCY_TIMEOUT_S == 300
    monkeypatch.setenv(LATENCY_TIMEOUT_ENV, "7.5")
    assert latency_timeout_s() == 7.5 and LatencyWorker(small_and_hanging[0], PROFILE, (3, 8, 8)).timeout_s == 7.5
    for bad in ("0", "-1", "abc", "inf"):
        monkeypatch.setenv(LATENCY_TIMEOUT_ENV, bad)
        with pytest.raises(ConfigError, match=rf"\$AUTOCOMPRESS_LATENCY_TIMEOUT must be a number of seconds > 0, got '{bad}'"):
            latency_timeout_s()
    with pytest.raises(ValueError, match="timeout_s must be a number of seconds > 0"):
        LatencyWorker(small_and_hanging[0], PROFILE, (3, 8, 8), timeout_s=0)


def test_in_a_search_the_hung_candidate_fails_and_the_others_are_timed(cli_inputs, tmp_path, capsys, monkeypatch, small_and_hanging):
    """Trial 1's file is swapped for the pipe on its way to the worker: that trial fails with
    the timeout, the trials before and after it complete."""
    from autocompress.cli import main
    from autocompress.evaluation.latency import CachedLatency

    _, hanging = small_and_hanging
    measure = CachedLatency.measure

    def hang_trial_1(self, path, *, fresh=False):
        if f"{os.sep}trials{os.sep}1{os.sep}" in str(path):
            return self._worker.measure(hanging, screen=not fresh)
        return measure(self, path, fresh=fresh)

    monkeypatch.setattr(CachedLatency, "measure", hang_trial_1)
    monkeypatch.setenv(LATENCY_TIMEOUT_ENV, "3")
    out = tmp_path / "run"
    assert main(search_args(cli_inputs, "--budget", 3, "--out", out)) == 0
    trials = pd.read_csv(out / "trials.csv").set_index("number")
    assert trials.loc[1, "state"] == "FAIL"
    assert trials.loc[1, "failure_reason"].startswith("latency: TimeoutError: latency worker timed out after 3 s without progress")
    assert list(trials.loc[[0, 2], "state"]) == ["COMPLETE", "COMPLETE"]
    assert "FAILED: latency: TimeoutError: latency worker timed out after 3 s" in capsys.readouterr().out
