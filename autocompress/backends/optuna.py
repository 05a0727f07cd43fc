"""The local backend: the run's Optuna study (backends.study) driven by ask/tell in this
process, one trial after another, so a failing candidate is recorded with its reason and
the search goes on."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional


from autocompress.backends import _optuna_compat as compat
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
                 fidelity: Optional[Fidelity] = None, climb_limit: Optional[float] = None):
        self.run_study = RunStudy(storage_url, space, sampler=sampler, seed=seed, max_acc_drop=max_acc_drop, fidelity=fidelity,
                                  climb_limit=climb_limit)

    # ---- the loop
    def optimize(
        self,
        evaluate: Callable[..., Outcome],
        *,
        budget: int,
        time_budget: Optional[float] = None,
        on_trial: Callable[[dict[str, Any]], None] = lambda record: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Ask/tell until `budget` trials are finished or `time_budget` seconds have passed
        (checked between trials: the trial in flight always finishes). `evaluate(cfg,
        number, **kw)` builds one candidate (kw: the fidelity and rung decisions)."""
        rs = self.run_study
        study = rs.study
        start = clock()
        built = rs.built_candidates()
        board = rs.rung_board()
        while rs.finished_count() < budget:
            if time_budget is not None and clock() - start >= time_budget:
                logging.getLogger(__name__).info("time budget reached")
                break
            rs.plan_ahead(budget)
            trial = study.ask()
            try:
                cfg: CandidateConfig = rs.space.suggest(trial)
            except Exception as exc:  # noqa: BLE001
                rs.tell_failed(trial, f"suggest: {one_line(exc)}")
                on_trial(record(compat.frozen(study, trial)))
                continue
            rs.describe(trial, cfg)
            if cfg.id in built:
                rs.tell_duplicate(trial, built[cfg.id])
            else:
                t0 = time.perf_counter()
                kw = {} if board is None else {"fidelity": rs.fidelity, "at_rung": _decider(board, trial.number)}
                try:
                    outcome = evaluate(cfg, trial.number, **kw)
                except CandidateError as exc:
                    trial.set_user_attr("t_total", time.perf_counter() - t0)
                    rs.tell_failed(trial, str(exc))
                except CandidateStopped as stop:
                    trial.set_user_attr("t_total", time.perf_counter() - t0)
                    rs.tell_stopped(trial, stop.reason, stop.rung_results)
                    built[cfg.id] = trial.number
                except KeyboardInterrupt:
                    rs.tell_failed(trial, "interrupted (Ctrl-C)", interrupted=True)
                    raise
                else:
                    rs.tell_outcome(trial, outcome, time.perf_counter() - t0)
                    built[cfg.id] = trial.number
            on_trial(record(compat.frozen(study, trial)))
