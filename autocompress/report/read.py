"""A run directory read back for reports: its manifest, the teacher, every trial (columns
named generically again: val_metric, metric_drop, ...) and the drop limit the front used."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from autocompress.errors import RunDirError
from autocompress.evaluation.metrics import Metric
from autocompress.report.tables import TeacherRow, flag_column
from autocompress.run import RunDir


@dataclass(frozen=True)
class Limit:
    """A metric-drop limit (the metric's units: points for accuracy) and where it came from."""

    value: float
    source: str


def optional_float(v: Any) -> Optional[float]:
    """A recorded number as a float; None for a gap (None, NaN) or a value that is no number."""
    if v is None or isinstance(v, str):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def teacher_fields(manifest: dict[str, Any], metric: Metric) -> dict[str, Any]:
    """The teacher as run.json records it, under generic names: val_metric, test_metric,
    latency_ms (floats) and size_bytes (an int), None where it records none; baselines:
    {name: latency ratio to the teacher} of its baselines (e.g. "fused": the fused fp32
    teacher), {} where it has none."""
    t = manifest.get("teacher") or {}
    size = optional_float(t.get("size_bytes"))
    baselines = {name: float(b["latency_ratio"]) for name, b in (t.get("baselines") or {}).items() if b.get("latency_ratio") is not None}
    return {"val_metric": optional_float(t.get(metric.column("val"))), "test_metric": optional_float(t.get(metric.column("test"))),
            "latency_ms": optional_float(t.get("latency_ms")), "size_bytes": None if size is None else int(size), "baselines": baselines}


def search_limit(manifest: dict[str, Any], metric: Metric) -> Limit:
    """The drop limit the search itself used, and where it came from: run.json's drop_limit
    (the one given to the search, else its default), else its max_acc_drop (as given to the
    search, either option), else the default (Metric.drop_reference of the teacher's val metric)."""
    given = manifest.get("max_acc_drop")  # as given to the search (either option), None when not
    if manifest.get("drop_limit") is not None:
        how = "given to the search" if given is not None else "the search's default"
        return Limit(float(manifest["drop_limit"]), f"{how} (run.json drop_limit)")
    if given is not None:
        return Limit(float(given), "given to the search (run.json max_acc_drop)")
    teacher = teacher_fields(manifest, metric)["val_metric"]
    return Limit(metric.drop_reference(0.0 if teacher is None else teacher), "the default drop limit (run.json records none)")


@dataclass(frozen=True)
class RunRecords:
    path: Path
    manifest: dict[str, Any]
    teacher: TeacherRow
    trials: pd.DataFrame  # one row per trial, generic column names, `pareto` and `feasible` as bools
    drop_limit: float  # in the metric's drop units (points for accuracy)
    limit_given: bool  # set by the user (else the search's default)
    test_metric: dict[int, float]  # front trial -> its test metric (pareto.csv), where measured

    @property
    def metric(self) -> Metric:
        return self.teacher.metric

    @property
    def front(self) -> pd.DataFrame:
        return self.trials[self.trials["pareto"]].sort_values("latency_ms")

    @property
    def completed(self) -> pd.DataFrame:
        return self.trials[self.trials["state"].eq("COMPLETE")]

    @property
    def latency_predicted(self) -> bool:
        return "latency_source" in self.trials and bool(self.trials["latency_source"].eq("predicted").any())


def generic_columns(columns, metric: Metric) -> dict[str, str]:
    """The CSV files' metric columns -> the tables' generic names (tables.display_columns,
    reversed): val_accuracy -> val_metric, acc_drop_pts -> metric_drop, rung0_val_mse -> rung0_val_metric."""
    names = {metric.column("val"): "val_metric", metric.column("test"): "test_metric", metric.drop_column: "metric_drop"}
    out = {}
    for c in columns:
        for shown, generic in names.items():
            if c == shown or c.endswith("_" + shown):
                out[c] = c[: len(c) - len(shown)] + generic
                break
    return out


def _read_csv(path: Path, metric: Metric) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RunDirError(f"{path}: cannot be read as a table ({type(exc).__name__}: {exc})") from None
    return df.rename(columns=generic_columns(df.columns, metric))


def read_run(run_dir: str | Path, *, field: str = "RUN_DIR") -> RunRecords:
    """The run at `run_dir`; RunDirError (one line, naming `field`) when it is not a run or
    has no finished trial yet."""
    run = RunDir.open_existing(Path(run_dir), field=field)
    try:
        manifest = run.read_manifest()
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{field} {run.path}: run.json cannot be read ({type(exc).__name__})") from None
    metric = Metric.described(manifest.get("metric"))
    t = teacher_fields(manifest, metric)
    if t["val_metric"] is None or t["latency_ms"] is None or t["size_bytes"] is None:
        raise RunDirError(f"{field} {run.path}: the teacher was not measured yet (run.json has no teacher)")
    teacher = TeacherRow(t["val_metric"], t["test_metric"], t["latency_ms"], t["size_bytes"], metric, t["baselines"])
    trials_path = run.path / "trials.csv"
    if not trials_path.is_file():
        raise RunDirError(f"{field} {run.path}: no trials.csv (no trial has finished yet)")
    trials = _read_csv(trials_path, metric)
    if "number" not in trials or "state" not in trials:
        raise RunDirError(f"{trials_path}: not a trials table (no number/state columns)")
    trials = trials.assign(pareto=flag_column(trials, "pareto"), feasible=flag_column(trials, "feasible"))
    test: dict[int, float] = {}
    if (run.path / "pareto.csv").is_file():
        front = _read_csv(run.path / "pareto.csv", metric)
        if "test_metric" in front and "number" in front:
            test = {int(n): float(v) for n, v in zip(front["number"], front["test_metric"]) if pd.notna(v)}
    given = manifest.get("max_acc_drop") is not None  # set by the user (either option)
    return RunRecords(run.path, manifest, teacher, trials, search_limit(manifest, metric).value, given, test)


__all__ = ["Limit", "RunRecords", "generic_columns", "optional_float", "read_run", "search_limit", "teacher_fields"]
