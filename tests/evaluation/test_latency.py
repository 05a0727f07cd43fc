"""Latency as a ratio to an interleaved reference: the pure summary on synthetic block
timings, and real ONNX Runtime measurements with loose bounds."""

from __future__ import annotations

import numpy as np
import os

import pytest
import torch
from torch import nn

from autocompress.evaluation import LatencyResult, measure_interleaved, summarize_interleaved
from autocompress.export import export_onnx
from autocompress.hardware import HardwareProfile

# --------------------------------------------------------------------------- pure summary


def test_summary_of_synthetic_blocks():
    ref = [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [1.0, 1.0, 1.0]]
    cand = [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0], [3.0, 3.0, 3.0]]
    r = summarize_interleaved(ref, cand)  # per-pass ratios 2, 1, 3
    assert r.ratio == pytest.approx(2.0)
    assert r.ratio_spread == pytest.approx((3 - 1) / 2 / 2)
    assert r.candidate_median_ms == pytest.approx(2000.0)
    assert r.reference_median_ms == pytest.approx(1000.0)
    all_cand = np.array([2.0] * 6 + [3.0] * 3) * 1e3
    assert r.candidate_p90_ms == pytest.approx(np.percentile(all_cand, 90))
    p10, p90 = np.percentile(all_cand, [10, 90])
    assert r.candidate_spread == pytest.approx((p90 - p10) / 2000.0)
    assert r.passes == 3
    assert set(r.to_dict()) == {f for f in LatencyResult.__dataclass_fields__}


def test_ratio_is_the_median_of_per_pass_ratios_not_the_ratio_of_medians():
    ref = [[1.0], [10.0], [10.0]]
    cand = [[3.0], [20.0], [5.0]]  # per-pass ratios 3, 2, 0.5 -> median 2
    r = summarize_interleaved(ref, cand)
    assert r.ratio == pytest.approx(2.0)
    assert np.median(np.concatenate(cand)) / np.median(np.concatenate(ref)) == pytest.approx(0.5)  # the other answer


def test_drift_between_passes_cancels():
    rng = np.random.default_rng(0)
    drift = [1.0, 1.7, 0.6, 2.5, 1.1]  # the machine's speed wanders between passes
    ref = [list(0.001 * d * (1 + 0.001 * rng.random(20))) for d in drift]
    cand = [list(0.0025 * d * (1 + 0.001 * rng.random(20))) for d in drift]
    r = summarize_interleaved(ref, cand)
    assert r.ratio == pytest.approx(2.5, rel=2e-3)
    assert r.ratio_spread < 2e-3


def test_summary_rejects_mismatched_or_empty_blocks():
    with pytest.raises(ValueError):
        summarize_interleaved([], [])
    with pytest.raises(ValueError):
        summarize_interleaved([[1.0], [1.0]], [[1.0]])


# --------------------------------------------------------------------------- stopping rule (fake clock)


class FakeModels:
    """Two 'models' whose runs advance a fake clock: the reference takes 1 ms, the
    candidate `ratio` ms times a per-run noise factor drawn from `noise`."""

    def __init__(self, ratio: float, noise: float, seed: int = 0):
        self.t = 0.0
        self.ratio, self.noise = ratio, noise
        self.rng = np.random.default_rng(seed)

    def clock(self) -> float:
        return self.t

    def run_ref(self) -> None:
        self.t += 1e-3

    def run_cand(self) -> None:
        self.t += 1e-3 * self.ratio * (1 + self.noise * self.rng.standard_normal())


def test_median_interval_uses_binomial_order_statistics():
    from autocompress.evaluation.latency import median_interval

    assert all(np.isnan(median_interval([1.0, 2.0, 3.0, 4.0, 5.0])))  # n = 5: no 95% interval exists
    assert median_interval([5.0, 1.0, 4.0, 2.0, 3.0, 7.0, 6.0]) == (1.0, 7.0)  # n = 7: min and max (98.4%)
    assert median_interval(list(range(1, 21))) == (6.0, 15.0)  # n = 20: k = 6 (P(B < 6) = 2.1% <= 2.5% < P(B < 7))


