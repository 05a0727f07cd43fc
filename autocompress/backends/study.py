"""The run's Optuna study, shared by both backends: created or resumed in the run's
storage with the hand recipes enqueued first, what has been built, the trials as records,
and the ways a trial ends (complete, failed, stopped at a rung, a duplicate, interrupted).

Objectives: maximize the val metric's score (Metric.score: the value, negated where lower is
better), minimize latency ratio to the teacher, minimize size; the study names them
(backends.objective_names: val_accuracy, latency_ratio, size_bytes) for optuna-dashboard.
The drop limit (in the metric's units: points for accuracy) becomes an Optuna constraint
(TPE and NSGA-II use it); nothing is discarded.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, Optional

import optuna

from autocompress.backends import SAMPLERS, STUDY_NAME, objective_names
from autocompress.backends import _optuna_compat as compat
from autocompress.errors import ConfigError
from autocompress.fidelity import Fidelity, RungBoard, board_history
from autocompress.pipeline import Outcome
from autocompress.recipes import recipe_trials
from autocompress.space import SearchSpace

DIRECTIONS = ["maximize", "minimize", "minimize"]
CONSTRAINT = "constraint"
REMEASURED = "remeasured"  # study attribute: trial number -> end-of-search latency re-measurement
_NOT_IN_RECORDS = {"stage_seconds", CONSTRAINT, "config", "rung_results", "measure_windows", "busy_windows"}  # kept on the trial only
_STATES = optuna.trial.TrialState
LEGACY = {"val_accuracy": "val_metric", "acc_drop_pts": "metric_drop"}  # a trial's attributes in runs made before the metric was the task's


def rung_value(r: dict[str, Any]) -> float:
    """The val metric of one of a trial's rung_results (val_accuracy in older runs)."""
    return r["val_metric"] if "val_metric" in r else r["val_accuracy"]


def drop_of(attrs: dict[str, Any]) -> Optional[float]:
    """A finished trial's metric drop (acc_drop_pts in older runs), None if it has none."""
    return attrs.get("metric_drop", attrs.get("acc_drop_pts"))


def make_sampler(name: str, *, seed: int) -> optuna.samplers.BaseSampler:
    """The named sampler. TPE and NSGA-II read each trial's constraint (set when it is told,
    RunStudy.tell_complete): trials beyond the drop limit inform them but are not chased."""
    if name == "tpe":
        with warnings.catch_warnings():  # multivariate + group are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # group=True: the space is conditional (no alpha/T without fine-tune, no int8
            # options for fp32); grouping keeps multivariate TPE joint within each branch.
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True, group=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"--sampler must be one of {list(SAMPLERS)}, got {name!r}")


def record(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """One trial as a flat record (a row of trials.csv before the derived columns)."""
    rec: dict[str, Any] = {"number": t.number, "state": t.state.name}
    rec.update({f"param.{k}": round(v, 10) if isinstance(v, float) else v for k, v in t.params.items()})  # 0.7, not 0.7000000000000001
    rec.update({LEGACY.get(k, k): v for k, v in t.user_attrs.items() if k not in _NOT_IN_RECORDS})
    for r in t.user_attrs.get("rung_results", []):  # multi-fidelity: what the candidate showed at each rung
        rec[f"rung{r['rung']}_val_metric"] = rung_value(r)
        rec[f"rung{r['rung']}_latency_ratio"] = r["latency_ratio"]
    rec.update({f"t_{k}": v for k, v in t.user_attrs.get("stage_seconds", {}).items()})
    return rec


HEARTBEAT_S = 10  # with --worker, each trial in flight records a heartbeat this often
GRACE_S = 60  # a RUNNING trial whose last heartbeat is older is stale: its worker stopped
HEARTBEAT_SCHEMES = ("sqlite", "postgresql", "mysql")  # RDB storages: Optuna keeps heartbeats there


def supports_heartbeat(url: str) -> bool:
    """Whether trials in the storage at `url` can record heartbeats (an RDB URL: SQLite,
    PostgreSQL, MySQL); a journal file cannot, so only one worker may use it."""
    return url.split(":", 1)[0].split("+", 1)[0] in HEARTBEAT_SCHEMES


def open_storage(url: str, *, heartbeat: bool = False) -> optuna.storages.RDBStorage:
    """The run's storage; `heartbeat`: trials record heartbeats (HEARTBEAT_S, GRACE_S) so
    that several workers can tell a live trial of another worker from a stale one. A SQLite file gets write-ahead logging with `synchronous=NORMAL`:
    a commit is not flushed to disk on its own (a trial's ~70 parameter and attribute writes
    took 0.57 s with a flush each, 0.25 s this way), and still survives the search process
    being killed at any point; only an OS crash or power loss may roll back the last
    commits. (WAL needs a local file system, as SQLite's locking does anyway.)"""
    with warnings.catch_warnings():  # heartbeat_interval is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = (optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S) if heartbeat
                   else optuna.storages.RDBStorage(url))
    if url.startswith("sqlite:"):
        import sqlalchemy

        @sqlalchemy.event.listens_for(storage.engine, "connect")
        def _pragmas(dbapi_connection, _record):  # every new connection of this engine
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        storage.engine.dispose()  # connections opened before the listener are closed
    return storage


