"""Pareto set and hypervolume: pure numpy, all objectives minimised.

Search results are compared in a space normalised to the teacher:
    (accuracy drop in points, latency ratio to the teacher, size ratio to the teacher)
and the hypervolume reference point is REFERENCE = (10 points, 1.0, 1.0): only candidates
that are faster *and* smaller than the teacher and lose less than 10 points add volume.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

REFERENCE = (10.0, 1.0, 1.0)  # (accuracy drop in points, latency ratio, size ratio)
DROP_TOLERANCE = 1e-9  # a drop equal to the limit is within it (the limit plus this, against float rounding)


def reference_point(metric: Any = None, teacher_value: float = 0.0) -> tuple[float, float, float]:
    """The hypervolume's reference for a run judged by `metric` (evaluation.metrics.Metric;
    None: accuracy): REFERENCE, its drop Metric.drop_reference (10 points of accuracy, 10% of
    the teacher's value for a metric without points)."""
    return REFERENCE if metric is None else (metric.drop_reference(teacher_value), *REFERENCE[1:])


def pareto_mask(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `points` (minimisation).

    A row is dominated when another row is <= in every objective and < in one.
    Identical rows do not dominate each other, so both are kept.
    """
    p = np.asarray(points, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"points must be a 2-D array, got shape {p.shape}")
    if len(p) == 0:
        return np.zeros(0, dtype=bool)
    le = (p[:, None, :] <= p[None, :, :]).all(axis=2)  # le[j, i]: row j <= row i everywhere
    lt = (p[:, None, :] < p[None, :, :]).any(axis=2)
    dominated = (le & lt).any(axis=0)
    return ~dominated


def nondominated_ranks(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Front index of every row (0: non-dominated, 1: non-dominated once front 0 is
    removed, ...), all objectives minimised: NSGA-II's sorting, by `pareto_mask`."""
    p = np.asarray(points, dtype=float)
    ranks = np.full(len(p), -1)
    left, rank = np.arange(len(p)), 0
    while left.size:
        front = pareto_mask(p[left])
        ranks[left[front]] = rank
        left, rank = left[~front], rank + 1
    return ranks


def hypervolume(points: np.ndarray | Sequence[Sequence[float]], reference: Sequence[float] = REFERENCE) -> float:
    """Volume dominated by `points` and bounded by `reference` (minimisation).

    Points that are not strictly better than the reference in every objective add nothing.
    Exact, by slicing along the last objective; fine for the few hundred points of a search.
    """
    ref = np.asarray(reference, dtype=float)
    p = np.asarray(points, dtype=float)
    if p.size == 0:
        return 0.0
    if p.ndim != 2 or p.shape[1] != len(ref):
        raise ValueError(f"points must have shape (n, {len(ref)}) to match the reference point, got {p.shape}")
    p = p[(p < ref).all(axis=1)]
    if len(p) == 0:
        return 0.0
    return float(_hv(p[pareto_mask(p)], ref))


def _hv(p: np.ndarray, ref: np.ndarray) -> float:
    if p.shape[1] == 1:
        return float(ref[0] - p[:, 0].min())
    p = p[np.argsort(p[:, -1], kind="stable")]
    total = 0.0
    for i in range(len(p)):
        upper = p[i + 1, -1] if i + 1 < len(p) else ref[-1]
        depth = upper - p[i, -1]
        if depth > 0:
            head = p[: i + 1, :-1]
            total += _hv(head[pareto_mask(head)], ref[:-1]) * depth
    return total


def normalized_objectives(
    accuracy: np.ndarray | Sequence[float],
    latency_ratio: np.ndarray | Sequence[float],
    size_bytes: np.ndarray | Sequence[float],
    *,
    teacher_accuracy: float,
    teacher_size_bytes: float,
    metric: Any = None,
) -> np.ndarray:
    """Rows of (metric drop, latency ratio, size ratio), all to be minimised. The drop is
    `metric.drop` (evaluation.metrics.Metric); without one the values are accuracies as
    fractions in [0, 1] and the drop is in points."""
    acc = np.asarray(accuracy, dtype=float)
    drop = (teacher_accuracy - acc) * 100.0 if metric is None else metric.drop(teacher_accuracy, acc)
    return np.column_stack(
        [
            drop,
            np.asarray(latency_ratio, dtype=float),
            np.asarray(size_bytes, dtype=float) / float(teacher_size_bytes),
        ]
    )
