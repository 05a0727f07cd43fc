"""Writing a run's results: trials.csv after every trial; at the end the front's test
metric, pareto.csv, pareto.png, summary.txt, and removal of non-front artifacts. The CSV
files name the metric's columns after it (val_accuracy, acc_drop_pts; val_mse, mse_drop)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import pandas as pd

from autocompress.report import TeacherRow, format_summary, trials_frame
from autocompress.report.build import write_report
from autocompress.report.tables import display_columns, summary_rows, summary_title
from autocompress.atomic import write_text_atomic
from autocompress.run import RunDir

RESULTS = "summary.txt, pareto.csv, pareto.png, trials.csv; ONNX + state_dict per front point under trials/"
_FIRST = ["number", "state", "label", "description", "details", "val_metric", "speedup", "not_faster", "latency_source", "latency_ratio", "latency_ms", "size_bytes",
          "size_reduction", "metric_drop", "feasible", "pareto", "recipe", "duplicate_of", "stop_reason", "failure_reason"]


def teacher_row(teacher, metric) -> TeacherRow:
    baselines = {name: b["latency_ratio"] for name, b in getattr(teacher, "baselines", {}).items() if "latency_ratio" in b}
    return TeacherRow(teacher.val_metric, teacher.test_metric, teacher.latency_ms, teacher.size_bytes, metric, baselines)


def write_csv(path, df: pd.DataFrame, metric) -> None:
    write_text_atomic(path, df.rename(columns=display_columns(df.columns, metric)).to_csv(index=False))


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in _FIRST if c in df]
    params = sorted(c for c in df if c.startswith("param."))
    times = sorted(c for c in df if c.startswith("t_"))
    rest = [c for c in df if c not in first and c not in params and c not in times]
    return df[first + params + rest + times]


def write_trials_csv(run: RunDir, records: Sequence[dict[str, Any]], teacher, *, max_acc_drop: Optional[float], metric) -> pd.DataFrame:
    """trials.csv (its metric columns named after `metric`); the frame, columns generic."""
    df = _ordered(trials_frame(records, teacher_row(teacher, metric), max_acc_drop=max_acc_drop))
    write_csv(run.path / "trials.csv", df, metric)
    return df


def finalize(run: RunDir, records: Sequence[dict[str, Any]], ctx, *, max_acc_drop: Optional[float], progress: Callable[[str], None] = print,
             default_limit: bool = False) -> pd.DataFrame:
    """The end of a search: the front's test metric, pareto.csv, the report (pareto.png,
    pareto.html, report.md: report.build), summary.txt
    (printed through `progress`; `default_limit`: the drop limit is the default, not given)
    and the removal of every non-front trial's files; the trials frame."""
    from autocompress.pipeline import task_metric

    metric = ctx.task.metric
    teacher = teacher_row(ctx.teacher, metric)
    df = write_trials_csv(run, records, ctx.teacher, max_acc_drop=max_acc_drop, metric=metric)
    front = df[df["pareto"]].copy()
    test = ctx.task.test
    front["test_metric"] = [
        task_metric(run.path / p, ctx.task, test) if test is not None else float("nan") for p in front["onnx"]
    ] if len(front) else []
    front = front.sort_values("latency_ratio")
    cols = ["number", "label", "description", "details", "val_metric", "test_metric", "speedup", *(f"speedup_vs_{b}" for b in teacher.baselines), "not_faster", "latency_source", "latency_ratio",
            "latency_ratio_recorded", "latency_ratio_predicted", "macs_ratio", "latency_ms", "size_bytes", "size_reduction", "metric_drop",
            "ort_only", "onnx", "state_dict"]
    cols += sorted(c for c in front if c.startswith("param."))
    write_csv(run.path / "pareto.csv", front[[c for c in cols if c in front]], metric)
    predicted = "latency_source" in df and bool(df["latency_source"].eq("predicted").any())
    write_report(run.path)
    run.remove_trial_artifacts(keep={int(n) for n in front["number"]})
    rows = summary_rows(df, teacher, front=front)
    title = summary_title(df, teacher, limit=max_acc_drop, default_limit=default_limit, beyond=int((~rows["feasible"]).sum()))
    if predicted:
        title += "\nNote: latency PREDICTED from a device table (not measured): check it on the device with autocompress verify"
    summary = format_summary(rows, teacher, title=title, trials=df)
    write_text_atomic(run.path / "summary.txt", summary + "\n")
    progress("\n" + summary)
    return df
