"""Writing a run's results: trials.csv after every trial; at the end the front's test
metric, pareto.csv, summary.txt, removal of non-front artifacts, and the report (pareto.png,
pareto.html, report.md). The CSV files name the metric's columns after it (val_accuracy,
acc_drop_pts; val_mse, mse_drop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pandas as pd

from autocompress.report import TeacherRow, format_summary, trials_frame
from autocompress.report.build import FILES as REPORT_FILES, write_report
from autocompress.report.tables import display_columns, summary_rows, summary_title
from autocompress.atomic import write_text_atomic
from autocompress.errors import one_line
from autocompress.faults import checkpoint
from autocompress.run import RunDir

RESULT_FILES = ("summary.txt", "pareto.csv", "trials.csv", "pareto.png", "pareto.html", "report.md")


def results_text(run_path: Path) -> str:
    """What a finished search points at: the result files the run has (a report that could
    not be written is not listed) and the front's files."""
    have = [name for name in RESULT_FILES if (Path(run_path) / name).is_file()]
    return ", ".join(have) + "; ONNX + state_dict per front point under trials/"
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
             default_limit: bool = False, warn: Optional[Callable[[str], None]] = None) -> pd.DataFrame:
    """The end of a search: the front's test metric, pareto.csv, summary.txt (printed
    through `progress`; `default_limit`: the drop limit is the default, not given), the
    removal of every non-front trial's files, then the report (pareto.png, pareto.html,
    report.md: report.build); the trials frame. The report comes last and a failure of it
    loses nothing: it is said through `warn` (default `progress`) with the command that
    writes it again."""
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
    checkpoint("finalize")  # test-facing: autocompress.faults
    predicted = "latency_source" in df and bool(df["latency_source"].eq("predicted").any())
    rows = summary_rows(df, teacher, front=front)
    title = summary_title(df, teacher, limit=max_acc_drop, default_limit=default_limit, beyond=int((~rows["feasible"]).sum()))
    if predicted:
        title += "\nNote: latency PREDICTED from a device table (not measured): check it on the device with autocompress verify"
    summary = format_summary(rows, teacher, title=title, trials=df)
    write_text_atomic(run.path / "summary.txt", summary + "\n")
    progress("\n" + summary)
    run.remove_trial_artifacts(keep={int(n) for n in front["number"]})
    try:
        write_report(run.path)
    except Exception as exc:  # noqa: BLE001 - the results are written: the plots must not lose them or end the search in an error
        (warn or progress)(f"\nThe report ({', '.join(REPORT_FILES)}) could not be written ({one_line(exc)}); "
                           f"the results are in trials.csv, pareto.csv and summary.txt. Write it again with: autocompress report {run.path}")
    return df
