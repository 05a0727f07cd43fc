"""`autocompress show RUN_DIR [--trial N]`: a finished (or running) run read back from its
files. Without a trial: the run's summary (teacher and front, by latency). With one: that
candidate's configuration, metrics, stage times and files.

Compute first, render second: `run_info` / `trial_info` return plain data that the API
hands out; `render_run` / `render_trial` turn it into text. The tables are read as the
report reads them (report.read): trials.csv (every started trial, written after each)
and pareto.csv (the front's test metric), their metric columns (val_accuracy,
acc_drop_pts; val_mse, mse_drop) under generic names (val_metric, metric_drop, test_metric)."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import pandas as pd

from autocompress.errors import ConfigError
from autocompress.names import TRIALS_DIR
from autocompress.pareto import DROP_TOLERANCE
from autocompress.report.read import Limit, optional_float, read_run, search_limit, teacher_fields
from autocompress.report.tables import candidate_names
from autocompress.run import RunDir

if TYPE_CHECKING:
    from autocompress.evaluation.metrics import Metric

WIDTH = 100  # the run summary fits a terminal this wide
STATE_WORDS = {"COMPLETE": "complete", "FAIL": "failed", "PRUNED": "stopped at a rung", "RUNNING": "running"}
# attributes shown under "Also recorded" when a trial has them (the rest stay in TrialInfo.attrs)
NOTABLE = ("candidate_id", "latency_source", "not_faster", "remeasured", "latency_ratio_recorded", "latency_ratio_low",
           "latency_ratio_high", "macs_ratio", "ort_only", "finetune_reused_from", "finetune_steps_run", "climb_what", "worker")


# --------------------------------------------------------------------------- reading a run


@dataclass(frozen=True)
class RunView:
    """A run's manifest, metric and trials table (generic column names), read once."""

    run: RunDir
    manifest: dict[str, Any]
    metric: "Metric"
    trials: pd.DataFrame  # one row per started trial; test_metric for the front's points

    @property
    def teacher(self) -> dict[str, Any]:
        """The teacher as run.json records it (report.read.teacher_fields): val_metric,
        test_metric, latency_ms, size_bytes."""
        return teacher_fields(self.manifest, self.metric)

    def search_limit(self) -> Limit:
        """The drop limit the search itself used and where it came from (report.read.search_limit)."""
        return search_limit(self.manifest, self.metric)

    def row(self, number: int) -> pd.Series:
        """Trial `number`'s row; ConfigError naming the valid range for an unknown one."""
        hit = self.trials[self.trials["number"] == number]
        if hit.empty:
            raise ConfigError(f"trial {number}: {self.run.path} has no such trial ({self.trial_range()})")
        return hit.iloc[0]

    def trial_range(self) -> str:
        numbers = sorted(int(n) for n in self.trials["number"])
        if not numbers:
            return "it has no trials yet"
        if numbers == list(range(numbers[0], numbers[-1] + 1)):
            return f"its trials are {numbers[0]}-{numbers[-1]}" if len(numbers) > 1 else f"its only trial is {numbers[0]}"
        return "its trials are " + ", ".join(map(str, numbers))


def open_run(run_dir: str | Path) -> RunView:
    """The run at `run_dir` with its trials table (report.read: generic column names, the
    front's test metric from pareto.csv); RunDirError when it is not a run or has no trial yet."""
    rec = read_run(run_dir)
    trials = rec.trials.assign(test_metric=rec.trials["number"].map(rec.test_metric).astype(float))
    return RunView(RunDir(rec.path), rec.manifest, rec.metric, trials)


# --------------------------------------------------------------------------- one trial


@dataclass(frozen=True)
class TrialInfo:
    """One candidate as the run recorded it. `metrics`: val_metric, test_metric (front
    points), metric_drop, latency_ms, latency_ratio, speedup, size_bytes, size_reduction
    (None where not measured); `stage_seconds`: per pipeline stage, 'total' included;
    `files`: paths (relative to the run) of what the run keeps for it, with sizes;
    `recorded_files`: the ONNX file / state_dict the trial was measured from, kept or not."""

    run: Path
    number: int
    state: str
    description: Optional[str]
    details: Optional[str]
    params: dict[str, Any]
    metrics: dict[str, Optional[float]]
    on_front: bool
    feasible: bool
    limit: Limit
    failure_reason: Optional[str]
    stop_reason: Optional[str]
    recipe: Optional[str]
    duplicate_of: Optional[int]
    stage_seconds: dict[str, float]
    files: list[tuple[str, int]]
    recorded_files: dict[str, str]
    teacher: dict[str, Any]
    metric: "Metric"
    attrs: dict[str, Any] = field(default_factory=dict)


