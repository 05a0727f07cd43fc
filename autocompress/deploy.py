"""`autocompress export RUN_DIR (--trial N | --best) --out model.onnx [--torch]`: choose one
candidate of a run and copy its deployable ONNX file out of the run directory.

`--best` takes the completed trial with the best objective (lowest latency ratio, or
smallest size) within a metric-drop limit: the one given, else the limit the search used
(run.json). `select_best` is the pure rule, over a trials table with the report's generic
columns. A run keeps the files of its front only, so the choice can fall on a trial whose
files are gone: that is an error naming the kept ones, never a different file.

Nothing is written until every check has passed; each file is written to a temporary
name beside its destination and renamed (a reader never sees half a file)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pandas as pd

from autocompress.atomic import copy_file_atomic
from autocompress.errors import ConfigError, RunDirError
from autocompress.inspect_run import Limit, RunView, drop_text, limit_text, open_run, size_text, value_text
from autocompress.pareto import DROP_TOLERANCE

if TYPE_CHECKING:
    from autocompress.evaluation.metrics import Metric

# objective -> the columns a choice is ranked by, best first (the trial number breaks what is left)
OBJECTIVES = {"latency": ("latency_ratio", "size_bytes"), "size": ("size_bytes", "latency_ratio")}


# --------------------------------------------------------------------------- the rule


def eligible(trials: pd.DataFrame, max_drop: float) -> pd.DataFrame:
    """The completed, built trials (not duplicates of another) within `max_drop`, with a
    measured latency ratio and size."""
    done = trials["state"].eq("COMPLETE")
    if "duplicate_of" in trials:
        done &= trials["duplicate_of"].isna()
    drop = pd.to_numeric(trials["metric_drop"], errors="coerce")
    ok = done & (drop <= max_drop + DROP_TOLERANCE)
    for col in ("latency_ratio", "size_bytes"):
        ok &= pd.to_numeric(trials[col], errors="coerce").notna()
    return trials[ok]


def ranked(trials: pd.DataFrame, *, max_drop: float, objective: str = "latency") -> pd.DataFrame:
    """The eligible trials, best first: by the objective's columns, then trial number."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    return eligible(trials, max_drop).sort_values([*OBJECTIVES[objective], "number"], kind="mergesort")


def select_best(trials: pd.DataFrame, *, max_drop: float, objective: str = "latency") -> Optional[int]:
    """Pure: the number of the best completed trial within `max_drop` (the metric's units:
    points for accuracy): lowest latency ratio, ties broken by size, then by the lower
    trial number; with objective "size", smallest size, then latency, then number. None
    when no trial is within the limit."""
    order = ranked(trials, max_drop=max_drop, objective=objective)
    return None if order.empty else int(order["number"].iloc[0])


# --------------------------------------------------------------------------- the choice


@dataclass(frozen=True)
class Exported:
    """What export chose and wrote. `reason`: why this trial, in words; `limit`: the drop
    limit the choice used (None for --trial) and where it came from; `files`: every path
    written (the ONNX file first, then its external-data files, then the state_dict)."""

    run: Path
    number: int
    reason: str
    objective: Optional[str]
    limit: Optional[Limit]
    val_metric: Optional[float]
    metric_drop: Optional[float]
    speedup: Optional[float]
    latency_ms: Optional[float]
    size_bytes: Optional[int]
    size_reduction: Optional[float]
    onnx: Path
    state_dict: Optional[Path]
    files: tuple[Path, ...]
    source: Path  # the run's ONNX file that was copied
    metric: "Metric"  # the run's: the units of val_metric, metric_drop and the limit


def _num(v) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def check_out(out: str | Path, *, torch: bool) -> tuple[Path, Optional[Path]]:
    """(ONNX destination, state_dict destination or None), refused before anything is
    written: a missing or unwritable directory, a destination that is a directory."""
    out = Path(out)
    parent = out.parent
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name, e.g. {out / 'model.onnx'}")
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: directory {parent} is not writable")
    if not torch:
        return out, None
    weights = out.with_suffix(".pt")
    if weights == out:
        raise ConfigError(f"--out {out}: with --torch the state_dict goes to the same name with .pt; give the ONNX file another suffix")
    if weights.is_dir():
        raise ConfigError(f"--torch: {weights} is a directory")
    return out, weights