def test_a_quiet_measurement_stops_at_the_minimum_passes():
    from autocompress.evaluation.latency import time_interleaved

    m = FakeModels(ratio=0.5, noise=0.001)
    p = HardwareProfile(name="t", warmup=3, repeats=10, passes=7, max_passes=31, target_ci=0.03)
    r = time_interleaved(m.run_ref, m.run_cand, p, clock=m.clock)
    assert r.passes == 7 and r.converged
    assert r.ratio == pytest.approx(0.5, rel=0.01) and r.ratio_low <= r.ratio <= r.ratio_high
    assert r.ci_halfwidth <= 0.03 and not r.not_faster


def test_a_noisy_measurement_goes_on_until_the_interval_is_tight_or_max_passes():
    from autocompress.evaluation.latency import time_interleaved

    noisy = HardwareProfile(name="t", warmup=3, repeats=3, passes=7, max_passes=25, target_ci=0.03)
    m = FakeModels(0.8, 0.4)
    r = time_interleaved(m.run_ref, m.run_cand, noisy, clock=m.clock)
    assert r.passes == 25 and not r.converged and r.ci_halfwidth > 0.03  # gave up at max_passes
    loose = HardwareProfile(name="t", warmup=3, repeats=3, passes=7, max_passes=25, target_ci=0.5)
    m2 = FakeModels(0.8, 0.4)
    r2 = time_interleaved(m2.run_ref, m2.run_cand, loose, clock=m2.clock)
    assert r2.converged and 7 <= r2.passes < 25 and r2.ci_halfwidth <= 0.5


def test_not_faster_means_the_interval_reaches_one():
    from autocompress.evaluation.latency import time_interleaved

    p = HardwareProfile(name="t", warmup=3, repeats=10, passes=7, max_passes=9)
    same = FakeModels(1.0, 0.05)
    assert time_interleaved(same.run_ref, same.run_cand, p, clock=same.clock).not_faster  # equal speed: not faster
    slower = FakeModels(1.3, 0.01)
    assert time_interleaved(slower.run_ref, slower.run_cand, p, clock=slower.clock).not_faster
    faster = FakeModels(0.9, 0.01)
    assert not time_interleaved(faster.run_ref, faster.run_cand, p, clock=faster.clock).not_faster  # 10% faster, 1% noise


# --------------------------------------------------------------------------- real ORT


