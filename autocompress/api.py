"""The Python API; the command line is a thin layer over it.

    import autocompress as ac

    task = ac.Task(model, train=train_ds, val=val_ds, test=test_ds)  # Datasets or DataLoaders of (x, y)
    result = ac.search(task, budget=30, out="runs/mine")            # keywords: the CLI's options
    result.front            # pandas DataFrame, one row per Pareto point
    result.trials           # every trial
    result.export(7, "model.onnx")   # trial 7's deployable ONNX file
    result.load_model(7)             # its fine-tuned PyTorch model
    ac.load_run("runs/mine")         # the same SearchResult, from disk
    ac.api.show("runs/mine", trial=7)                          # trial 7's record (autocompress show)
    ac.api.export("runs/mine", "model.onnx", best=True)        # the fastest within the limit (autocompress export)
    ac.api.report("runs/mine")   # pareto.png, pareto.html, report.md in the run (autocompress report)

The keyword arguments of `search` are the fields of driver.SearchOptions, which are the
CLI's options with underscores (`max_metric_drop=1.0` is `--max-metric-drop 1.0`); the demo runs
when neither a Task nor `model=`/`data=` files are given. Every problem with them is a
one-line error (autocompress.errors) raised before any expensive work.

A Task holds Python objects, not files, so what must load it again elsewhere needs it
passed in: `search(task, resume=path)` continues a run, `load_run(path, task=task)` is
needed for `load_model`. Such a task runs with the local backend, one trial at a time.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from autocompress.errors import ConfigError, RunDirError, TaskError
from autocompress.tasks.python import Task

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class SearchResult:
    """A finished (or interrupted) run, read from its directory."""

    path: Path
    task: Optional[Task] = None

    def _csv(self, name: str) -> "pd.DataFrame":
        import pandas as pd

        file = self.path / name
        if not file.is_file():
            raise RunDirError(f"{self.path}: no {name} (the run has no finished trial yet)")
        return pd.read_csv(file)

    @property
    def front(self) -> "pd.DataFrame":
        """The Pareto front within the run's drop limit (pareto.csv)."""
        return self._csv("pareto.csv")

    @property
    def trials(self) -> "pd.DataFrame":
        """Every trial, failed ones too (trials.csv)."""
        return self._csv("trials.csv")

    @property
    def manifest(self) -> dict[str, Any]:
        from autocompress.run import RunDir

        return RunDir(self.path).read_manifest()

    @property
    def metric(self):
        """The metric the run was judged by (evaluation.metrics.Metric: name, direction,
        units); the CSV files name its columns after it (val_accuracy, acc_drop_pts;
        val_mse, mse_drop)."""
        from autocompress.evaluation.metrics import Metric

        return Metric.described(self.manifest.get("metric"))

    @property
    def stopped(self) -> Optional[str]:
        """Why the last search of this run stopped before its budget because its trials kept
        failing (--max-failures, or the same error in its first trials: autocompress.stopping),
        or None."""
        timing = self.manifest.get("timing") or [{}]
        stop = timing[-1].get("stopped")
        return stop["message"] if stop else None

    @property
    def teacher(self) -> dict[str, Any]:
        """The teacher's val/test metric (named as the CSV files name them: val_accuracy,
        test_accuracy; val_mse, ...), size and latency, as measured in the run."""
        return dict(self.manifest.get("teacher", {}))

    def _number(self, trial: Any) -> int:
        """A trial number, or a row of `front` / `trials` (its `number`)."""
        import operator

        n = trial["number"] if hasattr(trial, "keys") and "number" in trial.keys() else trial
        try:
            if isinstance(n, bool):
                raise TypeError
            return operator.index(n)
        except TypeError:
            raise ConfigError(f"trial must be a trial number or a row of result.front, got {trial!r}") from None

    def export(self, trial: Any, path: str | Path) -> Path:
        """Copy trial's deployable ONNX file (front points keep theirs) to `path`."""
        n = self._number(trial)
        src = self.path / "trials" / str(n) / "model.onnx"
        if not src.is_file():
            raise RunDirError(f"{self.path}: trial {n} kept no ONNX file (only front points keep theirs)")
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest

    def load_model(self, trial: Any):
        """Trial's fine-tuned float PyTorch model (rebuilt from the teacher, its weights loaded)."""
        from autocompress.driver import load_trial_model

        loaded = self.task.load() if self.task is not None else None
        return load_trial_model(self.path, self._number(trial), task=loaded)


