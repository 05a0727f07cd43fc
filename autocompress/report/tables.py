"""Trial records to tables: derived columns, the Pareto flag, and the terminal summary."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from autocompress.evaluation.metrics import BUILTIN, Metric
from autocompress.pareto import DROP_TOLERANCE, normalized_objectives, pareto_mask


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
    df["feasible"] = done & (df["metric_drop"] <= limit + DROP_TOLERANCE)
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
    ok = trials[trials["state"].eq("COMPLETE") & trials["duplicate_of"].isna() & (trials["metric_drop"] <= within + DROP_TOLERANCE)]
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


def candidate_names(rows: pd.DataFrame) -> pd.Series:
    """Each row's name in the summary: its short `label`, else its `description` (a trial
    of a run resumed from a version before labels has none), else ''."""
    names = pd.Series("", index=rows.index, dtype=object)
    for col in ("description", "label"):  # the label wins where it is there
        if col in rows:
            names = rows[col].where(rows[col].notna() & rows[col].astype(str).str.strip().ne(""), names)
    return names.astype(str)


SUMMARY_WIDTH = 100  # the terminal summary's lines fit this many columns
BEYOND = 3  # trade-offs beyond the drop limit that the summary shows after the front


def summary_rows(trials: pd.DataFrame, teacher: TeacherRow, *, front: Optional[pd.DataFrame] = None, beyond: int = BEYOND) -> pd.DataFrame:
    """The summary's candidates, sorted by latency: the front within the drop limit
    (`front`, e.g. with its test metric; else the trials' pareto rows) and the `beyond`
    trade-offs nearest beyond the limit (on the front of every complete trial, the
    smallest metric drop first), told apart by `feasible`."""
    front = trials[trials["pareto"]] if front is None else front
    unconstrained = front_mask(trials.assign(feasible=trials["state"].eq("COMPLETE")), teacher)
    outside = trials[unconstrained & ~trials["feasible"].astype(bool)].nsmallest(beyond, "metric_drop")
    parts = [f for f in (front.assign(feasible=True), outside.assign(feasible=False)) if len(f)]
    rows = pd.concat(parts) if parts else front.assign(feasible=True)
    return rows.sort_values("latency_ratio", kind="stable")


def summary_title(trials: pd.DataFrame, teacher: TeacherRow, *, limit: Optional[float], default_limit: bool = False, beyond: int = 0) -> str:
    """The summary's first lines: the front's size, the drop limit (given, or the default
    the search used) and how many trials failed or stopped at a rung."""
    m = teacher.metric
    front = int(trials["pareto"].sum()) if "pareto" in trials else 0
    head = f"Pareto front: {front} of {len(trials)} trials"
    if limit is None:
        head += ", no drop limit"
    else:
        flag = "--max-acc-drop" if m.percent else "--max-metric-drop"
        head += (f" within the drop limit of {limit:.4g}{' pt' if m.percent else ''} {m.name} drop"
                 + (f" (the default; set it with {flag})" if default_limit else f" (given with {flag})"))
    failed = int(trials["state"].eq("FAIL").sum()) if "state" in trials else 0
    stopped = int(trials["state"].eq("PRUNED").sum()) if "state" in trials else 0  # multi-fidelity: not promoted at a rung
    counts = f"{failed} failed" + (f", {stopped} stopped at a rung" if stopped else "")
    nearest = "the nearest trade-off" if beyond == 1 else f"the {beyond} nearest trade-offs"
    marks = "* within the limit (pareto.csv)" + (f"; unmarked: {nearest} beyond it (test not measured)" if beyond else "")
    return f"{head}\n{counts}. {marks}"


def _size(size_bytes: float) -> str:
    kb = size_bytes / 1024
    return f"{kb:.0f}KB" if kb < 10_000 else f"{kb / 1024:.1f}MB"


def format_summary(front: pd.DataFrame, teacher: TeacherRow, *, title: str = "Pareto front", trials: Optional[pd.DataFrame] = None,
                   width: int = SUMMARY_WIDTH) -> str:
    """A table that fits `width` columns: the teacher (and its baselines) first, then the
    rows of `front` by latency (summary_rows): '*' where within the drop limit (`feasible`;
    every row when the column is missing), speedup, latency, size, size reduction, val and
    test metric, and the candidate's short label (its `label`, else `description`) last,
    wrapped onto continuation lines where it is long. A point whose ONNX file uses
    com.microsoft operators (runs on ONNX Runtime only) is marked with '†', one that is not
    faster than the teacher beyond measurement noise with '‡'. With `trials`, a line compares
    the fastest candidate within 1 pt with the fastest hand recipe within it (1% of the
    teacher's value for a metric without points), and a last line counts the built
    candidates that were not faster."""
    ort_only = flag_column(front, "ort_only")
    slow = flag_column(front, "not_faster")
    feasible = flag_column(front, "feasible") if "feasible" in front else pd.Series(True, index=front.index)
    labels = {i: d + (" †" if ort_only[i] else "") + (" ‡" if slow[i] else "") for i, d in candidate_names(front).items()}
    m = teacher.metric
    unit = "%" if m.percent else m.name
    mw = max(6, len(unit) + 5)
    base = dict(teacher.baselines)  # the teacher's baselines (the fused fp32 teacher): a column each

    def show(v: Any) -> str:
        return f"{m.show(v):>{mw}}"

    def cells(mark: str, number: str, speedup: float, ms: float, size: Optional[float] = None, smaller: float = 1.0,
              val: Any = None, test: Any = None) -> str:
        return (f"{mark:1} {number:>4}  {speedup:6.2f}x" + "".join(f" {ratio * speedup:7.2f}x" for ratio in base.values())
                + f" {ms:7.3f}ms" + ("" if size is None else f" {_size(size):>7} {smaller:6.2f}x {show(val)} {show(test)}"))

    head = (f"{'':1} {'#':>4}  {'speedup':>7}" + "".join(f" {'vs ' + n:>8}" for n in base)
            + f" {'latency':>9} {'size':>7} {'smaller':>7} {'val ' + unit:>{mw}} {'test ' + unit:>{mw}}  ")
    indent = len(head)
    room = max(12, width - indent)

    def row(text: str, label: str) -> list[str]:
        pieces = textwrap.wrap(label, room, break_long_words=True, break_on_hyphens=False) or [""]
        return [f"{text:<{indent - 2}}  {pieces[0]}".rstrip()] + [" " * indent + p for p in pieces[1:]]

    lines = [part for t in title.splitlines() for part in (textwrap.wrap(t, width, subsequent_indent="  ", break_on_hyphens=False) or [""])]
    lines += [head + "candidate", "-" * min(width, indent + room)]
    lines += row(cells("", "", 1.0, teacher.latency_ms, teacher.size_bytes, 1.0, teacher.val_metric, teacher.test_metric), "teacher")
    for name, ratio in base.items():  # the baseline itself: the teacher with that technique alone
        lines += row(cells("", "", 1 / ratio, ratio * teacher.latency_ms), f"teacher, {name} (baseline)")
    for i, r in front.sort_values("latency_ratio", kind="stable").iterrows():
        lines += row(cells("*" if feasible[i] else "", str(int(r["number"])), r["speedup"], r["latency_ms"], r["size_bytes"],
                           r["size_reduction"], r["val_metric"], r.get("test_metric", np.nan)), labels[i])
    notes = []
    if ort_only.any():
        notes.append("† uses com.microsoft operators (ONNX Runtime's QOperator contrib ops, or 4-bit Q/DQ below opset 21): runs on ONNX Runtime only")
    if slow.any():
        notes.append("‡ not faster than the teacher beyond measurement noise (the ratio's 95% interval reaches 1)")
    if trials is not None:
        line = recipe_comparison(trials, within=m.near(teacher.val_metric), unit=m.unit)
        if line:
            notes.append(line)
    if trials is not None and "not_faster" in trials:
        built = trials[trials["state"].eq("COMPLETE") & trials["duplicate_of"].isna()]
        flagged = built[flag_column(built, "not_faster")]
        if len(flagged):
            names = candidate_names(flagged)
            examples = "; ".join(f"#{int(r['number'])} {names[i]} ({1 / r['latency_ratio']:.2f}x)" for i, r in flagged.head(3).iterrows())
            notes.append(f"Not faster than the teacher on this profile: {len(flagged)} of {len(built)} built candidates, e.g. {examples}")
    for note in notes:
        lines += textwrap.wrap(note, width, subsequent_indent="  ", break_on_hyphens=False)
    return "\n".join(lines)
