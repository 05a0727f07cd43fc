"""Several workers on one study (--worker): only stale RUNNING trials are recovered when
a worker opens the study, each worker draws its own trials, and the budget is shared."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy

from autocompress.backends.optuna import OptunaBackend
from autocompress.backends.study import GRACE_S, RunStudy, supports_heartbeat, worker_seed
from autocompress.errors import ConfigError
from autocompress.pipeline import Outcome
from autocompress.space import SearchSpace

SPACE = SearchSpace.from_dict({"prune": {"ratio": {"low": 0.0, "high": 0.9, "step": 0.01}}, "finetune": {"steps": [0, 20]},
                               "quantize": {"mode": "fp32"}})
RUNNING = optuna.trial.TrialState.RUNNING


def outcome(cfg) -> Outcome:
    acc = 0.9 - cfg.prune.ratio / 4
    return Outcome((acc, 1 - cfg.prune.ratio / 2, 1000 * (1 - cfg.prune.ratio)), {"metric_drop": (0.9 - acc) * 100, "onnx": "x.onnx"})


def _age(url: str, sql: str, trial_id: int) -> None:
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(sql), {"t": trial_id, "old": f"-{GRACE_S * 10} seconds"})
    engine.dispose()


def test_a_worker_recovers_stale_trials_only(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = RunStudy(url, SPACE, worker=True, nonce="a")
    first.open(new=True)
    study = first.study
    for _ in range(len(study.get_trials(states=(optuna.trial.TrialState.WAITING,)))):  # the recipes: out of the way
        study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    fresh, stale, silent = study.ask(), study.ask(), study.ask()
    for t in (fresh, stale, silent):
        SPACE.suggest(t)
    first.started(fresh)
    first.started(stale)
    first.close()  # no further beats: only the rows written above
    _age(url, "UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, :old) WHERE trial_id = :t", stale._trial_id)
    _age(url, "UPDATE trials SET datetime_start = datetime(datetime_start, :old, 'localtime') WHERE trial_id = :t", silent._trial_id)

    second = RunStudy(url, SPACE, worker=True, nonce="b")
    second.open(new=False)
    try:
        by_number = {t.number: t for t in second.study.get_trials()}
        assert by_number[fresh.number].state == RUNNING  # another worker's live trial
        for t in (stale, silent):  # no heartbeat for GRACE_S, or none at all since long ago
            assert by_number[t.number].state == optuna.trial.TrialState.FAIL
            assert by_number[t.number].user_attrs["interrupted"] is True
        retries = [t.user_attrs.get("retry_of") for t in second.study.get_trials(states=(optuna.trial.TrialState.WAITING,))]
        assert sorted(retries) == sorted([stale.number, silent.number])
    finally:
        second.close()


def test_without_worker_every_running_trial_is_recovered(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = RunStudy(url, SPACE, worker=True, nonce="a")
    first.open(new=True)
    trial = first.study.ask()
    first.started(trial)
    first.close()
    again = RunStudy(url, SPACE)
    again.open(new=False)
    assert again.study.get_trials(states=(RUNNING,)) == []


def test_workers_draw_different_trials_and_share_the_budget(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    OptunaBackend(url, SPACE, sampler="random", seed=0).open(new=True)
    a = OptunaBackend(url, SPACE, sampler="random", seed=0, worker=True, nonce="host:1:1.0")
    b = OptunaBackend(url, SPACE, sampler="random", seed=0, worker=True, nonce="host:2:1.0")
    a.open(new=False)
    b.open(new=False)
    try:
        assert worker_seed(0, "host:1:1.0") != worker_seed(0, "host:2:1.0")
        # a's trial in flight counts against the shared budget of 4 while b searches
        asked = a._ask(a.run_study.built_candidates(), lambda rec: None, 4)
        trial, cfg = asked
        b.optimize(lambda cfg, n: outcome(cfg), budget=4)
        assert b.finished_count() == 3  # 3 finished + a's one RUNNING = the budget
        a.run_study.tell_outcome(trial, outcome(cfg), 0.0)
        a.optimize(lambda cfg, n: outcome(cfg), budget=4)
        assert a.finished_count() == 4
        trials = [t for t in a.study.get_trials() if t.state.is_finished()]
        params = [tuple(sorted(t.params.items())) for t in trials if "recipe" not in t.user_attrs]
        assert len(params) == len(set(params))
    finally:
        a.close()
        b.close()


def test_storages_without_heartbeats_refuse_workers(tmp_path):
    assert supports_heartbeat("sqlite:///x.db") and supports_heartbeat("postgresql+psycopg2://h/db")
    assert not supports_heartbeat("journal:///x.log")
    with pytest.raises(ConfigError, match="--worker needs a storage with heartbeats"):
        RunStudy(f"journal:///{tmp_path / 'x.log'}", SPACE, worker=True).open(new=False)
