"""The declared interfaces hold for what implements them: both backends are Backends, and
the local worker, the cache and the Ray client are LatencyMeters (Ray is imported, not
started)."""

from __future__ import annotations

import inspect

from autocompress.backends import Backend
from autocompress.evaluation import CachedLatency, DeviceMeter, LatencyMeter, LatencyWorker
from autocompress.hardware import HardwareProfile
from autocompress.space import SearchSpace

MEMBERS = ("max_acc_drop", "open", "optimize", "finished_count", "records", "store_remeasured")


def test_both_backends_are_backends(tmp_path):
    from autocompress.backends.optuna import OptunaBackend
    from autocompress.backends.ray_tune import RayOptions, RayTuneBackend

    space = SearchSpace.from_dict({})
    local = OptunaBackend(f"sqlite:///{tmp_path / 'a.db'}", space)
    ray = RayTuneBackend(f"sqlite:///{tmp_path / 'b.db'}", space, setup=None, opts=RayOptions(), run_path=tmp_path)
    for backend in (local, ray):
        assert isinstance(backend, Backend)
        assert all(hasattr(backend, m) for m in MEMBERS)
        params = inspect.signature(backend.optimize).parameters
        assert {"budget", "time_budget", "on_trial"} <= set(params)
    assert not isinstance(object(), Backend)


def test_the_latency_meters_are_latency_meters(tmp_path):
    from autocompress.backends.ray_tune import RemoteLatency

    worker = LatencyWorker(tmp_path / "teacher.onnx", HardwareProfile(name="p"), (1, 8, 8))  # no process until first use
    remote = RemoteLatency(actor=None)
    for meter in (worker, CachedLatency(worker, HardwareProfile(name="p")), remote):
        assert isinstance(meter, LatencyMeter)
        assert "fresh" in inspect.signature(meter.measure).parameters
    assert isinstance(remote, DeviceMeter) and not isinstance(worker, DeviceMeter)
    worker.close()
