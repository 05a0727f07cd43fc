"""The Ray backend's searcher guard, without starting Ray: what Optuna is told for each
way a Tune trial can end. Ray 2.60's OptunaSearch tells COMPLETE with the last values for
any trial that reported something (errored or stopped ones too); ours must not."""

from __future__ import annotations

import json
import math

import optuna
import pytest

from autocompress.backends.study import RunStudy, record
from autocompress.backends.ray_tune import _NO_VALUES, METRICS, MODES, _DefineByRun, _GuardedOptunaSearch
from autocompress.space import SearchSpace

SPACE = SearchSpace.from_dict({"prune": {"ratio": [0.0, 0.25, 0.5]}, "quantize": {"mode": ["fp32", "int8"]}})
FULL = {"final": True, "val_metric": 0.9, "latency_ratio": 0.5, "size_bytes": 1000.0,
        "attrs_json": json.dumps({"val_metric": 0.9, "latency_ratio": 0.5, "size_bytes": 1000, "metric_drop": 1.0,
                                  "onnx": "trials/0/model.onnx", "stage_seconds": {"prune": 0.1}})}


def searcher(max_acc_drop=None):
    storage = optuna.storages.InMemoryStorage()
    run_study = RunStudy("sqlite:///unused", SPACE, max_acc_drop=max_acc_drop)  # its own study is never opened here
    s = _GuardedOptunaSearch(define=_DefineByRun(run_study, {}), metric=METRICS, mode=MODES, sampler=optuna.samplers.RandomSampler(seed=0),
                             study_name="autocompress", storage=storage)
    return s


def states(s):
    return [t.state.name for t in s._study().trials]


def test_a_finished_candidate_is_complete_with_its_values_and_attributes():
    s = searcher(max_acc_drop=0.5)
    config = s.suggest("a")
    assert config["_ac_number"] == 0 and any(k.startswith("prune.") for k in config)
    s.on_trial_complete("a", result=FULL)
    (t,) = s._study().trials
    assert t.state.name == "COMPLETE" and t.values == [0.9, 0.5, 1000.0]
    assert t.user_attrs["onnx"] == "trials/0/model.onnx" and t.user_attrs["stage_seconds"] == {"prune": 0.1}
    assert t.user_attrs["constraint"] == [0.5] and "candidate_id" in t.user_attrs
    assert record(t)["t_prune"] == 0.1  # the local backend's records read it the same way


@pytest.mark.parametrize(
    "result, error, reason",
    [
        ({**FULL, "final": False}, False, "stopped before it finished"),  # e.g. a scheduler stopped it after a rung
        ({k: v for k, v in FULL.items() if k != "final"}, False, "stopped before it finished"),
        ({"final": False, "failure_reason": "quantize: boom", **_NO_VALUES}, False, "quantize: boom"),
    ],
)
def test_anything_but_a_finished_candidate_is_told_fail_with_a_reason(result, error, reason):
    s = searcher()
    s.suggest("a")
    s.on_trial_complete("a", result=result, error=error)
    (t,) = s._study().trials
    assert t.state.name == "FAIL" and t.values is None
    assert t.user_attrs["failure_reason"] == reason


def test_intermediate_results_are_ignored_and_a_second_completion_changes_nothing():
    s = searcher()
    s.suggest("a")
    s.on_trial_result("a", FULL)
    assert states(s) == ["RUNNING"]
    s.on_trial_complete("a", result=FULL)
    s.on_trial_complete("a", result=None, error=True)
    assert states(s) == ["COMPLETE"]


def test_a_config_already_built_is_marked_and_takes_the_first_result():
    s = searcher()
    first = s.suggest("a")
    s.on_trial_complete("a", result=FULL)
    s._study().enqueue_trial({k: v for k, v in first.items() if not k.startswith("_ac_")})
    again = s.suggest("b")
    assert again["_ac_duplicate_of"] == 0
    s.on_trial_complete("b", result={"final": True, "duplicate": True, **_NO_VALUES})
    t = s._study().trials[1]
    assert t.state.name == "COMPLETE" and t.values == [0.9, 0.5, 1000.0]
    assert t.user_attrs["duplicate_of"] == 0 and t.user_attrs["t_total"] == 0.0
    assert all(not math.isnan(v) for v in t.values)


@pytest.mark.parametrize("result", [FULL, None])  # reported before it errored, or not
def test_an_errored_trial_waits_for_its_reason_then_fails(result):
    s = searcher()
    s.suggest("a")
    s.on_trial_complete("a", result=result, error=True)
    assert states(s) == ["RUNNING"]  # Tune calls the callbacks' on_trial_error after this
    s.fail("a", "the trial's process failed: ActorDiedError")
    (t,) = s._study().trials
    assert t.state.name == "FAIL" and t.values is None
    assert t.user_attrs["failure_reason"] == "the trial's process failed: ActorDiedError"
    s.suggest("b")
    s.on_trial_complete("b", result=None, error=True)
    s.finish_pending()  # no callback came (the run ended): failed all the same
    assert states(s) == ["FAIL", "FAIL"] and s._study().trials[1].user_attrs["failure_reason"] == "the trial's process failed"


def test_a_candidate_stopped_at_a_rung_is_pruned_with_its_rung_results_never_complete():
    s = searcher()
    s.suggest("a")
    rungs = [{"rung": 0, "steps": 4, "val_metric": 0.7, "latency_ratio": 0.4, "promoted": False, "place": 2, "of": 2}]
    s.on_trial_complete("a", result={"final": False, "stopped": True, "stop_reason": "stopped at rung 0 (4 steps): place 2 of 2",
                                     "attrs_json": json.dumps({"rung_results": rungs, "t_total": 1.5}), **_NO_VALUES})
    (t,) = s._study().trials
    assert t.state.name == "PRUNED" and t.values is None
    assert t.user_attrs["rung_results"] == rungs and t.user_attrs["stop_reason"].startswith("stopped at rung 0")
    assert t.user_attrs["t_total"] == 1.5
    rec = record(t)
    assert rec["rung0_val_metric"] == 0.7 and rec["state"] == "PRUNED"


def test_a_stopped_trial_that_also_errored_waits_for_its_reason_and_fails():
    s = searcher()
    s.suggest("a")
    s.on_trial_complete("a", result={"final": False, "stopped": True, "stop_reason": "x", "attrs_json": "{}", **_NO_VALUES}, error=True)
    s.fail("a", "the trial's process failed")
    assert states(s) == ["FAIL"]