def _value(v: Any) -> Any:
    """A cell as plain Python (None for a gap)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v  # numpy scalars as Python's


def study_params(run: RunDir, number: int) -> Optional[dict[str, Any]]:
    """Trial `number`'s parameters as the study holds them (exact types: trials.csv
    reads an int column with gaps as floats), or None when the study cannot be read."""
    if not run.external_storage and not (run.path / "study.db").is_file():
        return None
    import optuna

    try:
        study = optuna.load_study(study_name=run.study_name, storage=run.storage_url)
        trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    except Exception:  # noqa: BLE001 - a storage this version cannot read: the table's values serve
        return None
    if trial is None:
        return None
    return {k: round(v, 10) if isinstance(v, float) else v for k, v in trial.params.items()}  # 0.7, as trials.csv has it


def trial_files(view: RunView, number: int) -> list[tuple[str, int]]:
    """Everything the run keeps under trials/N/, as (path relative to the run, bytes)."""
    root = view.run.trial_dir(number)
    if not root.is_dir():
        return []
    return [(str(p.relative_to(view.run.path)), p.stat().st_size) for p in sorted(root.rglob("*")) if p.is_file()]


def trial_info(run_dir: str | Path | RunView, number: int) -> TrialInfo:
    """Trial `number` of the run: configuration, metrics, stage times and files."""
    view = run_dir if isinstance(run_dir, RunView) else open_run(run_dir)
    r = view.row(number)
    cols = r.index
    params = study_params(view.run, int(number))
    if params is None:
        params = {c[len("param."):]: _value(r[c]) for c in cols if c.startswith("param.") and _value(r[c]) is not None}
    metrics = {k: optional_float(r.get(k)) for k in ("val_metric", "test_metric", "metric_drop", "latency_ms", "latency_ratio", "speedup",
                                               "size_bytes", "size_reduction")}
    stages = {c[2:]: float(r[c]) for c in cols if c.startswith("t_") and optional_float(r[c]) is not None}
    recorded = {k: str(r[k]) for k in ("onnx", "state_dict") if k in cols and isinstance(_value(r[k]), str)}
    known = {"number", "state", "description", "details", "recipe", "duplicate_of", "failure_reason", "stop_reason", "pareto", "feasible",
             "onnx", "state_dict", *metrics}
    attrs = {c: _value(r[c]) for c in cols
             if c not in known and not c.startswith(("param.", "t_")) and _value(r[c]) is not None}
    dup = _value(r.get("duplicate_of"))
    return TrialInfo(
        run=view.run.path, number=int(number), state=str(r["state"]), description=_value(r.get("description")),
        details=_value(r.get("details")), params=params, metrics=metrics, on_front=bool(_value(r.get("pareto")) or False),
        feasible=bool(_value(r.get("feasible")) or False), limit=view.search_limit(), failure_reason=_value(r.get("failure_reason")),
        stop_reason=_value(r.get("stop_reason")), recipe=_value(r.get("recipe")), duplicate_of=None if dup is None else int(dup),
        stage_seconds=stages, files=trial_files(view, int(number)), recorded_files=recorded, teacher=view.teacher,
        metric=view.metric, attrs=attrs,
    )


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class RunInfo:
    """A run's summary: what it searched, how its trials ended, its drop limit, the
    teacher and the front (one dict per point, sorted by latency, generic names; `label`
    the short name the summary shows, None for a run without labels)."""

    path: Path
    task: str
    profile: Optional[str]
    sampler: Optional[str]
    seed: Optional[int]
    budget: Optional[int]
    backend: Optional[str]
    states: dict[str, int]
    limit: Limit
    teacher: dict[str, Any]
    front: list[dict[str, Any]]
    metric: "Metric"


def _task_text(spec: dict[str, Any]) -> str:
    kind = spec.get("kind")
    if kind == "demo":
        return "the digits demo"
    if kind == "python":
        return "a Task built in Python"
    if kind == "task":
        return str(spec.get("task"))
    return f"{spec.get('model')} on {spec.get('data')}"


def run_info(run_dir: str | Path | RunView) -> RunInfo:
    """The run's summary as data (see RunInfo)."""
    view = run_dir if isinstance(run_dir, RunView) else open_run(run_dir)
    m = view.manifest
    df = view.trials
    front = df[df["pareto"].astype("boolean").fillna(False).astype(bool)] if "pareto" in df else df.iloc[:0]
    rows = []
    for _, r in front.sort_values(["latency_ratio", "size_bytes", "number"]).iterrows():
        rows.append({"number": int(r["number"]), "label": _value(r.get("label")), "description": _value(r.get("description")),
                     **{k: optional_float(r.get(k)) for k in ("speedup", "latency_ms", "latency_ratio", "size_bytes", "size_reduction",
                                                      "val_metric", "test_metric", "metric_drop")}})
    return RunInfo(
        path=view.run.path, task=_task_text(m.get("task", {})), profile=m.get("profile"), sampler=m.get("sampler"), seed=m.get("seed"),
        budget=m.get("budget"), backend=m.get("backend"), states={str(k): int(v) for k, v in df["state"].value_counts().items()},
        limit=view.search_limit(), teacher=view.teacher, front=rows, metric=view.metric,
    )


