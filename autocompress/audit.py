"""`autocompress audit RUN_DIR [--table T]`: how well do the proxies track measured latency?
For every built trial of a run searched with measured latency, compare the latency ratio
a device table predicts and the FLOPs (multiply-accumulates) ratio with the measured
latency ratio: Spearman rank correlation, share within ±10%, and a plot. The predictions
are the ones recorded during the search (`search --table`), or, with `--table`, made now
from each trial's architecture (rebuilt from its parameters: latency depends on the
graph, not on the trained weights). Writes audit.json, audit.csv (per trial) and audit.png
into the run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from autocompress.errors import RunDirError
from autocompress.atomic import write_text_atomic
from autocompress.run import RunDir, load_run_task

TOLERANCE = 0.10


def audit_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """The built, measured trials with a prediction: number, measured, predicted, macs_ratio."""
    done = trials[trials["state"].eq("COMPLETE") & trials.get("duplicate_of", pd.Series(index=trials.index, dtype=float)).isna()]
    if "latency_source" in done:
        done = done[done["latency_source"].eq("measured")]
    measured = done["latency_ratio_recorded"].fillna(done["latency_ratio"]) if "latency_ratio_recorded" in done else done["latency_ratio"]
    return pd.DataFrame({"number": done["number"], "measured": measured, "predicted": done["latency_ratio_predicted"],
                         "macs_ratio": done["macs_ratio"]}).dropna()


def audit_stats(frame: pd.DataFrame) -> dict[str, Any]:
    """Pure: the numbers the audit reports."""
    from autocompress.evaluation.predictor import spearman, within

    return {
        "trials": int(len(frame)),
        "predictor_spearman": spearman(frame["predicted"], frame["measured"]),
        "predictor_within_10pct": within(frame["predicted"], frame["measured"], TOLERANCE),
        "flops_spearman": spearman(frame["macs_ratio"], frame["measured"]),
        "flops_within_10pct": within(frame["macs_ratio"], frame["measured"], TOLERANCE),
        "predictor_median_abs_error": float((frame["predicted"] / frame["measured"] - 1).abs().median()),
        "predictor_median_error": float((frame["predicted"] / frame["measured"] - 1).median()),  # signed: > 0 predicts too slow
        "flops_median_abs_error": float((frame["macs_ratio"] / frame["measured"] - 1).abs().median()),
    }


def predict_trials(run: RunDir, trials: pd.DataFrame, table_path: str, *, progress: Callable[[str], None] = print) -> pd.DataFrame:
    """`trials` with latency_ratio_predicted and macs_ratio made now from `table_path`, for
    every complete trial: its architecture rebuilt from the study's parameters, exported and
    quantized as in the search (the graph ONNX Runtime runs does not depend on the weights'
    values), its nodes looked up."""
    import shutil
    import tempfile

    import optuna

    from autocompress.evaluation.graph_profile import graph_nodes
    from autocompress.evaluation.predictor import LatencyTable, layer_configs, model_macs
    from autocompress.pipeline import export_architecture

    manifest = run.read_manifest()
    table = LatencyTable.load_for(table_path, manifest.get("profile"), manifest.get("profile_fingerprint"))
    profile = run.profile()
    task = load_run_task(run)
    space = run.bound_space(task)
    example = task.example
    teacher_macs = model_macs(task.teacher, example)
    params = {t.number: t.params for t in optuna.load_study(study_name=run.study_name, storage=run.storage_url).trials}  # one read
    out = trials.copy()
    todo = out.index[out["state"].eq("COMPLETE")]
    progress(f"Predicting {len(todo)} trials' latency from {table_path} ...")
    work = Path(tempfile.mkdtemp(prefix="autocompress-audit-"))
    try:
        for k, i in enumerate(todo):
            cfg = space.config_from_params(params[int(out.at[i, "number"])])
            student, path = export_architecture(task, cfg, work)
            out.at[i, "latency_ratio_predicted"] = table.predict_ratio(graph_nodes(path, profile, task.timing_feed(profile)))[0]
            out.at[i, "macs_ratio"] = sum(l.macs for l in layer_configs(student, example, cfg.quantize)) / teacher_macs
            if (k + 1) % 20 == 0:
                progress(f"  {k + 1}/{len(todo)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def audit(run_dir: str | Path, *, table: str | None = None, progress: Callable[[str], None] = print) -> dict[str, Any]:
    run = RunDir.open_existing(Path(run_dir), field="RUN_DIR")
    path = run.path / "trials.csv"
    if not path.is_file():
        raise RunDirError(f"{run.path}: no trials.csv yet")
    trials = pd.read_csv(path)
    if table is not None:
        trials = predict_trials(run, trials, table, progress=progress)
    if "latency_ratio_predicted" not in trials:
        raise RunDirError(f"{run.path}: no predictions recorded; give --table TABLE.json (autocompress profile-device) "
                          f"to predict them now")
    if "latency_source" in trials and not trials["latency_source"].eq("measured").any():
        raise RunDirError(f"{run.path}: latency was predicted, not measured, in this run; measure its front with autocompress verify")
    frame = audit_frame(trials)
    stats = audit_stats(frame)
    manifest = run.read_manifest()
    stats.update(run=str(run.path), table=table or manifest.get("latency", {}).get("table"), profile=manifest.get("profile"))
    write_text_atomic(run.path / "audit.json", json.dumps(stats, indent=1) + "\n")
    write_text_atomic(run.path / "audit.csv", frame.to_csv(index=False))
    _plot(frame, stats, run.path / "audit.png")
    progress(f"Audit of {stats['trials']} measured trials of {run.path}:")
    progress(f"  device-table predictor: Spearman {stats['predictor_spearman']:.3f}, "
             f"{100 * stats['predictor_within_10pct']:.0f}% within ±10% (median error {100 * stats['predictor_median_abs_error']:.1f}%, "
             f"median signed {100 * stats['predictor_median_error']:+.1f}%)")
    progress(f"  FLOPs (MACs ratio):     Spearman {stats['flops_spearman']:.3f}, "
             f"{100 * stats['flops_within_10pct']:.0f}% within ±10% (median error {100 * stats['flops_median_abs_error']:.1f}%)")
    progress(f"  audit.json, audit.csv (per trial), audit.png in {run.path}")
    return stats


def _plot(frame: pd.DataFrame, stats: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    lo = float(min(frame[["measured", "predicted", "macs_ratio"]].min().min(), 1.0)) * 0.8 if len(frame) else 0.01
    hi = float(max(frame[["measured", "predicted", "macs_ratio"]].max().max(), 1.0)) * 1.25 if len(frame) else 2.0
    for ax, col, name, key in ((axes[0], "predicted", "device-table prediction", "predictor"), (axes[1], "macs_ratio", "FLOPs (MACs) ratio", "flops")):
        ax.scatter(frame["measured"], frame[col], s=14, alpha=0.7)
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="grey", alpha=0.2, label="±10%")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured latency ratio to the teacher")
        ax.set_ylabel(name)
        ax.set_title(f"{name}: Spearman {stats[key + '_spearman']:.2f}, {100 * stats[key + '_within_10pct']:.0f}% within ±10%", fontsize=9)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


__all__ = ["audit", "audit_frame", "audit_stats"]
