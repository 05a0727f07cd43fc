"""`autocompress profile-device --profile P --out table.json`: measure, on the machine where it
runs, the latency table the predictor needs (evaluation.predictor).

1. Sample candidates from the search space (random), build each one's graph (blocks, pruning,
   low-rank: no fine-tune, latency does not depend on the weights' values), export and
   quantize it, and time it against the teacher with the usual protocol.
2. Collect every layer configuration of those candidates and of the teacher, and time each
   layer alone against a fixed reference layer, interleaved.
3. Time the teacher against the reference layer (the teacher in reference-layer units), and
   fit the per-graph overhead (c0 + c1 * layers) on the sampled candidates.

Everything is a ratio measured on this machine under the profile; nothing absolute is kept.
"""

from __future__ import annotations

import dataclasses
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
    space: Optional[str] = None
    samples: int = 30
    seed: int = 0


def profile_device(o: ProfileDeviceOptions, *, progress: Callable[[str], None] = print):
    """Make and save the table; returns it."""
    import optuna

    from autocompress.evaluation import LatencyWorker
    from autocompress.evaluation.predictor import (REFERENCE_LAYER, LatencyTable, export_layer, fit_overhead, layer_configs,
                                                   single_layer_module, time_layers, within)
    from autocompress.export import export_onnx
    from autocompress.hardware import load_profile
    from autocompress.pipeline import calibration_samples, export_deployable, rebuild_student
    from autocompress.search import bind_space, check_space_for_model, check_space_for_profile
    from autocompress.space import load_space
    from autocompress.tasks import load_task
    from autocompress.training import recalibrate_batchnorm_

    if o.samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {o.samples}")
    if (o.model is None) != (o.data is None):
        raise ConfigError("--model and --data go together: give both, or neither for the demo")
    out = Path(o.out)
    if out.exists() and not out.is_file():
        raise ConfigError(f"--out {o.out}: exists and is not a file")
    given = load_profile(o.profile or "cpu-1thread")
    profile = dataclasses.replace(given, input_shape=None)  # layers are timed at their own shapes
    space = load_space(o.space or "default")
    check_space_for_profile(space, profile)
    task = load_task(o.model, o.data, o.checkpoint, progress=progress)
    check_space_for_model(space, task.teacher)
    space, _ = bind_space(space, task)
    example = task.train.x[:2]
    calib = calibration_samples(task).numpy()
    work = Path(tempfile.mkdtemp(prefix="autocompress-profile-"))
    try:
        teacher_onnx = export_onnx(task.teacher, task.input_shape, work / "teacher.onnx")
        from autocompress.config import QuantizeConfig

        teacher_layers = layer_configs(task.teacher, example, QuantizeConfig())
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=o.seed))
        samples = []  # (layers, measured ratio to the teacher)
        progress(f"Timing {o.samples} sampled candidates against the teacher under profile {profile.name!r} ...")
        with LatencyWorker(teacher_onnx, profile, task.input_shape) as worker:
            while len(samples) < o.samples and len(study.trials) < 5 * o.samples:
                trial = study.ask()
                cfg = space.suggest(trial)
                study.tell(trial, 0.0)
                try:
                    student = rebuild_student(task, cfg)
                    # running statistics as after the search's fine-tune: fresh blocks' identical BatchNorms would export
                    # as shared (Identity) biases, which ORT's QOperator quantizer cannot read
                    recalibrate_batchnorm_(student, task.train.x)
                    path, _ = export_deployable(student, cfg.quantize, task.input_shape, calib, work / "candidate")
                    samples.append((layer_configs(student, example, cfg.quantize), worker.measure(path).ratio))
                except Exception as exc:  # noqa: BLE001 - a candidate the model cannot take: skip it, say so
                    progress(f"  skipped a sample ({one_line(exc)})")
                    continue
                if len(samples) % 10 == 0:
                    progress(f"  {len(samples)}/{o.samples} candidates timed")
        if not samples:
            raise CandidateError("no sampled candidate could be built and timed")
        layers = [l for s in samples for l in s[0]] + teacher_layers
        distinct = {l.key: l for l in layers}
        progress(f"Timing {len(distinct)} layer configurations against the reference layer ({REFERENCE_LAYER.key}) ...")
        entries = time_layers(distinct.values(), profile, work / "layers", progress=progress)
        ref = export_layer(REFERENCE_LAYER, work / "reference.onnx")
        with LatencyWorker(ref, profile, single_layer_module(REFERENCE_LAYER)[1]) as worker:
            timing = worker.measure(teacher_onnx, candidate_shape=tuple(task.input_shape))
        teacher_units = timing.ratio
        table = LatencyTable(given.name, given.fingerprint, entries,
                             {k: l.to_dict() for k, l in distinct.items()}, teacher_units, timing.reference_median_ms)
        sums = [sum(entries[l.key] for l in s[0]) for s in samples] + [sum(entries[l.key] for l in teacher_layers)]
        counts = [len(s[0]) for s in samples] + [len(teacher_layers)]
        measured = [s[1] * teacher_units for s in samples] + [teacher_units]
        table.overhead = fit_overhead(sums, counts, measured)
        predicted = [table.predict_ratio(s[0])[0] for s in samples]
        table.fit = {"samples": len(samples), "space": space.source, "seed": o.seed,
                     "in_sample_within_10pct": within(predicted, [s[1] for s in samples]),
                     "sample_ratios": [[round(s[1], 5), round(p, 5)] for s, p in zip(samples, predicted)]}
        table.save(out)
        progress(f"Latency table: {len(entries)} layer configurations, teacher = {teacher_units:.2f} reference layers, "
                 f"overhead c0 {table.overhead[0]:.3f} + c1 {table.overhead[1]:.4f} per layer; in-sample "
                 f"{100 * table.fit['in_sample_within_10pct']:.0f}% of {len(samples)} candidates within ±10%. Written to {out}")
        return table
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["ProfileDeviceOptions", "profile_device"]
