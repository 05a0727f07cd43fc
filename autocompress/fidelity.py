"""Multi-fidelity search by asynchronous successive halving (ASHA's promotion rule), the
same for both backends.

The fidelity is the fine-tune length. With rungs (50, 150) every candidate is fine-tuned
50 steps; then it is ranked among all candidates that reached that rung so far, and only
the top 1/eta go on to the full 150 steps (a second cosine cycle from where the first
ended) and the full ONNX pipeline. A candidate that is not promoted stops there: its trial
is PRUNED, never COMPLETE, so only full-fidelity results enter the Pareto front.

Ranking at a rung: two objectives, the torch validation metric of the fine-tuning model
(its score, Metric.score: the value, negated where lower is better; maximised) and the latency ratio to the teacher measured on the candidate's exported
(and quantized) ONNX file (minimised), ordered as NSGA-II orders a population:
non-dominated rank first, then crowding distance (wider first), then accuracy. Not a
scalarized score: no weight between accuracy and speed has to be chosen, and a fast
candidate with lower accuracy is promoted as readily as an accurate slow one.

Why our own stage and not Optuna's pruners or Tune's ASHA: Optuna's pruners do not work
for multi-objective studies, and Tune's ASHA ranks one scalar metric. The decisions are
pure functions of the rung's results (`promotion_order`, `RungBoard`), testable without
a search; the local backend holds a `RungBoard`, the Ray backend serves one as an actor.
Pure: numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Optional, Sequence

import numpy as np

from autocompress.errors import ConfigError
from autocompress.pareto import nondominated_ranks


@dataclass(frozen=True)
class Fidelity:
    """Fine-tune steps at each rung (increasing; the last is the full fine-tune) and the
    reduction factor eta (the top 1/eta of a rung is promoted)."""

    rungs: tuple[int, ...]
    reduction_factor: int = 3

    @classmethod
    def parse(cls, rungs: str | Sequence[int], reduction_factor: Optional[int] = None) -> "Fidelity":
        """From '--fidelity 50,150' (or a list) and '--reduction-factor 3'; ConfigError
        naming the option and the bad value otherwise."""
        raw = rungs
        try:
            steps = tuple(int(s) for s in (rungs.split(",") if isinstance(rungs, str) else rungs))
        except ValueError:
            raise ConfigError(f"--fidelity must be fine-tune steps per rung, comma-separated (e.g. 50,150), got {raw!r}") from None
        if len(steps) < 2:
            raise ConfigError(f"--fidelity needs at least two rungs (a short and the full fine-tune, e.g. 50,150), got {raw!r}")
        if steps[0] < 1 or any(b <= a for a, b in zip(steps, steps[1:])):
            raise ConfigError(f"--fidelity rungs must be increasing step counts >= 1, got {raw!r}")
        eta = 3 if reduction_factor is None else reduction_factor
        if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
            raise ConfigError(f"--reduction-factor must be an integer >= 2, got {reduction_factor!r}")
        return cls(steps, eta)

    @property
    def full_steps(self) -> int:
        return self.rungs[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"rungs": list(self.rungs), "reduction_factor": self.reduction_factor}

    def describe(self) -> str:
        return f"fine-tune {' -> '.join(map(str, self.rungs))} steps, top 1/{self.reduction_factor} promoted at each rung"


@dataclass(frozen=True)
class Decision:
    promote: bool
    position: int  # 0-based place of the candidate in the rung's order
    n: int  # candidates at the rung, this one included
    keep: int  # how many places are promoted: ceil(n / eta)
    reason: str


def _crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance within one front (boundary points: infinite)."""
    n, m = points.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(points[:, k], kind="stable")
        span = points[order[-1], k] - points[order[0], k]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (points[order[2:], k] - points[order[:-2], k]) / span
    return dist


def promotion_order(accuracy: Sequence[float], latency_ratio: Sequence[float]) -> list[int]:
    """Indices from most to least promising: non-dominated rank over (accuracy max,
    latency ratio min), then crowding distance (larger first), then accuracy."""
    acc = np.asarray(accuracy, dtype=float)
    pts = np.column_stack([-acc, np.asarray(latency_ratio, dtype=float)])
    if len(pts) == 0:
        return []
    ranks = nondominated_ranks(pts)
    crowd = np.zeros(len(pts))
    for r in np.unique(ranks):
        idx = np.flatnonzero(ranks == r)
        crowd[idx] = _crowding(pts[idx])
    return sorted(range(len(pts)), key=lambda i: (ranks[i], -crowd[i], -acc[i], i))


class RungBoard:
    """The results of every candidate at every rung, and the promotion decision for a
    candidate that just reached one (asynchronous: against the results so far)."""

    def __init__(self, fidelity: Fidelity, history: Iterable[tuple[int, Hashable, float, float]] = ()):
        self.fidelity = fidelity
        self._results: dict[int, dict[Hashable, tuple[float, float]]] = {}
        for rung, key, acc, lat in history:
            self._results.setdefault(int(rung), {})[key] = (float(acc), float(lat))

    def results(self, rung: int) -> dict[Hashable, tuple[float, float]]:
        return dict(self._results.get(rung, {}))

    def decide(self, rung: int, key: Hashable, accuracy: float, latency_ratio: float) -> Decision:
        """Record `key`'s result at `rung` and decide: promoted iff it is within the top
        ceil(n / eta) of the rung's n results by `promotion_order`."""
        if not 0 <= rung < len(self.fidelity.rungs) - 1:
            raise ValueError(f"rung {rung} is not a rung with a promotion (rungs {self.fidelity.rungs})")
        at = self._results.setdefault(rung, {})
        at[key] = (float(accuracy), float(latency_ratio))
        keys = list(at)
        order = promotion_order([at[k][0] for k in keys], [at[k][1] for k in keys])
        position = [keys[i] for i in order].index(key)
        n, keep = len(keys), math.ceil(len(keys) / self.fidelity.reduction_factor)
        steps = self.fidelity.rungs[rung]
        promote = position < keep
        verdict = "promoted" if promote else "stopped"
        reason = (f"{verdict} at rung {rung} ({steps} steps): place {position + 1} of {n} "
                  f"(torch val score {accuracy:.4g}, latency x{latency_ratio:.3f}), top {keep} go on")
        return Decision(promote, position, n, keep, reason)


def board_history(trials: Iterable[Any]) -> list[tuple[int, int, float, float]]:
    """(rung, trial number, score, latency ratio) of finished trials' `rung_results`
    attributes (duplicates, which copy their original's, left out): a resumed search
    ranks against everything measured before."""
    out = []
    for t in trials:
        if "duplicate_of" in t.user_attrs:
            continue
        for r in t.user_attrs.get("rung_results", []):
            score = r["score"] if "score" in r else r.get("val_metric", r.get("val_accuracy"))  # older runs: accuracy, its own score
            out.append((int(r["rung"]), t.number, float(score), float(r["latency_ratio"])))
    return out


__all__ = ["Decision", "Fidelity", "RungBoard", "board_history", "promotion_order"]
