"""The local backend: an Optuna multi-objective study in SQLite, driven by ask/tell so a
failing candidate is recorded with its reason and the search goes on.

Objectives: maximize val accuracy, minimize latency ratio to the teacher, minimize size.
--max-acc-drop becomes an Optuna constraint (TPE and NSGA-II use it); nothing is discarded.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Callable, Optional

import optuna

from autocompress.backends import SAMPLERS, Outcome
from autocompress.backends.halving import Fidelity, RungBoard, board_history
from autocompress.config import CandidateConfig
from autocompress.errors import CandidateError, CandidateStopped, ConfigError, one_line
from autocompress.space import SearchSpace

STUDY_NAME = "autocompress"
DIRECTIONS = ["maximize", "minimize", "minimize"]
_CONSTRAINT = "constraint"
REMEASURED = "remeasured"  # study attribute: trial number -> end-of-search latency re-measurement
_NOT_IN_RECORDS = {"stage_seconds", _CONSTRAINT, "config", "rung_results", "measure_windows", "busy_windows"}  # kept on the trial only

# The classic recipes a user would try by hand; enqueued first so the front is never worse.
_INT8 = {"quantize.activations": ["uint8", "int8"], "quantize.format": ["qoperator", "qdq"], "quantize.calibration": "minmax"}
_KD = {"finetune.steps": "max", "distill.alpha": 0.5, "distill.temperature": 4.0}
_PRUNE50 = {"prune.ratio": 0.5, "prune.criterion": "l1", "prune.round_to": 1}
RECIPES: dict[str, dict[str, Any]] = {
    "int8 teacher": {"prune.ratio": 0.0, "lowrank.rank_ratio": 1.0, "finetune.steps": 0, "quantize.mode": "int8", **_INT8},
    "prune 50% + KD": {**_PRUNE50, "lowrank.rank_ratio": 1.0, **_KD, "quantize.mode": "fp32"},
    "prune 50% + KD + int8": {**_PRUNE50, "lowrank.rank_ratio": 1.0, **_KD, "quantize.mode": "int8", **_INT8},
}


def _constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    return trial.user_attrs.get(_CONSTRAINT, [0.0])


def make_sampler(name: str, *, seed: int, constrained: bool) -> optuna.samplers.BaseSampler:
    cf = _constraints if constrained else None
    if name == "tpe":
        with warnings.catch_warnings():  # multivariate + group are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # group=True: the space is conditional (no alpha/T without fine-tune, no int8
            # options for fp32); grouping keeps multivariate TPE joint within each branch.
            return optuna.samplers.TPESampler(seed=seed, constraints_func=cf, n_startup_trials=10, multivariate=True, group=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=cf, population_size=20)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"--sampler must be one of {list(SAMPLERS)}, got {name!r}")


def _resolve_recipe(space: SearchSpace, recipe: dict[str, Any]) -> Optional[dict[str, Any]]:
    wanted = dict(recipe)
    if wanted.get("finetune.steps") == "max":
        p = space.params["finetune.steps"]
        wanted["finetune.steps"] = max(getattr(p, "values", None) or [getattr(p, "high", getattr(p, "value", 0))])
    params = space.recipe(wanted)
    if params is not None:  # hand recipes keep the original blocks
        params.update({f"blocks.{t}": "keep" for t, choices in space.block_choices if len(choices) > 1 and "keep" in choices})
    return params


def trial_params(storage_url: str, number: int) -> dict[str, Any]:
    """The params of trial `number` of the run's study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage_url)
    return dict(study.trials[number].params)


def tell_duplicate(study: optuna.Study, trial: optuna.Trial, original: int) -> None:
    """The same candidate was already built and measured by trial `original`: `trial`
    takes its result and attributes, marked duplicate_of."""
    src = study.trials[original]
    for k, v in src.user_attrs.items():
        if k not in ("recipe", "retry_of", "t_total"):
            trial.set_user_attr(k, v)
    trial.set_user_attr("duplicate_of", original)
    trial.set_user_attr("t_total", 0.0)
    if src.state == optuna.trial.TrialState.PRUNED:  # stopped at a rung: so is its duplicate
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, list(src.values))


