"""`autocompress verify RUN_DIR`: re-measure every front point of a finished run in this
(fresh) process, with the run's hardware profile or another one, and compare with what
the run recorded: speedup over the teacher (median of several independent interleaved
measurements), val accuracy of the ONNX file, and the "not faster" flag.

A speedup is reproduced when the re-measured one is within ±7% of the recorded one, or
±15% for points whose latency is below 0.1 ms (timer and scheduling noise dominate
there). The table goes to the terminal and to verify.csv in the run directory; the exit
code is 1 when a point is not reproduced.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from autocompress.errors import RunDirError
from autocompress.atomic import write_text_atomic
from autocompress.run import RunDir, load_run_task

TOLERANCE = 0.07
TOLERANCE_FAST = 0.15  # points under FAST_MS of teacher-relative latency
FAST_MS = 0.1


@dataclass(frozen=True)
class VerifyOptions:
    run_dir: str
    profile: Optional[str] = None  # default: the run's own profile
    repeats: int = 5


def tolerance_for(latency_ms: float) -> float:
    return TOLERANCE_FAST if latency_ms < FAST_MS else TOLERANCE


def verify(o: VerifyOptions, *, progress: Callable[[str], None] = print) -> pd.DataFrame:
    """Re-measure the run's front; returns the comparison table (also written to
    verify.csv). Raises RunDirError for a directory that is not a finished run."""
    from autocompress.evaluation import LatencyWorker
    from autocompress.evaluation.latency import not_faster
    from autocompress.pipeline import task_metric
    from autocompress.hardware import check_available, load_profile

    if o.repeats < 1:
        from autocompress.errors import ConfigError

        raise ConfigError(f"--repeats must be >= 1, got {o.repeats}")
    run = RunDir.open_existing(Path(o.run_dir), field="RUN_DIR")
    pareto = run.path / "pareto.csv"
    if not pareto.is_file():
        raise RunDirError(f"{run.path}: no pareto.csv (the search has not written its results yet)")
    front = pd.read_csv(pareto)
    manifest = run.read_manifest()
    if o.profile is None:
        profile = run.profile()
        check_available(profile)
    else:
        profile = load_profile(o.profile)
    same_profile = profile.fingerprint == manifest.get("profile_fingerprint")
    task = load_run_task(run)
    metric = task.metric
    val_col = metric.column("val")  # val_accuracy, val_mse, ...
    teacher = run.path / "teacher" / "model.onnx"
    progress(f"Verifying {len(front)} front points of {run.path} under profile {profile.name!r}"
             + ("" if same_profile else f" (the run used {manifest.get('profile')!r}: recorded values are under that profile)")
             + f", median of {o.repeats} measurements each ...")
    rows = []
    with LatencyWorker(teacher, profile, task.timing_feed(profile)) as worker:
        for _, p in front.sort_values("latency_ratio").iterrows():
            path = run.path / p["onnx"]
            results = [worker.measure(path) for _ in range(o.repeats)]
            ratio = statistics.median(r.ratio for r in results)
            lo = statistics.median(r.ratio_low for r in results)
            hi = statistics.median(r.ratio_high for r in results)
            teacher_ms = statistics.median(r.reference_median_ms for r in results)
            acc = task_metric(path, task, task.val)
            recorded = float(p["latency_ratio"])
            tol = tolerance_for(recorded * float(manifest["teacher"]["latency_ms"]))
            rel = recorded / ratio - 1.0  # re-measured speedup vs recorded speedup
            slow = not_faster(ratio, hi)
            rows.append({
                "number": int(p["number"]), "description": p["description"],
                "speedup_recorded": 1.0 / recorded, "speedup_remeasured": 1.0 / ratio, "speedup_change": rel,
                "tolerance": tol, "reproduced": abs(rel) <= tol,
                "remeasured_ratios": " ".join(f"{r.ratio:.4f}" for r in results),
                "latency_ms_remeasured": ratio * teacher_ms,
                f"{val_col}_recorded": float(p[val_col]), f"{val_col}_remeasured": acc,
                "not_faster_recorded": bool(p["not_faster"]) if pd.notna(p.get("not_faster")) else None,
                "not_faster_remeasured": slow, "ratio_low": lo, "ratio_high": hi,
            })
            r = rows[-1]
            progress(f"  #{r['number']:<4} {r['speedup_recorded']:6.2f}x -> {r['speedup_remeasured']:6.2f}x ({100 * rel:+5.1f}%, "
                     f"±{100 * tol:.0f}% {'ok' if r['reproduced'] else 'NOT REPRODUCED'})  val {metric.name} {metric.show(r[val_col + '_recorded'])} -> "
                     f"{metric.show(acc)}" + ("  not faster" if slow else ""))
    table = pd.DataFrame(rows)
    write_text_atomic(run.path / "verify.csv", table.to_csv(index=False))
    n_ok = int(table["reproduced"].sum()) if len(table) else 0
    flags = table.dropna(subset=["not_faster_recorded"]) if len(table) else table
    agree = int((flags["not_faster_recorded"].astype(bool) == flags["not_faster_remeasured"]).sum()) if len(flags) else 0
    progress(f"\n{n_ok} of {len(table)} speedups reproduced within tolerance; 'not faster' flag agrees on {agree} of {len(flags)}; "
             f"table in {run.path / 'verify.csv'}")
    return table


__all__ = ["VerifyOptions", "tolerance_for", "verify"]
