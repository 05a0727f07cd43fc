"""The Optuna backend's loop over a real SQLite study, with a stand-in evaluate function
(the pipeline itself is tested elsewhere): budget, recipes, duplicates, failures,
interruption and resume, time budget."""

from __future__ import annotations

import itertools

import optuna
import pytest

from autocompress.pipeline import Outcome
from autocompress.backends.optuna import OptunaBackend, trial_params
from autocompress.errors import CandidateError
from autocompress.space import SearchSpace

SPACE = SearchSpace.from_dict(
    {
        "prune": {"ratio": {"low": 0.0, "high": 0.8, "step": 0.1}},
        "finetune": {"steps": [0, 10]},
        "quantize": {"mode": ["fp32", "int8"], "activations": ["uint8", "int8"], "format": ["qoperator", "qdq"]},
    }
)


def fake_outcome(cfg) -> Outcome:
    acc = 1.0 - cfg.prune.ratio * (0.5 if cfg.finetune.steps == 0 else 0.1)
    lat = 1.0 - cfg.prune.ratio * 0.7 - (0.2 if cfg.quantize.mode == "int8" else 0.0)
    size = 1000.0 * (1 - cfg.prune.ratio) * (0.25 if cfg.quantize.mode == "int8" else 1.0)
    return Outcome((acc, lat, size), {"val_metric": acc, "latency_ratio": lat, "size_bytes": size, "metric_drop": (1 - acc) * 100})


def backend(tmp_path, **kw) -> OptunaBackend:
    return OptunaBackend(f"sqlite:///{tmp_path / 'study.db'}", SPACE, seed=0, **kw)


def test_recipes_come_first_and_budget_counts_finished_trials(tmp_path):
    b = backend(tmp_path)
    b.open(new=True)
    calls = []
    b.optimize(lambda cfg, n: calls.append(cfg) or fake_outcome(cfg), budget=6)
    recs = b.records()
    assert len(recs) == 6 and b.finished_count() == 6
    assert [r.get("recipe") for r in recs[:3]] == ["int8 teacher", "prune 50% + KD", "prune 50% + KD + int8"]
    assert recs[0]["param.quantize.mode"] == "int8" and recs[0]["param.prune.ratio"] == 0.0
    assert recs[1]["param.prune.ratio"] == 0.5 and recs[1]["param.finetune.steps"] == 10
    assert len(calls) == sum(1 for r in recs if "duplicate_of" not in r)


def test_duplicate_configs_are_built_once(tmp_path):
    b = backend(tmp_path)
    b.open(new=True)
    calls = []
    b.optimize(lambda cfg, n: calls.append(cfg.id) or fake_outcome(cfg), budget=40)
    recs = b.records()
    dups = [r for r in recs if "duplicate_of" in r]
    assert dups, "a 40-trial search of a ~60-config space should repeat a config"
    assert len(calls) == len(set(calls)) == len(recs) - len(dups)
    by_number = {r["number"]: r for r in recs}
    for d in dups:
        src = by_number[d["duplicate_of"]]
        assert d["candidate_id"] == src["candidate_id"] and d["val_metric"] == src["val_metric"]


def test_failed_candidate_is_recorded_and_search_goes_on(tmp_path):
    b = backend(tmp_path)
    b.open(new=True)

    def evaluate(cfg, n):
        if cfg.quantize.mode == "int8":
            raise CandidateError("quantize: RuntimeError: boom")
        return fake_outcome(cfg)

    b.optimize(evaluate, budget=5)
    recs = b.records()
    failed = [r for r in recs if r["state"] == "FAIL"]
    assert failed and all(r["failure_reason"] == "quantize: RuntimeError: boom" for r in failed)
    assert any(r["state"] == "COMPLETE" for r in recs) and b.finished_count() == 5


def test_interrupted_trial_is_failed_and_reenqueued_on_resume(tmp_path):
    b = backend(tmp_path)
    b.open(new=True)
    b.optimize(lambda cfg, n: fake_outcome(cfg), budget=2)
    # A driver killed mid-trial leaves a RUNNING trial behind.
    stale = b.study.ask()
    SPACE.suggest(stale)
    params = dict(stale.params)
    resumed = backend(tmp_path)
    resumed.open(new=False)
    t = resumed.study.trials[stale.number]
    assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs["interrupted"] is True
    assert resumed.finished_count() == 2  # interrupted trials do not count against the budget
    resumed.optimize(lambda cfg, n: fake_outcome(cfg), budget=3)
    retry = [r for r in resumed.records() if r.get("retry_of") == stale.number]
    assert len(retry) == 1 and retry[0]["state"] == "COMPLETE"
    assert {k: v for k, v in retry[0].items() if k.startswith("param.")} == {f"param.{k}": v for k, v in params.items()}
    assert trial_params(f"sqlite:///{tmp_path / 'study.db'}", retry[0]["number"]) == params


def test_time_budget_stops_between_trials(tmp_path):
    b = backend(tmp_path)
    b.open(new=True)
    ticks = itertools.count(0, 10.0)  # each call of the clock advances 10 s
    b.optimize(lambda cfg, n: fake_outcome(cfg), budget=100, time_budget=25.0, clock=lambda: next(ticks))
    assert 1 <= b.finished_count() < 100


def test_max_acc_drop_becomes_a_constraint(tmp_path):
    b = backend(tmp_path, max_acc_drop=5.0)
    b.open(new=True)
    b.optimize(lambda cfg, n: fake_outcome(cfg), budget=4)
    for t in b.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        if "duplicate_of" not in t.user_attrs:
            assert t.user_attrs["constraint"] == [pytest.approx(t.user_attrs["metric_drop"] - 5.0)]
            assert t.constraints == {"constraint": t.user_attrs["constraint"][0]}  # what Optuna's samplers read
