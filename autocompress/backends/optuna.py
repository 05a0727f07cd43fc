"""The local backend: the run's Optuna study (backends.study) driven by ask/tell in this
process, so a failing candidate is recorded with its reason and the search goes on.
Trials run one after another here, or with a TrialPool (backends.local_pool) several at a
time in worker processes on this machine."""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Callable, Optional


from autocompress.backends import _optuna_compat as compat
from autocompress.backends import STUDY_NAME
from autocompress.backends.study import RunStudy, StudyBacked, make_sampler, record, trial_params  # noqa: F401  (re-exported)
from autocompress.config import CandidateConfig
from autocompress.errors import CandidateError, CandidateStopped, one_line
from autocompress.fidelity import Fidelity, RungBoard
from autocompress.pipeline import Outcome
from autocompress.space import SearchSpace


def _decider(board: RungBoard, number: int) -> Callable[[int, float, float], Any]:
    return lambda rung, acc, ratio: board.decide(rung, number, acc, ratio)


class OptunaBackend(StudyBacked):
    """Backend (see backends.Backend) over a RunStudy in `storage_url`: trials one after another here."""

    def __init__(self, storage_url: str, space: SearchSpace, *, sampler: str = "tpe", seed: int = 0, max_acc_drop: Optional[float] = None,
                 fidelity: Optional[Fidelity] = None, climb_limit: Optional[float] = None, pool=None, metric=None, worker: bool = False,
                 nonce: str = "", lock_dir=None, study_name: str = STUDY_NAME):
        self.run_study = RunStudy(storage_url, space, sampler=sampler, seed=seed, max_acc_drop=max_acc_drop, fidelity=fidelity,
                                  climb_limit=climb_limit, metric=metric, worker=worker, nonce=nonce, lock_dir=lock_dir,
                                  study_name=study_name)
        self.pool = pool  # a started backends.local_pool.TrialPool: trials run in its workers, several at once

    # ---- the loop
    def optimize(
        self,
        evaluate: Callable[..., Outcome],
        *,
        budget: int,
        time_budget: Optional[float] = None,
        on_trial: Callable[[dict[str, Any]], None] = lambda record: None,
        clock: Callable[[], float] = time.monotonic,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Ask/tell until `budget` trials are finished, `time_budget` seconds have passed or
        `stop()` is true (checked between trials: the trial in flight always finishes).
        `evaluate(cfg, number, **kw)` builds one candidate (kw: the fidelity and rung decisions)."""
        if self.pool is not None:
            return self._optimize_pooled(budget=budget, time_budget=time_budget, on_trial=on_trial, clock=clock, stop=stop)
        rs = self.run_study
        study = rs.study
        start = clock()
        built = rs.built_candidates()
        board = rs.rung_board()
        while rs.finished_count() + (rs.running_count() if rs.worker else 0) < budget:
            if time_budget is not None and clock() - start >= time_budget:
                logging.getLogger(__name__).info("time budget reached")
                break
            if stop():
                break
            asked = self._ask(built, on_trial, budget)
            if asked is None:
                continue
            trial, cfg = asked
            t0 = time.perf_counter()
            kw = {} if board is None else {"fidelity": rs.fidelity, "at_rung": _decider(board, trial.number)}
            try:
                outcome = evaluate(cfg, trial.number, **kw)
            except CandidateError as exc:
                trial.set_user_attr("t_total", time.perf_counter() - t0)
                rs.tell_failed(trial, str(exc))
            except CandidateStopped as stopped:
                trial.set_user_attr("t_total", time.perf_counter() - t0)
                rs.tell_stopped(trial, stopped.reason, stopped.rung_results)
                built[cfg.id] = trial.number
            except KeyboardInterrupt:
                rs.tell_failed(trial, "interrupted (Ctrl-C)", interrupted=True)
                raise
            else:
                rs.tell_outcome(trial, outcome, time.perf_counter() - t0)
                built[cfg.id] = trial.number
            on_trial(record(compat.frozen(study, trial)))

    def _ask(self, built: dict[str, int], on_trial, budget: int, building: Optional[dict[str, int]] = None):
        """The next trial to build, as (trial, its candidate), or None when the trial
        asked was told at once (its space could not be sampled, or its candidate was built
        before and it takes that result). `building`: candidate id -> trial number of the
        candidates in flight; a trial asking for one of those is returned as (trial, cfg, number)."""
        rs = self.run_study
        study = rs.study
        if rs.worker:  # other workers' trials: stale ones are built again, built ones are not
            rs.recover_stale()
            built.update(rs.built_candidates())
        rs.plan_ahead(budget)
        with warnings.catch_warnings():  # heartbeats are recorded here, not by Study.optimize
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        rs.started(trial)
        try:
            cfg: CandidateConfig = rs.space.suggest(trial)
        except Exception as exc:  # noqa: BLE001
            rs.tell_failed(trial, f"suggest: {one_line(exc)}")
            on_trial(record(compat.frozen(study, trial)))
            return None
        rs.describe(trial, cfg)
        if cfg.id in built:
            rs.tell_duplicate(trial, built[cfg.id])
            on_trial(record(compat.frozen(study, trial)))
            return None
        if building is not None and cfg.id in building:
            return trial, cfg, building[cfg.id]
        return trial, cfg

    def _optimize_pooled(self, *, budget: int, time_budget: Optional[float], on_trial, clock, stop=lambda: False) -> None:
        """The same loop with the pool's workers: a trial is asked whenever a worker is
        idle and the budget allows (trials in flight count against it); the study is told
        as each finishes. While the structured start waits for its trial in flight, a free
        worker waits too (the sampler's start-up would spend it at random). A trial asking
        for a candidate that is still being built waits for it and then takes its result."""
        rs = self.run_study
        study = rs.study
        pool = self.pool
        start = clock()
        built = rs.built_candidates()
        board = rs.rung_board()
        if board is not None:
            pool.set_decider(lambda number, rung, acc, ratio: board.decide(rung, number, acc, ratio))
        flight: dict[int, tuple[Any, CandidateConfig]] = {}  # trial number -> (trial, candidate)
        waiting: list[tuple[Any, CandidateConfig, int]] = []  # (trial, candidate, number of the trial building it)
        stopped = False
        try:
            while True:
                while pool.idle() and not stopped:
                    in_flight = rs.running_count() if rs.worker else len(flight) + len(waiting)  # every worker's
                    if rs.finished_count() + in_flight >= budget:
                        break
                    if time_budget is not None and clock() - start >= time_budget:
                        logging.getLogger(__name__).info("time budget reached")
                        stopped = True
                        break
                    if stop():  # the trials in flight finish
                        stopped = True
                        break
                    if flight and rs.climb_in_flight(budget):  # its next round depends on the trial in flight
                        break
                    building = {cfg.id: n for n, (_, cfg) in flight.items()}
                    asked = self._ask(built, on_trial, budget, building)
                    if asked is None:
                        continue
                    if len(asked) == 3:
                        waiting.append(asked)
                        continue
                    trial, cfg = asked
                    flight[trial.number] = (trial, cfg)
                    pool.submit(pool.idle()[0], trial.number, cfg, fidelity=rs.fidelity)
                if not flight:
                    break
                done = pool.next_finished()
                trial, cfg = flight.pop(done.number)
                trial.set_user_attr("t_total", done.seconds)
                trial.set_user_attr("worker", done.worker)
                if done.kind == "complete":
                    values, attrs = done.payload
                    rs.tell_complete(trial, values, {**attrs, "t_total": done.seconds})
                    built[cfg.id] = trial.number
                elif done.kind == "stopped":
                    rs.tell_stopped(trial, *done.payload)
                    built[cfg.id] = trial.number
                else:
                    rs.tell_failed(trial, done.payload)
                on_trial(record(compat.frozen(study, trial)))
                for item in [w for w in waiting if w[2] == done.number]:
                    waiting.remove(item)
                    other, _, original = item
                    if original in built.values():
                        rs.tell_duplicate(other, original)
                    else:
                        rs.tell_failed(other, f"the same candidate as trial {original}, which failed: {done.payload}")
                    on_trial(record(compat.frozen(study, other)))
        except KeyboardInterrupt:
            pool.interrupt()
            for trial in [t for t, _ in flight.values()] + [t for t, _, _ in waiting]:  # built again on --resume
                rs.interrupt(compat.frozen(study, trial), "interrupted (Ctrl-C); re-enqueued")
            raise
