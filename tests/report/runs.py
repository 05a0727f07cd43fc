"""Hand-made run directories for the report tests: run.json as the search writes it and
trials.csv written by the search's own writer (outputs.write_trials_csv), from given
trial records; nothing is trained or measured."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Sequence

from autocompress.evaluation.metrics import BUILTIN, Metric
from autocompress.outputs import write_csv, write_trials_csv
from autocompress.run import RunDir, new_manifest


def done(number: int, value: float, ratio: float, size: int, description: str = "", **extra) -> dict:
    """A completed trial record: val metric, latency ratio to the teacher, ONNX size."""
    return {"number": number, "state": "COMPLETE", "description": description or f"prune 0.{number} l1 · kd 10 a=0.5 T=4 · fp32",
            "val_metric": value, "latency_ratio": ratio, "size_bytes": size, **extra}


def make_run(path: Path, records: Sequence[dict], *, metric: Metric = BUILTIN["accuracy"], teacher_value: float = 0.90,
             latency_ms: float = 2.0, size_bytes: int = 100_000, max_acc_drop: Optional[float] = None,
             test: Optional[dict[int, float]] = None, command: Sequence[str] = ("/venv/bin/autocompress", "search", "--budget", "9")) -> Path:
    """A run directory at `path` holding `records`; `max_acc_drop` None: the default limit
    recorded as drop_limit (the hypervolume reference, as the search does). `test`: front
    trial -> test metric, written to pareto.csv."""
    run = RunDir(path)
    run.create()
    limit = max_acc_drop if max_acc_drop is not None else metric.drop_reference(teacher_value)
    teacher = SimpleNamespace(val_metric=teacher_value, test_metric=teacher_value, latency_ms=latency_ms, size_bytes=size_bytes, baselines={})
    df = write_trials_csv(run, records, teacher, max_acc_drop=limit, metric=metric)
    manifest = new_manifest() | {
        "command": list(command), "profile": "cpu-1thread", "seed": 0, "sampler": "tpe", "budget": len(records), "backend": "optuna",
        "device": "cpu", "max_acc_drop": max_acc_drop, "metric": metric.describe(), "drop_limit": limit,
        "teacher": {metric.column("val"): teacher_value, metric.column("test"): teacher_value, "size_bytes": size_bytes, "latency_ms": latency_ms},
    }
    manifest["cpu"] = {"model": "Test CPU 9000", "flags": ["avx2", "avx512_vnni"], "cores": 4, "machine": "x86_64"}
    run.write_manifest(manifest)
    front = df[df["pareto"]].copy()
    front["test_metric"] = [(test or {}).get(int(n), float("nan")) for n in front["number"]]
    write_csv(path / "pareto.csv", front, metric)
    return path
