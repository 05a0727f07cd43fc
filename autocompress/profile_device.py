"""`autocompress profile-device --profile P --out table.json`: measure, on the machine where it
runs, the latency table the predictor needs (evaluation.predictor).

1. Sample candidates from the search space (random), build each one's graph (blocks, pruning,
   low-rank: no fine-tune, latency does not depend on the weights' values), export and
   quantize it, and time it against the teacher with the usual protocol (its latency ratio).
2. Profile each sample and the teacher node by node, interleaved with the teacher
   (evaluation.graph_profile.node_costs): each optimized-graph node's kernel time in context,
   as a ratio to the teacher's.
3. Keep each node configuration's median, and fit how node sums and counts make the
   measured ratios.

Everything is a ratio measured on this machine under the profile; nothing absolute is kept
but the teacher's median time, for display.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from autocompress.errors import CandidateError, ConfigError, one_line


@dataclass(frozen=True)
class ProfileDeviceOptions:
    out: str
    profile: Optional[str] = None
    model: Optional[str] = None
    data: Optional[str] = None
    checkpoint: Optional[str] = None
    task: Optional[str] = None  # FILE.py:FN returning an autocompress.Task (instead of model/data)
    space: Optional[str] = None
    samples: int = 300
    seed: int = 0


def profile_device(o: ProfileDeviceOptions, *, progress: Callable[[str], None] = print):
    """Make and save the table; returns it."""
    import optuna

    from autocompress.evaluation import LatencyWorker
    from autocompress.evaluation.predictor import LatencyTable, within
    from autocompress.hardware import load_profile
    from autocompress.pipeline import export_architecture, export_teacher
    from autocompress.space import load_space
    from autocompress.tasks import check_source, load_task

    if o.samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {o.samples}")
    check_source(o.model, o.data, o.checkpoint, o.task)
    out = Path(o.out)
    if out.exists() and not out.is_file():
        raise ConfigError(f"--out {o.out}: exists and is not a file")
    profile = load_profile(o.profile or "cpu-1thread")
    space = load_space(o.space or "default")
    space.check_profile(profile)
    task = load_task(o.model, o.data, o.checkpoint, task=o.task, progress=progress)
    space, _ = space.bind(task.teacher, task.example)
    work = Path(tempfile.mkdtemp(prefix="autocompress-profile-"))
    try:
        teacher_onnx = export_teacher(task, work / "teacher.onnx")  # refused in one line when unfaithful
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=o.seed))
        samples = []  # (nodes, units, measured ratio to the teacher)
        progress(f"Timing and profiling {o.samples} sampled candidates against the teacher under profile {profile.name!r} ...")
        with LatencyWorker(teacher_onnx, profile, task.timing_feed(profile)) as worker:
            while len(samples) < o.samples and len(study.trials) < 5 * o.samples:
                trial = study.ask()
                cfg = space.suggest(trial)
                study.tell(trial, 0.0)
                try:
                    _, path = export_architecture(task, cfg, work / "candidate")
                    ratio = worker.measure(path).ratio
                    samples.append((*worker.node_costs(path), ratio))
                except Exception as exc:  # noqa: BLE001 - a candidate the model cannot take: skip it, say so
                    progress(f"  skipped a sample ({one_line(exc)})")
                    continue
                if len(samples) % 10 == 0:
                    progress(f"  {len(samples)}/{o.samples} candidates timed and profiled")
            if not samples:
                raise CandidateError("no sampled candidate could be built and timed")
            teacher_nodes, teacher_units = worker.node_costs(teacher_onnx)
            teacher_ms = worker.measure(teacher_onnx).reference_median_ms
        fit = {"samples": len(samples), "space": space.source, "seed": o.seed}
        table = LatencyTable.from_samples(profile, samples + [(teacher_nodes, teacher_units, 1.0)], teacher_ms=teacher_ms, fit=fit)
        predicted = [table.predict_ratio(nodes)[0] for nodes, _, _ in samples]
        table.fit.update(in_sample_within_10pct=within(predicted, [r for _, _, r in samples]),
                         sample_ratios=[[round(r, 5), round(p, 5)] for (_, _, r), p in zip(samples, predicted)])
        table.save(out)
        a, b, c = table.combine
        progress(f"Latency table: {len(table.entries)} node configurations from {len(samples)} candidates and the teacher "
                 f"(teacher {teacher_ms:.3f} ms); ratio = {a:.3f} x node sum {b:+.4f} x nodes {c:+.3f}; in-sample "
                 f"{100 * table.fit['in_sample_within_10pct']:.0f}% of the candidates within ±10%. Written to {out}")
        return table
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["ProfileDeviceOptions", "profile_device"]