def tell_stopped(study: optuna.Study, trial: optuna.Trial, reason: str, rung_results: list) -> None:
    """A candidate not promoted at a rung: PRUNED (never in the front), with why."""
    trial.set_user_attr("stop_reason", reason)
    trial.set_user_attr("rung_results", rung_results)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def _decider(board: RungBoard, number: int) -> Callable[[int, float, float], Any]:
    return lambda rung, acc, ratio: board.decide(rung, number, acc, ratio)


class OptunaBackend:
    """Drives one study in `storage_url`. Trials that were RUNNING when a previous driver
    died are marked FAIL ('interrupted') and their params enqueued again on resume."""

    def __init__(self, storage_url: str, space: SearchSpace, *, sampler: str = "tpe", seed: int = 0, max_acc_drop: Optional[float] = None,
                 fidelity: Optional[Fidelity] = None):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        self.max_acc_drop = max_acc_drop
        self.fidelity = fidelity  # multi-fidelity (backends.halving), or None: every candidate gets its full fine-tune
        self._storage_url = storage_url
        self._sampler_name = sampler
        self._seed = seed
        self.study: Optional[optuna.Study] = None

    # ---- setup
    def open(self, *, new: bool) -> None:
        storage = optuna.storages.RDBStorage(self._storage_url)
        existing = None if new else optuna.load_study(study_name=STUDY_NAME, storage=storage)
        n_done = len(existing.trials) if existing is not None else 0
        sampler = make_sampler(self._sampler_name, seed=self._seed + n_done, constrained=self.max_acc_drop is not None)
        self.study = optuna.create_study(study_name=STUDY_NAME, storage=storage, directions=DIRECTIONS, sampler=sampler, load_if_exists=not new)
        if new:
            for name, recipe in RECIPES.items():
                params = _resolve_recipe(self.space, recipe)
                if params is not None:
                    self.study.enqueue_trial(params, user_attrs={"recipe": name}, skip_if_exists=True)
        else:
            self._recover_interrupted()

    def _recover_interrupted(self) -> None:
        assert self.study is not None
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            self._interrupt(t._trial_id, t.number, t.params, "interrupted (driver stopped); re-enqueued")

    def _interrupt(self, trial_id: int, number: int, params: dict[str, Any], reason: str) -> None:
        """A trial that did not finish: FAIL, marked interrupted (not counted against the
        budget), its params enqueued again so the next run builds it."""
        storage = self.study._storage  # type: ignore[union-attr]
        storage.set_trial_user_attr(trial_id, "failure_reason", reason)
        storage.set_trial_user_attr(trial_id, "interrupted", True)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        if params:
            self.study.enqueue_trial(params, user_attrs={"retry_of": number})  # type: ignore[union-attr]

    def built_candidates(self) -> dict[str, int]:
        """candidate id -> number of the trial that built and measured it (or stopped it
        at a rung)."""
        assert self.study is not None
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return {t.user_attrs["candidate_id"]: t.number for t in self.study.get_trials(deepcopy=False, states=states)
                if "duplicate_of" not in t.user_attrs and "candidate_id" in t.user_attrs}

    def rung_board(self) -> Optional[RungBoard]:
        """With multi-fidelity, the rungs' results so far (a resumed run ranks against them)."""
        if self.fidelity is None:
            return None
        assert self.study is not None
        return RungBoard(self.fidelity, board_history(self.study.get_trials(deepcopy=False)))

    def finished_count(self) -> int:
        """Trials that count against the budget: complete, stopped at a rung or failed, not
        interrupted."""
        assert self.study is not None
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
        return sum(1 for t in self.study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get("interrupted"))

    # ---- the loop
    def optimize(
        self,
        evaluate: Callable[[CandidateConfig, int], Outcome],
        *,
        budget: int,
        time_budget: Optional[float] = None,
        on_trial: Callable[[dict[str, Any]], None] = lambda record: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Ask/tell until `budget` trials are finished or `time_budget` seconds have passed
        (checked between trials: the trial in flight always finishes)."""
        assert self.study is not None
        start = clock()
        built = self.built_candidates()
        board = self.rung_board()
        while self.finished_count() < budget:
            if time_budget is not None and clock() - start >= time_budget:
                logging.getLogger(__name__).info("time budget reached")
                break
            trial = self.study.ask()
            try:
                cfg = self.space.suggest(trial)
            except Exception as exc:  # noqa: BLE001
                self._fail(trial, f"suggest: {one_line(exc)}")
                on_trial(self._record(self.study._storage.get_trial(trial._trial_id)))
                continue
            trial.set_user_attr("candidate_id", cfg.id)
            trial.set_user_attr("description", cfg.describe())
            if cfg.id in built:
                self._tell_duplicate(trial, built[cfg.id])
            else:
                t0 = time.perf_counter()
                kw = {} if board is None else {"fidelity": self.fidelity, "at_rung": _decider(board, trial.number)}
                try:
                    outcome = evaluate(cfg, trial.number, **kw)
                except CandidateError as exc:
                    trial.set_user_attr("t_total", time.perf_counter() - t0)
                    self._fail(trial, str(exc))
                except CandidateStopped as stop:
                    trial.set_user_attr("t_total", time.perf_counter() - t0)
                    tell_stopped(self.study, trial, stop.reason, stop.rung_results)
                    built[cfg.id] = trial.number
                except KeyboardInterrupt:
                    self._fail(trial, "interrupted (Ctrl-C)", interrupted=True)
                    raise
                else:
                    for k, v in outcome.attrs.items():
                        trial.set_user_attr(k, v)
                    trial.set_user_attr("t_total", time.perf_counter() - t0)
                    if self.max_acc_drop is not None:
                        trial.set_user_attr(_CONSTRAINT, [outcome.attrs["acc_drop_pts"] - self.max_acc_drop])
                    self.study.tell(trial, list(outcome.values))
                    built[cfg.id] = trial.number
            on_trial(self._record(self.study._storage.get_trial(trial._trial_id)))

    def _fail(self, trial: optuna.Trial, reason: str, *, interrupted: bool = False) -> None:
        trial.set_user_attr("failure_reason", reason)
        if interrupted:
            trial.set_user_attr("interrupted", True)
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)  # type: ignore[union-attr]

    def _tell_duplicate(self, trial: optuna.Trial, original: int) -> None:
        assert self.study is not None
        tell_duplicate(self.study, trial, original)

    # ---- results
    def records(self) -> list[dict[str, Any]]:
        """Every trial that started (enqueued recipes that never ran are not trials yet),
        with the end-of-search latency re-measurements in place of the recorded ones."""
        assert self.study is not None
        again = self.remeasured()
        out = []
        for t in self.study.get_trials(deepcopy=False):
            if t.state == optuna.trial.TrialState.WAITING:
                continue
            rec = self._record(t)
            if str(t.number) in again:
                rec["latency_ratio_recorded"] = rec.get("latency_ratio")
                rec.update(again[str(t.number)], remeasured=True)
            out.append(rec)
        return out

    def remeasured(self) -> dict[str, dict[str, Any]]:
        """Trial number (str) -> its latency re-measured at the end of a search. Kept on
        the study (a finished trial's attributes are frozen); the trials keep the values
        they were told with."""
        assert self.study is not None
        return dict(self.study.user_attrs.get(REMEASURED, {}))

    def store_remeasured(self, number: int, values: dict[str, Any]) -> None:
        assert self.study is not None
        self.study.set_user_attr(REMEASURED, {**self.remeasured(), str(number): values})

    @staticmethod
    def _record(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
        rec: dict[str, Any] = {"number": t.number, "state": t.state.name}
        rec.update({f"param.{k}": round(v, 10) if isinstance(v, float) else v for k, v in t.params.items()})  # 0.7, not 0.7000000000000001
        rec.update({k: v for k, v in t.user_attrs.items() if k not in _NOT_IN_RECORDS})
        for r in t.user_attrs.get("rung_results", []):  # multi-fidelity: what the candidate showed at each rung
            rec[f"rung{r['rung']}_val_accuracy"] = r["val_accuracy"]
            rec[f"rung{r['rung']}_latency_ratio"] = r["latency_ratio"]
        rec.update({f"t_{k}": v for k, v in t.user_attrs.get("stage_seconds", {}).items()})
        return rec