class ConvNet(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


@pytest.fixture(scope="module")
def conv_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("latency")
    torch.manual_seed(0)
    small = export_onnx(ConvNet(16).eval(), (3, 24, 24), d / "small.onnx")
    big = export_onnx(ConvNet(32).eval(), (3, 24, 24), d / "big.onnx")  # ~4x the multiply-adds
    return small, big


PROFILE = HardwareProfile(name="test", warmup=5, repeats=15, passes=5, max_passes=5)


def test_a_model_against_itself_has_ratio_near_one(conv_models):
    small, _ = conv_models
    r = measure_interleaved(small, small, PROFILE, (3, 24, 24))
    assert 0.5 < r.ratio < 2.0
    assert r.passes == PROFILE.passes
    assert r.candidate_median_ms > 0 and r.reference_median_ms > 0
    assert r.candidate_p90_ms >= r.candidate_median_ms


def test_a_four_times_bigger_model_is_slower(conv_models):
    small, big = conv_models
    r = measure_interleaved(small, big, PROFILE, (3, 24, 24))
    assert r.ratio > 1.0
    assert r.candidate_median_ms > r.reference_median_ms
    inverse = measure_interleaved(big, small, PROFILE, (3, 24, 24))
    assert inverse.ratio < 1.0


def test_reference_session_is_reused_and_batch_size_honoured(conv_models):
    small, big = conv_models
    profile = HardwareProfile(name="b4", warmup=1, repeats=3, passes=2, max_passes=2, batch_size=4)
    ref_sess = profile.session(big)
    r = measure_interleaved("/nonexistent/reference.onnx", small, profile, (3, 24, 24), reference_session=ref_sess)
    assert r.passes == 2 and r.ratio < 1.0  # timed against the given (big) session, not the path


def test_balanced_repeats_matches_block_durations():
    from autocompress.evaluation.latency import balanced_repeats

    assert balanced_repeats(40, 0.4e-3, 0.1e-3) == 160  # 4x faster candidate: 4x the runs
    assert balanced_repeats(40, 0.1e-3, 0.4e-3) == 10
    assert balanced_repeats(40, 1.0, 1e-9) == 800  # capped at 20x
    assert balanced_repeats(40, 1e-9, 1.0) == 2  # at least repeats / 20
    assert balanced_repeats(40, 1.0, 0.0) == 800


def test_latency_worker_times_in_its_own_process_and_survives_errors(conv_models):
    from autocompress.evaluation import LatencyWorker

    small, big = conv_models
    with LatencyWorker(small, PROFILE, (3, 24, 24)) as worker:
        r = worker.measure(big)
        assert r.ratio > 1.0 and r.passes == PROFILE.passes
        pid = worker._proc.pid
        assert pid != os.getpid()
        with pytest.raises(RuntimeError, match="NoSuchFile|NO_SUCHFILE|doesn't exist"):
            worker.measure("/nonexistent/model.onnx")
        assert worker.measure(small).ratio == pytest.approx(1.0, abs=0.5)  # still serving
        assert worker._proc.pid == pid
        worker._proc.kill()
        worker._proc.wait()
        assert worker.measure(big).ratio > 1.0  # a dead worker is replaced
        assert worker._proc.pid != pid
        proc = worker._proc
    assert proc.poll() is not None  # closed with the context


def test_the_latency_worker_screens_with_the_search_time_protocol(conv_models):
    from autocompress.evaluation import LatencyWorker

    small, big = conv_models
    # an interval target no measurement reaches: the pass counts show which protocol ran
    profile = HardwareProfile(name="s", warmup=1, repeats=3, passes=2, max_passes=5, search_max_passes=3, target_ci=1e-9)
    with LatencyWorker(small, profile, (3, 24, 24)) as worker:
        assert worker.measure(big, screen=True).passes == 3
        assert worker.measure(big).passes == 5
        assert worker.measure(big, screen=True, fresh=True).passes == 5  # fresh: always the full protocol


def test_latency_worker_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, autocompress.evaluation._latency_worker as w; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_the_latency_worker_runs_on_the_profiles_cores(conv_models):
    from autocompress.evaluation import LatencyWorker

    small, _ = conv_models
    core = sorted(os.sched_getaffinity(0))[-1]
    pinned = HardwareProfile(name="pinned", warmup=1, repeats=3, passes=2, max_passes=2, cpu_affinity=(core,))
    with LatencyWorker(small, pinned, (3, 24, 24)) as worker:
        worker.measure(small)
        assert os.sched_getaffinity(worker._proc.pid) == {core}


def test_the_profiles_input_shape_is_the_one_timed(conv_models):
    small, _ = conv_models
    wrong = HardwareProfile(name="shape", warmup=1, repeats=2, passes=2, max_passes=2, input_shape=(3, 24, 25))
    with pytest.raises(Exception, match="25|dimension|Invalid"):
        measure_interleaved(small, small, wrong, (3, 24, 24))  # the exported graph is fixed at 24x24: the override was used


def test_an_identical_file_is_timed_once_unless_fresh(tmp_path):
    from autocompress.evaluation import CachedLatency

    class CountingWorker:  # stands in for the timing process in this pure-logic test
        def __init__(self):
            self.calls = []
            self.screened = []

        def measure(self, path, *, fresh=False, screen=False):
            self.calls.append(path)
            self.screened.append(screen)
            return LatencyResult(0.5, 0.01, 1.0, 1.1, 0.1, 2.0, 7, 0.49, 0.51, True)

    a, b, c = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "c.onnx"
    a.write_bytes(b"graph-1")
    b.write_bytes(b"graph-1")  # same content, other file: the same model
    c.write_bytes(b"graph-2")
    worker = CountingWorker()
    cache = CachedLatency(worker, HardwareProfile(name="p"))
    assert not cache.measure(a).cached
    assert cache.measure(b).cached and cache.hits == 1
    assert not cache.measure(c).cached
    assert not cache.measure(a, fresh=True).cached  # the deliberate re-measurement
    assert worker.calls == [a, c, a]
    assert worker.screened == [True, True, False]  # the search's protocol, then the full one
    other = CachedLatency(worker, HardwareProfile(name="p", batch_size=8))
    assert other.key(b"graph-1") != cache.key(b"graph-1")  # keyed by the profile too
