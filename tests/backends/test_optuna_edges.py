"""Optuna backend edge cases not covered by test_optuna.py: recipes a space cannot express,
a fully fixed space, Ctrl-C during a trial, sampler names."""

from __future__ import annotations

import optuna
import pytest

from autocompress.pipeline import Outcome
from autocompress.backends.optuna import OptunaBackend, make_sampler
from autocompress.errors import ConfigError
from autocompress.space import SearchSpace


def outcome(cfg) -> Outcome:
    acc = 0.9 - cfg.prune.ratio / 4
    return Outcome((acc, 1 - cfg.prune.ratio / 2, 1000 * (1 - cfg.prune.ratio)), {"metric_drop": (0.9 - acc) * 100, "onnx": "trials/0/model.onnx"})


def backend(tmp_path, space, **kw) -> OptunaBackend:
    return OptunaBackend(f"sqlite:///{tmp_path / 'study.db'}", space, **kw)


def test_only_recipes_the_space_can_express_are_enqueued(tmp_path):
    space = SearchSpace.from_dict({"prune": {"ratio": [0.0, 0.5]}, "finetune": {"steps": [0, 20]}, "quantize": {"mode": "fp32"}})
    b = backend(tmp_path, space)
    b.open(new=True)
    assert [t.user_attrs["recipe"] for t in b.study.get_trials(states=(optuna.trial.TrialState.WAITING,))] == ["prune 50% + KD"]
    b.optimize(lambda cfg, n: outcome(cfg), budget=1)
    (rec,) = b.records()
    assert rec["recipe"] == "prune 50% + KD"
    assert rec["param.prune.ratio"] == 0.5 and rec["param.finetune.steps"] == 20  # 'max' of the choices


def test_a_fully_fixed_space_builds_its_one_candidate_once(tmp_path):
    b = backend(tmp_path, SearchSpace.from_dict({"prune": {"ratio": 0.3}}))
    b.open(new=True)
    calls = []
    b.optimize(lambda cfg, n: calls.append(n) or outcome(cfg), budget=3)
    recs = b.records()
    assert calls == [0]
    assert [r.get("duplicate_of") for r in recs] == [None, 0, 0]
    assert all(r["onnx"] == recs[0]["onnx"] and r["state"] == "COMPLETE" for r in recs)
    assert b.finished_count() == 3


def test_ctrl_c_marks_the_trial_interrupted_and_propagates(tmp_path):
    b = backend(tmp_path, SearchSpace.from_dict({"prune": {"ratio": [0.0, 0.5]}}), sampler="random")
    b.open(new=True)

    def evaluate(cfg, number):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        b.optimize(evaluate, budget=2)
    t = b.study.trials[0]
    assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs["interrupted"] is True
    assert "Ctrl-C" in t.user_attrs["failure_reason"]
    assert b.finished_count() == 0  # not counted against the budget


def test_records_leave_out_internal_attributes(tmp_path):
    b = backend(tmp_path, SearchSpace.from_dict({"prune": {"ratio": [0.0, 0.5]}}), max_acc_drop=1.0)
    b.open(new=True)
    b.optimize(lambda cfg, n: Outcome(outcome(cfg).values, {**outcome(cfg).attrs, "stage_seconds": {"prune": 0.5}}), budget=2)
    for rec in b.records():
        assert "constraint" not in rec and "stage_seconds" not in rec
        assert rec["t_prune"] == 0.5


def test_make_sampler():
    assert isinstance(make_sampler("tpe", seed=0), optuna.samplers.TPESampler)
    assert isinstance(make_sampler("nsga2", seed=0), optuna.samplers.NSGAIISampler)
    assert isinstance(make_sampler("random", seed=0), optuna.samplers.RandomSampler)
    with pytest.raises(ConfigError, match="--sampler must be one of"):
        make_sampler("grid", seed=0)


def test_the_run_storage_logs_ahead_and_a_killed_writer_loses_no_commit(tmp_path):
    import sqlite3
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'study.db'}"
    # a real process commits trials through the run's storage and is killed (no close, no checkpoint)
    code = (
        "import os, optuna\n"
        "from autocompress.backends.study import open_storage\n"
        f"s = optuna.create_study(study_name='x', storage=open_storage({url!r}), directions=['maximize'])\n"
        "for i in range(3):\n"
        "    t = s.ask(); t.suggest_float('p', 0, 1); t.set_user_attr('i', i); s.tell(t, 1.0)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert sqlite3.connect(tmp_path / "study.db").execute("PRAGMA journal_mode").fetchone() == ("wal",)
    trials = optuna.load_study(study_name="x", storage=url).trials
    assert [t.user_attrs["i"] for t in trials] == [0, 1, 2] and all(t.state.name == "COMPLETE" for t in trials)


def test_trials_of_a_run_made_before_the_metric_read_as_the_metric_s():
    """A trial told before the metric was the task's holds val_accuracy, acc_drop_pts and
    rung results with val_accuracy: the records, the climb and the rung board read them."""
    import optuna

    from autocompress.backends.study import drop_of, record
    from autocompress.fidelity import board_history

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    t = study.ask()
    t.suggest_float("prune.ratio", 0.0, 0.9)
    for k, v in {"val_accuracy": 0.9, "acc_drop_pts": 2.0, "rung_results": [{"rung": 0, "steps": 4, "val_accuracy": 0.8, "latency_ratio": 0.5,
                                                                               "promoted": True}]}.items():
        t.set_user_attr(k, v)
    study.tell(t, [0.9, 0.5, 100.0])
    frozen = study.trials[0]
    rec = record(frozen)
    assert (rec["val_metric"], rec["metric_drop"], rec["rung0_val_metric"]) == (0.9, 2.0, 0.8)
    assert "val_accuracy" not in rec and drop_of(frozen.user_attrs) == 2.0
    assert board_history([frozen]) == [(0, 0, 0.8, 0.5)]