def _options(options: dict[str, Any]):
    from autocompress.driver import SearchOptions

    fields = {f.name for f in dataclasses.fields(SearchOptions)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"search() got an unknown option {unknown[0]!r}; options: {sorted(fields)}")
    for key in ("out", "resume", "space", "profile", "model", "data", "checkpoint", "table", "task"):
        if isinstance(options.get(key), Path):
            options[key] = str(options[key])
    return SearchOptions(**options)


def search(task: "Task | str | None" = None, *, progress: Callable[[str], None] = print, **options: Any) -> SearchResult:
    """Run (or, with `resume=`, continue) a search and return its result. `task`: a Task, or
    "FILE.py:FN" naming a function that returns one (the CLI's --task: worker processes and
    a resume load it from the file again), or None for `model=`/`data=` files or the demo."""
    from autocompress import driver

    if isinstance(task, (str, Path)):
        options["task"], task = str(task), None
    elif task is not None and not isinstance(task, Task):
        raise ConfigError(f"task must be an autocompress.Task or 'FILE.py:FN', got {type(task).__name__}")
    o = _options(options)
    driver.validate(o, python_task=task is not None)  # before the task's data is read
    path = driver.search(o, progress=progress, task=task.load() if task is not None else None)
    return SearchResult(Path(path), task)


def load_run(path: str | Path, *, task: Optional[Task] = None) -> SearchResult:
    """The SearchResult of a run directory. `task` is needed only to rebuild a PyTorch model
    (load_model) of a run whose task was built in Python."""
    from autocompress.run import RunDir

    run = RunDir.open_existing(Path(path), field="load_run:")
    if task is not None and not isinstance(task, Task):
        raise TaskError(f"task must be an autocompress.Task, got {type(task).__name__}")
    return SearchResult(run.path, task)


def show(run_dir: str | Path, *, trial: Optional[int] = None):
    """A run's summary (inspect_run.RunInfo: teacher, front by latency, drop limit, trial
    counts), or with `trial` that trial's record (inspect_run.TrialInfo: configuration,
    metrics, stage times, files). inspect_run.render(...) gives the text `autocompress show` prints."""
    from autocompress.inspect_run import show as _show

    return _show(run_dir, trial=trial)


def export(run_dir: str | Path, out: str | Path, *, trial: Optional[int] = None, best: bool = False,
           max_acc_drop: Optional[float] = None, max_metric_drop: Optional[float] = None, objective: Optional[str] = None,
           torch: bool = False):
    """Copy one trial's deployable ONNX file to `out` (atomically), chosen by `trial` or as the
    `best` one ("latency" or "size" `objective`) within a drop limit (the search's unless
    given); with `torch`, its state_dict to `out` with .pt. Returns deploy.Exported: the
    trial, why it was chosen, the limit and its source, its metrics, the files written."""
    from autocompress.deploy import export as _export

    return _export(run_dir, out, trial=trial, best=best, max_acc_drop=max_acc_drop, max_metric_drop=max_metric_drop,
                   objective=objective, torch=torch)


def report(run_dir: str | Path) -> list[Path]:
    """Write pareto.png, pareto.html and report.md into the run at `run_dir` from what it
    recorded (nothing is measured); their paths. RunDirError when it is not a run."""
    from autocompress.report.build import write_report

    return write_report(run_dir)


__all__ = ["Task", "SearchResult", "search", "load_run", "show", "export", "report"]
