"""The Optuna internals this package uses, behind one small adapter. Checked against
Optuna 5.0.0 (the version constraints.txt pins): `Trial._trial_id`, `Study._storage`,
`Study._study_id` and the storage's `get_trial`, `get_trial_id_from_study_id_trial_number`,
`set_trial_user_attr` and `set_trial_state_values`. Optuna has public ways to read trials
(`study.trials`, which copies every trial) and to end one (`study.tell`, for trials this
process asked for); these are for reading one trial cheaply after every trial, and for
failing the trials a previous process left RUNNING."""

from __future__ import annotations

from typing import Any

import optuna

CHECKED_AGAINST = "5.0.0"


def frozen(study: optuna.Study, trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The stored state of a trial this process is running or has just told."""
    return study._storage.get_trial(trial._trial_id)


def frozen_by_number(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    storage = study._storage
    return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id, number))


def fail_stored_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, attrs: dict[str, Any]) -> None:
    """Set `attrs` on a trial (of any process, e.g. one a dead driver left RUNNING) and mark it FAIL."""
    storage = study._storage
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial._trial_id, key, value)
    storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """Trial ids of the RUNNING trials whose heartbeat is older than the storage's grace
    period (RDBStorage with heartbeat_interval; Optuna's fail_stale_trials reads the same)."""
    return study._storage._get_stale_trial_ids(study._study_id)


def has_heartbeat(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial ever recorded a heartbeat."""
    import sqlalchemy

    storage = getattr(study._storage, "_backend", study._storage)  # the RDBStorage behind Optuna's cache
    with storage.engine.connect() as conn:
        row = conn.execute(sqlalchemy.text("SELECT 1 FROM trial_heartbeats WHERE trial_id = :t"), {"t": trial._trial_id}).first()
    return row is not None


__all__ = ["CHECKED_AGAINST", "has_heartbeat", "stale_trial_ids", "fail_stored_trial", "frozen", "frozen_by_number"]