def trial_params(storage_url: str, number: int, study_name: str = STUDY_NAME) -> dict[str, Any]:
    """The params of trial `number` of the run's study."""
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    return dict(study.trials[number].params)


class Heartbeats:
    """Records a heartbeat for every trial this process has in flight, from one daemon
    thread, every HEARTBEAT_S seconds (and once at once when a trial starts)."""

    def __init__(self, storage: optuna.storages.RDBStorage):
        import threading

        self._storage = storage
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autocompress-heartbeat", daemon=True)
        self._thread.start()

    def add(self, trial_id: int) -> None:
        self._storage.record_heartbeat(trial_id)
        with self._lock:
            self._ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                ids = list(self._ids)
            for trial_id in ids:
                try:
                    self._storage.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001 - a trial told meanwhile; the next beat tries again
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class RunStudy:
    """One run's study in `storage_url`. Trials that were RUNNING when a previous driver
    died are marked FAIL ('interrupted') and their params enqueued again on resume. With
    `worker` (several processes on one study, `--worker`): trials record heartbeats, only
    stale RUNNING trials (no heartbeat for GRACE_S) are recovered, and the sampler is
    seeded by the run's seed and `nonce` (this worker's own draws)."""

    def __init__(self, storage_url: str, space: SearchSpace, *, sampler: str = "tpe", seed: int = 0,
                 max_acc_drop: Optional[float] = None, fidelity: Optional[Fidelity] = None, climb_limit: Optional[float] = None,
                 metric=None, worker: bool = False, nonce: str = "", lock_dir=None, study_name: str = STUDY_NAME):
        self.study_name = study_name  # STUDY_NAME in the run's study.db; the run's own name in a shared RDB (--storage)
        self.worker = worker
        self.nonce = nonce  # with worker: pid, host and start time of this process
        self.lock_dir = lock_dir  # with worker: where the planning lock lives (the run directory)
        self.heartbeats: Optional[Heartbeats] = None
        self.space = space
        self.metric = metric  # the task's Metric: names the first objective (None: 'val_metric (score)')
        self.max_acc_drop = max_acc_drop
        self.climb_limit = climb_limit  # the structured start's accuracy-drop limit (autocompress.climb), or None: no climb
        self.fidelity = fidelity  # multi-fidelity (autocompress.fidelity), or None: every candidate gets its full fine-tune
        self.storage_url = storage_url
        self.sampler_name = sampler
        self.seed = seed
        self.study: Optional[optuna.Study] = None

    def using(self, study: optuna.Study) -> "RunStudy":
        """This run's study through another Study object of the same storage (Ray Tune's
        OptunaSearch opens its own): trials are told through the object that asked them."""
        other = copy.copy(self)
        other.study = study
        return other

    def sampler(self) -> optuna.samplers.BaseSampler:
        """A fresh sampler, seeded by the run's seed and the trials so far (a resumed run does
        not replay the first run's draws)."""
        if self.worker:
            return make_sampler(self.sampler_name, seed=worker_seed(self.seed, self.nonce))
        n_done = len(self.study.trials) if self.study is not None else 0
        return make_sampler(self.sampler_name, seed=self.seed + n_done)

    def open(self, *, new: bool) -> None:
        if self.worker and not supports_heartbeat(self.storage_url):
            raise ConfigError(f"--worker needs a storage with heartbeats (SQLite or an RDB URL), got {self.storage_url.split(':', 1)[0]!r}: "
                              "run one search on it without --worker")
        storage = open_storage(self.storage_url, heartbeat=self.worker)
        if self.worker:
            self.heartbeats = Heartbeats(storage)
        if not new:
            self.study = optuna.load_study(study_name=self.study_name, storage=storage)
        self.study = optuna.create_study(study_name=self.study_name, storage=storage, directions=DIRECTIONS, sampler=self.sampler(),
                                         load_if_exists=not new)
        if new:
            for name, params in recipe_trials(self.space):
                self.study.enqueue_trial(params, user_attrs={"recipe": name}, skip_if_exists=True)
        elif self.worker:
            self.recover_stale()
        else:
            for t in self.study.get_trials(deepcopy=False, states=(_STATES.RUNNING,)):
                self.interrupt(t, "interrupted (driver stopped); re-enqueued")
        self.name_objectives()

    def close(self) -> None:
        if self.heartbeats is not None:
            self.heartbeats.close()
            self.heartbeats = None

    # ---- several workers on one study
    def stale_trials(self) -> list[optuna.trial.FrozenTrial]:
        """RUNNING trials whose worker stopped: no heartbeat for GRACE_S seconds (or none
        at all, started more than GRACE_S ago: a driver without heartbeats)."""
        import datetime

        stale_ids = set(compat.stale_trial_ids(self.study))
        now = datetime.datetime.now()
        out = []
        for t in self.study.get_trials(deepcopy=False, states=(_STATES.RUNNING,)):
            if t._trial_id in stale_ids:
                out.append(t)
            elif (t.datetime_start is not None and (now - t.datetime_start).total_seconds() > GRACE_S
                  and not compat.has_heartbeat(self.study, t)):  # the storage is asked only about trials old enough
                out.append(t)
        return out

    def recover_stale(self) -> int:
        """Interrupt (and enqueue again) the stale RUNNING trials; returns how many."""
        stale = self.stale_trials()
        for t in stale:
            self.interrupt(t, "interrupted (its worker stopped); re-enqueued")
        return len(stale)

    def running_count(self) -> int:
        """RUNNING trials of every worker: they count against the shared budget."""
        return len(self.study.get_trials(deepcopy=False, states=(_STATES.RUNNING,)))

    def started(self, trial: optuna.Trial) -> None:
        """A trial this process asked for: it beats (with worker) until told."""
        if self.heartbeats is not None:
            self.heartbeats.add(trial._trial_id)

    def ended(self, trial) -> None:
        if self.heartbeats is not None:
            self.heartbeats.discard(trial._trial_id)

    def name_objectives(self) -> None:
        """Name the objectives in the storage (once; a resumed run of an older version gets
        them too), so optuna-dashboard and Study.trials_dataframe show them by name."""
        names = objective_names(self.metric)
        if self.study.metric_names != names and (self.metric is not None or self.study.metric_names is None):
            with warnings.catch_warnings():  # set_metric_names is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(names)

    # ---- the structured start
    def plan_ahead(self, budget: int) -> int:
        """Enqueue the climb's next trials (autocompress.climb) once the trials it waits for
        (hand recipes, the round in flight) are finished; returns how many were enqueued."""
        if self.climb_limit is None:
            return 0
        if self.worker and self.lock_dir is not None:  # one worker plans a round at a time
            from autocompress.atomic import file_lock

            with file_lock(self.lock_dir, ".plan.lock"):
                return self._plan_ahead(budget)
        return self._plan_ahead(budget)

    def _plan_ahead(self, budget: int) -> int:
        from autocompress import climb
        from autocompress.recipes import KD

        trials = self.study.get_trials(deepcopy=False)
        if any(t.state == _STATES.WAITING or (t.state == _STATES.RUNNING and ("recipe" in t.user_attrs or climb.ROUND in t.user_attrs))
               for t in trials):
            return 0
        done = [climb.Done(t.number, t.params, drop_of(t.user_attrs), *(t.values[1:] if t.state == _STATES.COMPLETE else (None, None)),
                           attrs={k: t.user_attrs[k] for k in climb.ATTRS if k in t.user_attrs})
                for t in trials if t.state.is_finished() and not t.user_attrs.get("interrupted")]
        fine_tune = {k: v for k, v in (self.space.recipe(KD) or {}).items() if k.startswith(("finetune.", "distill."))}
        steps = climb.plan(self.space, done, limit=self.climb_limit, budget=budget, started=len(trials), fine_tune=fine_tune)
        for st in steps:
            self.study.enqueue_trial(st.params, user_attrs=st.attrs)
        return len(steps)

    def climb_in_flight(self, budget: int) -> bool:
        """The structured start waits for a hand recipe or climb trial that is running, with
        nothing of it queued and room for more in its share of the budget: a free worker
        should wait for that trial rather than take a trial from the sampler."""
        if self.climb_limit is None:
            return False
        from autocompress import climb

        trials = self.study.get_trials(deepcopy=False)
        if len(trials) >= math.ceil(climb.CLIMB_SHARE * budget) or any(t.state == _STATES.WAITING for t in trials):
            return False
        return any(t.state == _STATES.RUNNING and ("recipe" in t.user_attrs or climb.ROUND in t.user_attrs) for t in trials)

    # ---- what the study holds
    def built_candidates(self) -> dict[str, int]:
        """candidate id -> number of the trial that built and measured it (or stopped it
        at a rung)."""
        return {t.user_attrs["candidate_id"]: t.number for t in self.study.get_trials(deepcopy=False, states=(_STATES.COMPLETE, _STATES.PRUNED))
                if "duplicate_of" not in t.user_attrs and "candidate_id" in t.user_attrs}

    def rung_board(self) -> Optional[RungBoard]:
        """With multi-fidelity, the rungs' results so far (a resumed run ranks against them)."""
        if self.fidelity is None:
            return None
        return RungBoard(self.fidelity, board_history(self.study.get_trials(deepcopy=False)))

    def finished_count(self) -> int:
        """Trials that count against the budget: complete, stopped at a rung or failed, not
        interrupted."""
        states = (_STATES.COMPLETE, _STATES.FAIL, _STATES.PRUNED)
        return sum(1 for t in self.study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get("interrupted"))

    def records(self) -> list[dict[str, Any]]:
        """Every trial that started (enqueued recipes that never ran are not trials yet),
        with the end-of-search latency re-measurements in place of the recorded ones."""
        again = self.remeasured()
        out = []
        for t in self.study.get_trials(deepcopy=False):
            if t.state == _STATES.WAITING:
                continue
            rec = record(t)
            if str(t.number) in again:
                rec["latency_ratio_recorded"] = rec.get("latency_ratio")
                rec.update(again[str(t.number)], remeasured=True)
            out.append(rec)
        return out

    def record_of(self, number: int) -> dict[str, Any]:
        return record(compat.frozen_by_number(self.study, number))

    def remeasured(self) -> dict[str, dict[str, Any]]:
        """Trial number (str) -> its latency re-measured at the end of a search. Kept on
        the study (a finished trial's attributes are frozen); the trials keep the values
        they were told with."""
        return dict(self.study.user_attrs.get(REMEASURED, {}))

    def store_remeasured(self, number: int, values: dict[str, Any]) -> None:
        self.study.set_user_attr(REMEASURED, {**self.remeasured(), str(number): values})

    # ---- how a trial ends
    def describe(self, trial: optuna.Trial, cfg) -> None:
        """The candidate's id, its description, short label and the same in words, on its trial."""
        from autocompress.techniques import short_label

        trial.set_user_attr("candidate_id", cfg.id)
        trial.set_user_attr("description", cfg.describe())
        trial.set_user_attr("label", short_label(cfg))
        trial.set_user_attr("details", cfg.explain())

    def tell_complete(self, trial: optuna.Trial, values, attrs: dict[str, Any]) -> None:
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if self.max_acc_drop is not None:  # feasible when <= 0 (Optuna's constrained samplers)
            excess = attrs["metric_drop"] - self.max_acc_drop
            trial.set_user_attr(CONSTRAINT, [excess])
            trial.set_constraint(CONSTRAINT, excess)
        self.study.tell(trial, [float(v) for v in values])
        self.ended(trial)

    def tell_outcome(self, trial: optuna.Trial, outcome: Outcome, t_total: float) -> None:
        self.tell_complete(trial, outcome.values, {**outcome.attrs, "t_total": t_total})

    def tell_failed(self, trial: optuna.Trial, reason: str, *, interrupted: bool = False) -> None:
        trial.set_user_attr("failure_reason", reason)
        if interrupted:
            trial.set_user_attr("interrupted", True)
        self.study.tell(trial, state=_STATES.FAIL)
        self.ended(trial)

    def tell_stopped(self, trial: optuna.Trial, reason: str, rung_results: list) -> None:
        """A candidate not promoted at a rung: PRUNED (never in the front), with why."""
        trial.set_user_attr("stop_reason", reason)
        trial.set_user_attr("rung_results", rung_results)
        self.study.tell(trial, state=_STATES.PRUNED)
        self.ended(trial)

    def tell_duplicate(self, trial: optuna.Trial, original: int) -> None:
        """The same candidate was already built and measured by trial `original`: `trial`
        takes its result and attributes, marked duplicate_of."""
        from autocompress.climb import ATTRS

        src = self.study.trials[original]
        for k, v in src.user_attrs.items():
            if k not in ("recipe", "retry_of", "t_total", *ATTRS):  # what the trial was, not what it measured
                trial.set_user_attr(k, v)
        trial.set_user_attr("duplicate_of", original)
        for key, value in src.constraints.items():  # as constrained as the trial it copies
            trial.set_constraint(key, value)
        trial.set_user_attr("t_total", 0.0)
        if src.state == _STATES.PRUNED:  # stopped at a rung: so is its duplicate
            self.study.tell(trial, state=_STATES.PRUNED)
        else:
            self.study.tell(trial, list(src.values))
        self.ended(trial)

    def interrupt(self, trial, reason: str) -> None:
        """A trial that did not finish (a FrozenTrial, of this process or a dead one): FAIL,
        marked interrupted (not counted against the budget), its params enqueued again so the
        next run builds it."""
        compat.fail_stored_trial(self.study, trial, {"failure_reason": reason, "interrupted": True})
        self.ended(trial)
        if trial.params:
            from autocompress.climb import ATTRS

            kept = {k: trial.user_attrs[k] for k in ("recipe", *ATTRS) if k in trial.user_attrs}
            self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, **kept})


def worker_seed(seed: int, nonce: str) -> int:
    """A worker's sampler seed: the run's seed and its nonce (pid, host, start time), so two
    workers on one study draw different trials."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{nonce}".encode()).digest()[:4], "big") & 0x7FFFFFFF


class StudyBacked:
    """The study side of the Backend protocol for a backend that holds its trials in a
    RunStudy (`self.run_study`); the backend adds `optimize`."""

    run_study: RunStudy

    @property
    def max_acc_drop(self) -> Optional[float]:
        return self.run_study.max_acc_drop

    @property
    def study(self) -> Optional[optuna.Study]:
        return self.run_study.study

    def open(self, *, new: bool) -> None:
        self.run_study.open(new=new)

    def close(self) -> None:
        self.run_study.close()

    def finished_count(self) -> int:
        return self.run_study.finished_count()

    def records(self) -> list[dict[str, Any]]:
        return self.run_study.records()

    def store_remeasured(self, number: int, values: dict[str, Any]) -> None:
        self.run_study.store_remeasured(number, values)


__all__ = ["CONSTRAINT", "DIRECTIONS", "REMEASURED", "STUDY_NAME", "RunStudy", "StudyBacked", "make_sampler", "supports_heartbeat", "worker_seed", "record", "trial_params"]
