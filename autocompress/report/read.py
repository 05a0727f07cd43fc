"""A run directory read back for reports: its manifest, the teacher, every trial (columns
named generically again: val_metric, metric_drop, ...) and the drop limit the front used."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from autocompress.errors import RunDirError
from autocompress.evaluation.metrics import Metric
from autocompress.report.tables import TeacherRow, flag_column
from autocompress.run import RunDir


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
    t = manifest.get("teacher") or {}
    val = t.get(metric.column("val"))
    if val is None or "latency_ms" not in t or "size_bytes" not in t:
        raise RunDirError(f"{field} {run.path}: the teacher was not measured yet (run.json has no teacher)")
    baselines = {name: b["latency_ratio"] for name, b in (t.get("baselines") or {}).items() if "latency_ratio" in b}
    teacher = TeacherRow(float(val), t.get(metric.column("test")), float(t["latency_ms"]), int(t["size_bytes"]), metric, baselines)
    trials_path = run.path / "trials.csv"
    if not trials_path.is_file():
        raise RunDirError(f"{field} {run.path}: no trials.csv (no trial has finished yet)")
    trials = _read_csv(trials_path, metric)
    if "number" not in trials or "state" not in trials:
        raise RunDirError(f"{trials_path}: not a trials table (no number/state columns)")
    trials = trials.assign(pareto=flag_column(trials, "pareto"), feasible=flag_column(trials, "feasible"))
    given: Optional[float] = manifest.get("max_acc_drop")
    limit = given if given is not None else manifest.get("drop_limit")
    limit = float(limit) if limit is not None else metric.drop_reference(teacher.val_metric)  # the search's default
    test: dict[int, float] = {}
    if (run.path / "pareto.csv").is_file():
        front = _read_csv(run.path / "pareto.csv", metric)
        if "test_metric" in front and "number" in front:
            test = {int(n): float(v) for n, v in zip(front["number"], front["test_metric"]) if pd.notna(v)}
    return RunRecords(run.path, manifest, teacher, trials, limit, given is not None, test)


__all__ = ["RunRecords", "generic_columns", "read_run"]