def _limit(view: RunView, max_acc_drop: Optional[float], max_metric_drop: Optional[float]) -> Limit:
    m = view.metric
    if max_acc_drop is not None and max_metric_drop is not None:
        raise ConfigError("--max-acc-drop and --max-metric-drop set the same limit: give one")
    if max_acc_drop is not None and not m.percent:
        raise ConfigError(f"--max-acc-drop is in points of accuracy; the run's metric is {m.name!r}: "
                          f"give --max-metric-drop in its units, got --max-acc-drop {max_acc_drop}")
    flag, given = ("--max-acc-drop", max_acc_drop) if max_acc_drop is not None else ("--max-metric-drop", max_metric_drop)
    if given is None:
        return view.search_limit()
    if not (0 <= given < math.inf) or (m.percent and given > 100):
        bound = "[0, 100] points" if m.percent else "[0, inf) (the metric's units)"
        raise ConfigError(f"{flag} must be in {bound}, got {given}")
    return Limit(float(given), f"given with {flag}")


def _external_data(onnx_path: Path) -> list[str]:
    """The external-data files an ONNX file names (relative to its folder)."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    places = set()
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            places.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(places)


def _kept(view: RunView, row: pd.Series) -> Optional[Path]:
    rel = row.get("onnx")
    if not isinstance(rel, str):
        return None
    path = view.run.path / rel
    return path if path.is_file() else None


def choose(view: RunView, *, trial: Optional[int] = None, best: bool = False, max_acc_drop: Optional[float] = None,
           max_metric_drop: Optional[float] = None, objective: Optional[str] = None) -> tuple[pd.Series, str, Optional[Limit]]:
    """(the chosen trial's row, why in words, the limit used) for `trial` or `best`."""
    if (trial is None) == (not best):
        raise ConfigError("export needs one of --trial N or --best")
    if trial is not None:
        if max_acc_drop is not None or max_metric_drop is not None or objective is not None:
            raise ConfigError("--max-acc-drop, --max-metric-drop and --objective go with --best, not --trial")
        row = view.row(trial)
        if row["state"] != "COMPLETE":
            why = row.get("failure_reason") if isinstance(row.get("failure_reason"), str) else row.get("stop_reason")
            raise RunDirError(f"trial {trial} of {view.run.path} is {row['state']}" + (f" ({why})" if isinstance(why, str) else "")
                              + ": it has no model to export")
        limit = view.search_limit()
        drop = _num(row.get("metric_drop"))
        reason = f"chosen with --trial {trial}"
        if _num(row.get("duplicate_of")) is not None:
            reason += f" (the same candidate as trial {int(row['duplicate_of'])}: its file)"
        if drop is not None:
            reason += f"; {'within' if drop <= limit.value + DROP_TOLERANCE else 'beyond'} the search's limit of {limit_text(view.metric, limit)}"
        return row, reason, None
    objective = objective or "latency"
    if objective not in OBJECTIVES:
        raise ConfigError(f"--objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    limit = _limit(view, max_acc_drop, max_metric_drop)
    m = view.metric
    order = ranked(view.trials, max_drop=limit.value, objective=objective)
    if order.empty:
        done = view.trials[view.trials["state"].eq("COMPLETE")]
        drops = pd.to_numeric(done["metric_drop"], errors="coerce").dropna()
        closest = (f"; the smallest drop of a completed trial is {drop_text(m, float(drops.min()))} (trial {int(done.loc[drops.idxmin(), 'number'])})"
                   if len(drops) else "; it has no completed trial")
        raise RunDirError(f"{view.run.path}: no completed trial within {limit_text(m, limit)} ({limit.source}){closest}")
    row = order.iloc[0]
    if _kept(view, row) is None:
        kept = [int(r["number"]) for _, r in order.iterrows() if _kept(view, r) is not None]
        raise RunDirError(f"trial {int(row['number'])} is the best within {limit_text(m, limit)}, but {view.run.path} kept no ONNX file for it "
                          f"(a run keeps its front's files only, the front within the search's {limit_text(m, view.search_limit())}); "
                          + (f"export a kept one with --trial N: {', '.join(map(str, kept))}" if kept else "no trial within the limit kept its files"))
    word = {"latency": "fastest (lowest latency)", "size": "smallest"}[objective]
    reason = f"the {word} of {len(order)} completed trial{'s' * (len(order) != 1)} within {limit_text(m, limit)}"
    first = OBJECTIVES[objective][0]
    tied = order[(order[first] == row[first]) & (order["number"] != row["number"])]
    if len(tied):
        reason += (f"; tied on {first} with trial{'s' * (len(tied) != 1)} {', '.join(str(int(n)) for n in tied['number'])}, "
                   f"broken by {OBJECTIVES[objective][1]}, then trial number")
    return row, reason, limit


# --------------------------------------------------------------------------- writing


def export(run_dir: str | Path, out: str | Path, *, trial: Optional[int] = None, best: bool = False, max_acc_drop: Optional[float] = None,
           max_metric_drop: Optional[float] = None, objective: Optional[str] = None, torch: bool = False) -> Exported:
    """Copy the chosen trial's deployable ONNX file (and any external-data files it names,
    beside it) to `out`; with `torch`, its state_dict too (`out` with .pt: the fine-tuned
    float weights of the compressed architecture, which load_run(run).load_model(N)
    rebuilds). Every check runs before anything is written."""
    view = open_run(run_dir)
    onnx_out, weights_out = check_out(out, torch=torch)
    row, reason, limit = choose(view, trial=trial, best=best, max_acc_drop=max_acc_drop, max_metric_drop=max_metric_drop, objective=objective)
    number = int(row["number"])
    src = _kept(view, row)
    if src is None:
        raise RunDirError(f"trial {number} of {view.run.path} kept no ONNX file (a run keeps the files of its front only; "
                          f"autocompress show {view.run.path} lists the front)")
    extra = [(src.parent / name, onnx_out.parent / name) for name in _external_data(src)]
    for s, _ in extra:
        if not s.is_file():
            raise RunDirError(f"{src}: its external-data file {s.name} is missing")
    weights_src = None
    if torch:
        rel = row.get("state_dict")
        weights_src = view.run.path / rel if isinstance(rel, str) else view.run.trial_dir(number) / "model.pt"
        if not weights_src.is_file():
            raise RunDirError(f"--torch: {view.run.path} kept no state_dict for trial {number} ({weights_src.relative_to(view.run.path)} "
                              f"is missing); nothing written")
    for s, d in extra:
        copy_file_atomic(s, d)
    copy_file_atomic(src, onnx_out)
    written = [onnx_out, *(d for _, d in extra)]
    if weights_src is not None:
        copy_file_atomic(weights_src, weights_out)
        written.append(weights_out)
    size = _num(row.get("size_bytes"))
    return Exported(
        run=view.run.path, number=number, reason=reason, objective=(objective or "latency") if best else None, limit=limit,
        val_metric=_num(row.get("val_metric")), metric_drop=_num(row.get("metric_drop")), speedup=_num(row.get("speedup")),
        latency_ms=_num(row.get("latency_ms")), size_bytes=None if size is None else int(size), size_reduction=_num(row.get("size_reduction")),
        onnx=onnx_out, state_dict=weights_out if weights_src is not None else None, files=tuple(written), source=src, metric=view.metric,
    )


def render_export(e: Exported) -> str:
    """What was chosen, why, and what was written."""
    metric = e.metric
    lines = [f"Exported trial {e.number} of {e.run} to {e.onnx} ({size_text(e.onnx.stat().st_size)})"]
    lines.append(f"  why: {e.reason}")
    if e.limit is not None:
        lines.append(f"  limit: {limit_text(metric, e.limit)}, {e.limit.source}")
    speed = "n/a" if e.speedup is None else f"{e.speedup:.2f}x the teacher's speed"
    latency = "" if e.latency_ms is None else f" ({e.latency_ms:.4g} ms)"
    smaller = "" if e.size_reduction is None else f", {e.size_reduction:.2f}x smaller than the teacher"
    lines.append(f"  trial {e.number}: val {metric.name} {value_text(metric, e.val_metric)}, drop {drop_text(metric, e.metric_drop)}, "
                 f"{speed}{latency}, {size_text(e.size_bytes)}{smaller}")
    for extra in e.files[1:]:
        if extra != e.state_dict:
            lines.append(f"  external data: {extra}")
    if e.state_dict is not None:
        lines.append(f"  state_dict: {e.state_dict} (fine-tuned float weights of the compressed architecture; "
                     f"autocompress.load_run('{e.run}').load_model({e.number}) rebuilds the model with them)")
    return "\n".join(lines)


__all__ = ["OBJECTIVES", "Exported", "check_out", "choose", "eligible", "export", "ranked", "render_export", "select_best"]
