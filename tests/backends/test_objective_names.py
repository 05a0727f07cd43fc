"""The run's study names its objectives (for optuna-dashboard and Study.trials_dataframe),
and optuna-dashboard serves a run's storage with them."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from autocompress.backends import OBJECTIVES, objective_names
from autocompress.backends.optuna import OptunaBackend
from autocompress.evaluation.metrics import BUILTIN
from autocompress.pipeline import Outcome
from autocompress.space import SearchSpace

SPACE = SearchSpace.from_dict({"prune": {"ratio": [0.0, 0.5]}, "quantize": {"mode": "fp32"}})


def outcome(cfg) -> Outcome:
    return Outcome((0.9 - cfg.prune.ratio / 4, 1 - cfg.prune.ratio / 2, 1000.0), {"metric_drop": 25 * cfg.prune.ratio})


def test_objective_names_follow_the_metric_and_its_direction():
    assert objective_names(BUILTIN["accuracy"]) == ["val_accuracy", "latency_ratio", "size_bytes"]
    assert objective_names(BUILTIN["mse"]) == ["val_mse (negated)", "latency_ratio", "size_bytes"]  # the study maximizes -mse
    assert objective_names() == ["val_metric (score)", "latency_ratio", "size_bytes"]
    assert list(OBJECTIVES) == ["val_metric", "latency_ratio", "size_bytes"]


def test_a_new_study_is_named_and_a_resumed_unnamed_one_is_named_too(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    b = OptunaBackend(url, SPACE, seed=0, metric=BUILTIN["accuracy"])
    b.open(new=True)
    b.optimize(lambda cfg, n: outcome(cfg), budget=2)
    study = optuna.load_study(study_name="autocompress", storage=url)
    assert study.metric_names == ["val_accuracy", "latency_ratio", "size_bytes"]
    assert {"values_val_accuracy", "values_latency_ratio", "values_size_bytes"} <= set(study.trials_dataframe().columns)

    url2 = f"sqlite:///{tmp_path / 'old.db'}"  # a study made before its objectives were named
    optuna.create_study(study_name="autocompress", storage=url2, directions=["maximize", "minimize", "minimize"])
    OptunaBackend(url2, SPACE, seed=0, metric=BUILTIN["mse"]).open(new=False)
    assert optuna.load_study(study_name="autocompress", storage=url2).metric_names[0] == "val_mse (negated)"


def test_without_the_metric_names_are_generic_and_never_replace_real_ones(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    OptunaBackend(url, SPACE, seed=0).open(new=True)
    assert optuna.load_study(study_name="autocompress", storage=url).metric_names[0] == "val_metric (score)"
    OptunaBackend(url, SPACE, seed=0, metric=BUILTIN["accuracy"]).open(new=False)
    OptunaBackend(url, SPACE, seed=0).open(new=False)
    assert optuna.load_study(study_name="autocompress", storage=url).metric_names[0] == "val_accuracy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, deadline: float):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return json.load(r)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_optuna_dashboard_serves_a_run_storage_with_the_names(tmp_path):
    pytest.importorskip("optuna_dashboard")
    command = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or shutil.which("optuna-dashboard")
    if command is None:
        pytest.skip("the optuna-dashboard command is not installed")
    db = tmp_path / "study.db"
    b = OptunaBackend(f"sqlite:///{db}", SPACE, seed=0, metric=BUILTIN["accuracy"])
    b.open(new=True)
    b.optimize(lambda cfg, n: outcome(cfg), budget=2)
    port = free_port()
    # the command the README gives: optuna-dashboard sqlite:///RUN_DIR/study.db (bound to the loopback interface)
    proc = subprocess.Popen([command, f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 12
        studies = get_json(f"http://127.0.0.1:{port}/api/studies", deadline)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["autocompress"]
        assert studies[0]["directions"] == ["maximize", "minimize", "minimize"]
        study = get_json(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", deadline)
        assert study["objective_names"] == ["val_accuracy", "latency_ratio", "size_bytes"]
        assert len(study["trials"]) == 2 and {p["name"] for p in study["trials"][0]["params"]} == {"prune.ratio"}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_ray_searcher_opens_the_run_study_with_its_names_and_reports_the_same_keys(tmp_path):
    pytest.importorskip("ray")
    from autocompress.backends.ray_tune import METRICS, MODES, _DefineByRun, _GuardedOptunaSearch
    from autocompress.backends.study import RunStudy, open_storage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    rs = RunStudy(url, SPACE, seed=0, metric=BUILTIN["accuracy"])
    rs.open(new=True)  # as RayTuneBackend.open does, before Tune's searcher opens the same storage
    s = _GuardedOptunaSearch(define=_DefineByRun(rs, {}), metric=METRICS, mode=MODES, sampler=optuna.samplers.RandomSampler(seed=0),
                             study_name="autocompress", storage=open_storage(url))
    assert METRICS == list(OBJECTIVES) and MODES == ["max", "min", "min"]
    assert s._study().metric_names == ["val_accuracy", "latency_ratio", "size_bytes"]