def show(run_dir: str | Path, *, trial: Optional[int] = None) -> RunInfo | TrialInfo:
    """The run's summary, or with `trial` that trial's record."""
    view = open_run(run_dir)
    return run_info(view) if trial is None else trial_info(view, trial)


# --------------------------------------------------------------------------- rendering


def size_text(n: Any) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    n = float(n)
    return f"{n / 1024:.0f} KB" if n < 1024**2 else f"{n / 1024**2:.1f} MB"


def drop_text(metric: "Metric", v: Optional[float]) -> str:
    """A drop (or limit) in the metric's units: '1.00 pt' for accuracy."""
    if v is None:
        return "n/a"
    return f"{v:.2f} pt" if metric.percent else f"{v:.4g}"


def limit_text(metric: "Metric", limit: Limit) -> str:
    value = f"{limit.value:.4g} pt" if metric.percent else f"{limit.value:.4g}"
    return f"{value} {metric.name} drop"


def value_text(metric: "Metric", v: Optional[float]) -> str:
    return metric.show(v) + ("%" if metric.percent and v is not None else "")


def _fit(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def render_run(info: RunInfo) -> str:
    """The run's summary, every line within WIDTH columns."""
    m = info.metric
    unit = "%" if m.percent else m.name
    states = ", ".join(f"{n} {STATE_WORDS.get(s, s.lower())}" for s, n in sorted(info.states.items(), key=lambda kv: -kv[1]))
    head = [
        f"Run {info.path}",
        f"task: {info.task}",
        f"profile {info.profile}, sampler {info.sampler}, seed {info.seed}, budget {info.budget}, backend {info.backend}",
        f"{sum(info.states.values())} trials ({states or 'none'})",
        f"drop limit: {limit_text(m, info.limit)}, {info.limit.source}",
        "",
        f"Pareto front: {len(info.front)} point{'s' * (len(info.front) != 1)}, by latency"
        + (f" (autocompress show {info.path} --trial N for one)" if info.front else ""),
    ]
    vw = max(6, len(unit) + 5)
    t = info.teacher
    base = dict(t.get("baselines") or {})  # name -> latency ratio to the teacher: a "vs NAME" speedup column each
    bw = {name: max(8, len(name) + 3) for name in base}
    nums = (f"{'trial':>5} {'speedup':>7}" + "".join(f" {'vs ' + name:>{bw[name]}}" for name in base)
            + f" {'latency':>10} {'size':>8} {'smaller':>7} {'val ' + unit:>{vw}} {'test ' + unit:>{vw}} {'drop':>6}  ")
    cw = WIDTH - len(nums)  # the candidate, last: wrapped onto further lines when long
    table = [nums + "candidate", "-" * WIDTH]

    def times(x) -> str:
        return "n/a" if x is None else f"{x:.2f}x"

    def speed(number: str, speedup, latency_ms) -> str:
        """The columns up to the latency."""
        lat = "n/a" if latency_ms is None else f"{latency_ms:.3f}ms"
        vs = "".join(f" {times(None if speedup is None else speedup * ratio):>{bw[name]}}" for name, ratio in base.items())
        return f"{number:>5} {times(speedup):>7}{vs} {lat:>10}"

    def row(number: str, label: str, speedup, latency_ms, size, smaller, val, test, drop: str) -> list[str]:
        left = (speed(number, speedup, latency_ms) + f" {size_text(size):>8}"
                f" {times(smaller):>7} {m.show(val):>{vw}} {m.show(test):>{vw}} {drop:>6}  ")
        parts = textwrap.wrap(label, cw) or [""]
        return [left + parts[0], *(" " * len(left) + p for p in parts[1:])]

    table += row("", "teacher", 1.0, t["latency_ms"], t["size_bytes"], 1.0, t["val_metric"], t["test_metric"], "")
    for name, ratio in base.items():  # the baseline itself: the teacher with that technique alone, timed before the search
        ms = None if t["latency_ms"] is None else ratio * t["latency_ms"]
        table.append(f"{speed('', 1 / ratio, ms):<{len(nums)}}teacher, {name} (baseline)")
    names = candidate_names(pd.DataFrame(info.front))  # as the end-of-search summary names them: the label, else the description
    for p, name in zip(info.front, names):
        drop = "n/a" if p["metric_drop"] is None else (f"{p['metric_drop']:.2f}" if m.percent else f"{p['metric_drop']:.3g}")
        table += row(str(p["number"]), name, p["speedup"], p["latency_ms"], p["size_bytes"], p["size_reduction"],
                     p["val_metric"], p["test_metric"], drop)
    if not info.front:
        table.append("      no trial within the limit yet")
    return "\n".join(_fit(line) for line in head + table)


def render_trial(info: TrialInfo) -> str:
    """One trial: candidate, configuration, metrics, stage times, files."""
    m = info.metric
    mt, t = info.metrics, info.teacher
    where = "on the front" if info.on_front else ("within the limit, not on the front" if info.feasible else "not on the front")
    lines = [f"Trial {info.number} of {info.run}: {info.state}" + (f", {where}" if info.state == "COMPLETE" else "")]
    for head, text in (("candidate", info.description), ("details", info.details)):  # long ones wrapped, not cut
        if text:
            lines += textwrap.wrap(text, WIDTH, initial_indent=f"  {head + ':':<11}", subsequent_indent=" " * 13, break_on_hyphens=False)
    if info.recipe:
        lines.append(f"  hand recipe: {info.recipe}")
    if info.duplicate_of is not None:
        lines.append(f"  the same candidate as trial {info.duplicate_of}: its results and files")
    if info.failure_reason:
        lines.append(f"  failed: {info.failure_reason}")
    if info.stop_reason:
        lines.append(f"  stopped: {info.stop_reason}")

    lines.append("Configuration:")
    w = max([len(k) for k in info.params] + [10])
    lines += [f"  {k:<{w}}  {v}" for k, v in sorted(info.params.items())] or ["  (none recorded)"]

    lines.append("Metrics:")
    name = m.name
    within = "" if mt["metric_drop"] is None else (" (within" if mt["metric_drop"] <= info.limit.value + DROP_TOLERANCE else " (beyond") \
        + f" the run's limit of {limit_text(m, info.limit)})"
    items = [
        (f"val {name}", f"{value_text(m, mt['val_metric'])} (teacher {value_text(m, t['val_metric'])})"),
        (f"test {name}", value_text(m, mt["test_metric"]) + (" (measured for the front only)" if mt["test_metric"] is None else
                                                             f" (teacher {value_text(m, t['test_metric'])})")),
        (f"{name} drop", drop_text(m, mt["metric_drop"]) + within),
        ("latency", "n/a" if mt["latency_ms"] is None else f"{mt['latency_ms']:.4g} ms (teacher {t['latency_ms']:.4g} ms)"),
        ("speedup", "n/a" if mt["speedup"] is None else f"{mt['speedup']:.2f}x (latency ratio {mt['latency_ratio']:.4g})"
         + "".join(f"; {mt['speedup'] * r:.2f}x vs the teacher {name}" for name, r in (t.get("baselines") or {}).items())),
        ("size", "n/a" if mt["size_bytes"] is None else f"{size_text(mt['size_bytes'])} ({int(mt['size_bytes'])} bytes)"),
        ("size reduction", "n/a" if mt["size_reduction"] is None else f"{mt['size_reduction']:.2f}x"),
    ]
    lines += [f"  {k:<16}{v}" for k, v in items]

    if info.stage_seconds:
        total = info.stage_seconds.get("total")
        parts = sorted(((k, v) for k, v in info.stage_seconds.items() if k != "total" and v >= 5e-4), key=lambda kv: -kv[1])
        lines.append("Stage times:" + (f" {total:.3f} s in all" if total is not None else ""))
        lines += [f"  {k:<16}{v:.3f} s" for k, v in parts]
    notable = [(k, info.attrs[k]) for k in NOTABLE if k in info.attrs]
    if notable:
        lines.append("Also recorded:")
        lines += [f"  {k:<24}{v:.4g}" if isinstance(v, float) else f"  {k:<24}{v}" for k, v in notable]

    lines.append("Files:")
    if info.files:
        lines += [f"  {p}  ({size_text(n)})" for p, n in info.files]
    kept = {p for p, _ in info.files}
    for kind, p in info.recorded_files.items():
        if p not in kept and not (info.run / p).is_file():
            lines.append(f"  {p}: not kept (a run keeps the files of its front only)")
        elif p not in kept:
            lines.append(f"  {p}  (the {kind} file, kept with trial {Path(p).parent.name})")
    if not info.files and not info.recorded_files:
        lines.append(f"  none under {TRIALS_DIR}/{info.number}/")
    return "\n".join(lines)


def render(info: RunInfo | TrialInfo) -> str:
    return render_run(info) if isinstance(info, RunInfo) else render_trial(info)


__all__ = ["Limit", "RunInfo", "RunView", "TrialInfo", "open_run", "render", "render_run", "render_trial", "run_info",
           "show", "trial_info"]
