"""Trial records to tables: derived columns, the Pareto flag, and the terminal summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from autocompress.evaluation.metrics import BUILTIN, Metric
from autocompress.pareto import normalized_objectives, pareto_mask


@dataclass(frozen=True)
class TeacherRow:
    """The teacher as the tables compare with it, and the metric that judged the run."""

    val_metric: float
    test_metric: Optional[float]
    latency_ms: float
    size_bytes: int
    metric: Metric = BUILTIN["accuracy"]
    baselines: Mapping[str, float] = field(default_factory=dict)  # name -> latency ratio to the teacher (e.g. "fused": ORT's fusion alone)


def trials_frame(records: Sequence[dict[str, Any]], teacher: TeacherRow, *, max_acc_drop: Optional[float] = None) -> pd.DataFrame:
    """One row per trial with derived columns: speedup, size_reduction, metric_drop (how
    much worse than the teacher on val: points for accuracy, else the metric's units),
    feasible (within the drop limit) and pareto (on the front); speedup_vs_<name> for each
    of the teacher's baselines (speedup against the fused fp32 teacher, ...)."""
    df = pd.DataFrame.from_records(list(records))
    if df.empty:
        df = pd.DataFrame(columns=["number", "state"])
    for col in ("val_metric", "latency_ratio", "size_bytes", "duplicate_of"):
        if col not in df:
            df[col] = np.nan
    done = df["state"].eq("COMPLETE")
    df["speedup"] = np.where(done, 1.0 / df["latency_ratio"], np.nan)
    for name, ratio in teacher.baselines.items():  # the speedup against the baseline, e.g. the fused fp32 teacher
        df[f"speedup_vs_{name}"] = ratio * df["speedup"]
    df["latency_ms"] = df["latency_ratio"] * teacher.latency_ms
    df["size_reduction"] = teacher.size_bytes / df["size_bytes"]
    df["metric_drop"] = teacher.metric.drop(teacher.val_metric, df["val_metric"].astype(float))
    limit = np.inf if max_acc_drop is None else max_acc_drop
    df["feasible"] = done & (df["metric_drop"] <= limit + 1e-9)
    df["pareto"] = front_mask(df, teacher)
    return df


def front_mask(df: pd.DataFrame, teacher: TeacherRow) -> np.ndarray:
    """Front among complete, feasible, non-duplicate trials (duplicates point at the
    trial that was actually built)."""
    eligible = (df["feasible"] & df["duplicate_of"].isna()).to_numpy()
    mask = np.zeros(len(df), dtype=bool)
    if eligible.any():
        sub = df[eligible]
        pts = normalized_objectives(
            sub["val_metric"], sub["latency_ratio"], sub["size_bytes"],
            teacher_accuracy=teacher.val_metric, teacher_size_bytes=teacher.size_bytes, metric=teacher.metric,
        )
        mask[np.flatnonzero(eligible)[pareto_mask(pts)]] = True
    return mask


def display_columns(columns, metric: Metric) -> dict[str, str]:
    """The tables' generic metric columns -> their names in the CSV files: val_accuracy,
    test_accuracy, acc_drop_pts and rung0_val_accuracy for accuracy; val_mse, test_mse,
    mse_drop for mse."""
    names = {"val_metric": metric.column("val"), "test_metric": metric.column("test"), "metric_drop": metric.drop_column}
    out = {}
    for c in columns:
        for generic, shown in names.items():
            if c == generic or c.endswith("_" + generic):
                out[c] = c[: len(c) - len(generic)] + shown
    return out


def flag_column(df: pd.DataFrame, col: str) -> pd.Series:
    """A boolean column that may be missing or have gaps (False there)."""
    return df[col].astype("boolean").fillna(False).astype(bool) if col in df else pd.Series(False, index=df.index)


def recipe_comparison(trials: pd.DataFrame, *, within: float = 1.0, unit: str = "pt") -> Optional[str]:
    """One line: the fastest candidate within `within` (metric_drop's units, `unit`) of the
    teacher (val) against the fastest hand recipe within it, both as the tables have them
    (re-measured at the end of the search); None when the run has no hand recipe."""
    if "recipe" not in trials:
        return None
    unit = f" {unit}" if unit else ""
    ok = trials[trials["state"].eq("COMPLETE") & trials["duplicate_of"].isna() & (trials["metric_drop"] <= within + 1e-9)]
    recipes = ok[ok["recipe"].notna()]
    if ok.empty:
        return f"Within {within:.4g}{unit} of the teacher (val): no candidate"
    best = ok.loc[ok["latency_ratio"].idxmin()]
    head = f"Within {within:.4g}{unit} of the teacher (val): fastest {1 / best['latency_ratio']:.2f}x (#{int(best['number'])})"
    if recipes.empty:
        return head + "; no hand recipe is within it"
    rb = recipes.loc[recipes["latency_ratio"].idxmin()]
    if int(rb["number"]) == int(best["number"]):
        return head + f", the hand recipe '{rb['recipe']}': the search found nothing faster"
    gain = rb["latency_ratio"] / best["latency_ratio"]
    return head + f"; fastest hand recipe {1 / rb['latency_ratio']:.2f}x (#{int(rb['number'])} '{rb['recipe']}'): {gain:.2f}x faster than it"


def format_summary(front: pd.DataFrame, teacher: TeacherRow, *, title: str = "Pareto front", trials: Optional[pd.DataFrame] = None) -> str:
    """Teacher row, then each front point: speedup, size reduction, val and test metric.
    A point whose ONNX file uses com.microsoft operators (runs on ONNX Runtime only) is
    marked with '†', one that is not faster than the teacher beyond measurement noise with
    '‡'. With `trials`, a line compares the fastest candidate within 1 pt with the fastest
    hand recipe within it (1% of the teacher's value for a metric without points), and a last line counts the built candidates that were not faster."""
    ort_only = flag_column(front, "ort_only")
    slow = flag_column(front, "not_faster")
    labels = {i: str(d) + (" †" if ort_only[i] else "") + (" ‡" if slow[i] else "") for i, d in front.get("description", pd.Series(dtype=str)).items()}
    w = max([46, *(len(v) for v in labels.values())])
    m = teacher.metric
    unit = "%" if m.percent else m.name
    mw = max(6, len(unit) + 5)

    def show(v: Any) -> str:
        return f"{m.show(v):>{mw}}"

    base = dict(teacher.baselines)  # the teacher's baselines (the fused fp32 teacher): a column each

    def versus(speedup: float) -> str:
        return "".join(f" {ratio * speedup:7.2f}x" for ratio in base.values())

    head = (f"{'trial':>5}  {'candidate':<{w}} {'speedup':>8}" + "".join(f" {'vs ' + n:>8}" for n in base)
            + f" {'latency':>9} {'size':>9} {'smaller':>8} {'val ' + unit:>{mw}} {'test ' + unit:>{mw}}")
    lines = [title, head, "-" * len(head)]
    lines.append(
        f"{'':>5}  {'teacher':<{w}} {1.0:7.2f}x{versus(1.0)} {teacher.latency_ms:7.3f}ms {teacher.size_bytes / 1024:7.0f}KB"
        f" {1.0:7.2f}x {show(teacher.val_metric)} {show(teacher.test_metric)}"
    )
    for name, ratio in base.items():  # the baseline itself: the teacher with that technique alone
        lines.append(f"{'':>5}  {'teacher, ' + name + ' (baseline)':<{w}} {1 / ratio:7.2f}x{versus(1 / ratio)} {ratio * teacher.latency_ms:7.3f}ms")
    for i, r in front.sort_values("latency_ratio").iterrows():
        test = r.get("test_metric", np.nan)
        lines.append(
            f"{int(r['number']):>5}  {labels[i]:<{w}} {r['speedup']:7.2f}x{versus(r['speedup'])} {r['latency_ms']:7.3f}ms"
            f" {r['size_bytes'] / 1024:7.0f}KB {r['size_reduction']:7.2f}x {show(r['val_metric'])} {show(test)}"
        )
    if ort_only.any():
        lines.append("† uses com.microsoft operators (ONNX Runtime's QOperator contrib ops, or 4-bit Q/DQ below opset 21): runs on ONNX Runtime only")
    if slow.any():
        lines.append("‡ not faster than the teacher beyond measurement noise (the ratio's 95% interval reaches 1)")
    if trials is not None:
        line = recipe_comparison(trials, within=m.near(teacher.val_metric), unit=m.unit)
        if line:
            lines.append(line)
    if trials is not None and "not_faster" in trials:
        built = trials[trials["state"].eq("COMPLETE") & trials["duplicate_of"].isna()]
        flagged = built[flag_column(built, "not_faster")]
        if len(flagged):
            examples = "; ".join(f"#{int(r['number'])} {r['description']} ({1 / r['latency_ratio']:.2f}x)" for _, r in flagged.head(3).iterrows())
            lines.append(f"Not faster than the teacher on this profile: {len(flagged)} of {len(built)} built candidates, e.g. {examples}")
    return "\n".join(lines)
