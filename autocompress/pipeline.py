"""One candidate config -> measured metrics, on the artifact a user would deploy.

The pipeline walks the registered techniques (autocompress.techniques) stage by stage:

  copy the teacher once -> "model" techniques (blocks [+ warm-up], prune, low rank), each on
  the pipeline's copy -> "finetune" techniques set up the fine-tune (finetune [+ QAT],
  distill), which then runs (rung by rung with multi-fidelity) -> export ONNX -> "graph"
  techniques on the exported file (fuse, quantize, ...) -> accuracy with ORT on val -> latency
  with ORT, timed interleaved with the teacher -> size (all bytes of the ONNX model).

Any exception inside becomes a CandidateError naming the stage; the search records it
on the trial and goes on. `evaluate_candidate` turns a build into what a backend stores.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from autocompress.atomic import atomic_path
from autocompress.config import CandidateConfig
from autocompress.errors import CandidateError, CandidateStopped, ExportError, TaskError, one_line
from autocompress.data import structure as st
from autocompress.evaluation import CachedLatency, LatencyMeter, LatencyResult, LatencyWorker, split_metric
from autocompress.evaluation.predictor import layer_configs, model_macs
from autocompress.export import GraphContext, export_onnx, model_size_bytes
from autocompress.export.faithful import check_batches, compare_export
from autocompress.fidelity import Decision, Fidelity
from autocompress.hardware import HardwareProfile
from autocompress.names import TRIALS_DIR
from autocompress.tasks import LoadedTask
from autocompress.tasks.base import CALIBRATION_SAMPLES  # noqa: F401 - where callers have found it
from autocompress.techniques import pipeline_order
from autocompress.training import distill_, recalibrate_batchnorm_, teacher_logits
from autocompress.training.plan import TrainPlan
from autocompress.transforms import TransformContext



def stage_names() -> tuple[str, ...]:
    """The stages a build is timed in (trials.csv's t_<stage>), in pipeline order: each
    model technique (and the sub-steps it times, e.g. the block warm-up), the fine-tune (all
    fine-tune techniques), the multi-fidelity rungs, the export, each graph technique, the
    accuracy and the latency."""
    model = [n for t in pipeline_order("model") for n in (t.name, *t.substages)]
    graph = [n for t in pipeline_order("graph") for n in (t.name, *t.substages)]
    return (*model, "finetune", "rungs", "export", *graph, "accuracy", "latency")


def trial_dir(root: Path, number: int) -> Path:
    """Where trial `number` of a run rooted at `root` keeps its files."""
    return Path(root) / TRIALS_DIR / str(number)


@dataclass
class TeacherBaseline:
    onnx_path: Path
    val_metric: float
    test_metric: Optional[float]
    size_bytes: int
    latency_ms: float  # the teacher's median under the profile, measured at the start
    # name -> the teacher with one graph technique alone (Technique.baseline, e.g. "fused": ORT's
    # transformer fusion): {"latency_ratio" (to the teacher), "val_metric", "size_bytes", ...}
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class PipelineContext:
    """Everything a candidate build needs that does not change between candidates."""

    task: LoadedTask
    profile: HardwareProfile
    teacher: TeacherBaseline
    soft_targets: Optional[torch.Tensor]  # the teacher's outputs per training row (None: computed per batch)
    calibration: Any  # calibration inputs (LoadedTask.calibration)
    _latency_worker: Any = None
    accuracy_on_device: bool = False  # val accuracy by the latency worker (on the device's node), not here on the CPU
    gate: Any = None  # with busy() and step(): CPU work that a latency measurement on the same cores must not overlap
    table: Any = None  # evaluation.predictor.LatencyTable: predictions recorded next to (or instead of) measurements
    predicted: bool = False  # latency comes from `table`, nothing is timed
    teacher_macs: int = 0
    float_cache: Optional["FloatCache"] = None  # fine-tuned float models, shared by candidates that differ only after the export
    device: str = "cpu"  # where the fine-tune runs (--device); export, calibration and timing stay on the CPU

    def predict_ratio(self, path: Path) -> tuple[float, int]:
        """(latency ratio to the teacher the table predicts for the ONNX file at `path`, nodes
        it estimated): the nodes ONNX Runtime runs for it under the profile, looked up."""
        from autocompress.evaluation.graph_profile import graph_nodes

        return self.table.predict_ratio(graph_nodes(path, self.profile, self.task.timing_feed(self.profile)))

    def predicted_latency(self, ratio: float) -> LatencyResult:
        """A LatencyResult for a ratio the table predicted (labelled predicted; no interval,
        no passes)."""
        ms = ratio * self.teacher.latency_ms
        nan = float("nan")
        return LatencyResult(ratio, 0.0, ms, ms, 0.0, self.teacher.latency_ms, 0, nan, nan, False, False, "predicted")

    def busy(self):
        """Held while this candidate's build computes (the latency worker's calls step out of it)."""
        from contextlib import nullcontext

        return self.gate.busy() if self.gate is not None else nullcontext()

    @property
    def between_steps(self) -> Optional[Callable[[], None]]:
        return self.gate.step if self.gate is not None else None


    @property
    def latency_worker(self) -> LatencyMeter:
        """The process that times candidates against the teacher (started on first use)."""
        if self._latency_worker is None:
            self._latency_worker = CachedLatency(LatencyWorker(self.teacher.onnx_path, self.profile, self.task.timing_feed(self.profile)),
                                                 self.profile)
        return self._latency_worker

    def close(self) -> None:
        if self._latency_worker is not None:
            self._latency_worker.close()
            self._latency_worker = None


class FloatCache:
    """Fine-tuned float models by CandidateConfig.float_id and build seed: a candidate
    that differs from an earlier one only in what happens after the export (quantization
    format, calibration, bit widths without QAT) loads that model instead of building and
    fine-tuning it again. The newest `keep` entries are kept (each a state_dict file and
    a line of JSON: the trial that made it, the fine-tune steps it ran)."""

    def __init__(self, root: Path, *, keep: int = 16):
        self.root = Path(root)
        self.keep = keep

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.pt", self.root / f"{key}.json"

    def get(self, key: str) -> Optional[tuple[dict[str, Any], dict[str, Any]]]:
        """(state_dict, its record) or None."""
        import json

        weights, meta = self._paths(key)
        try:
            info = json.loads(meta.read_text())
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except (OSError, ValueError, RuntimeError, EOFError):
            return None
        os.utime(meta)
        return state, info

    def put(self, key: str, model: torch.nn.Module, info: dict[str, Any]) -> None:
        import json

        from autocompress.atomic import write_text_atomic

        weights, meta = self._paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = weights.with_suffix(f".tmp{os.getpid()}")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, weights)
        write_text_atomic(meta, json.dumps(info))  # written last: an entry is complete once its record exists
        entries = sorted(self.root.glob("*.json"), key=lambda f: f.stat().st_mtime, reverse=True)
        for old in entries[self.keep:]:
            for f in self._paths(old.stem):
                f.unlink(missing_ok=True)


def build_seed(seed: int, cfg: CandidateConfig) -> int:
    """The seed a candidate is built and fine-tuned with: the run's seed and the
    candidate's float part (so candidates that differ only after the export get the same
    fine-tune, and FloatCache can give one's model to the other)."""
    return seed + int(cfg.float_id[:7], 16)


@dataclass
class CandidateResult:
    config: CandidateConfig
    val_metric: float
    latency: LatencyResult
    size_bytes: int
    onnx_path: Path
    state_dict_path: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    ort_only: bool = False  # the ONNX file uses com.microsoft operators: it needs ONNX Runtime
    rung_results: list[dict[str, Any]] = field(default_factory=list)  # multi-fidelity: the candidate's rungs before the last
    macs: int = 0  # multiply-accumulates of its Conv/Linear layers (the FLOPs proxy)
    predicted: Optional[tuple[float, int]] = None  # (latency ratio the device table predicts, nodes it had to estimate)
    steps_run: Optional[int] = None  # fine-tune steps actually run (fewer than asked when stopped early)
    reused_from: Optional[int] = None  # the trial whose fine-tuned float model this candidate took (FloatCache)
    graph_record: dict[str, Any] = field(default_factory=dict)  # trial attributes the graph techniques reported (GraphContext.record)


def prepare(task: LoadedTask, profile: HardwareProfile, workdir: Path, *, latency: Optional[Callable[[Path], Any]] = None,
            accuracy_on_device: bool = False, table=None, predicted: bool = False, device: str = "cpu") -> PipelineContext:
    """Export and measure the teacher once; precompute teacher logits and calibration data.
    The returned context owns a latency worker (`latency(teacher_onnx_path)`, default a
    local LatencyWorker process; any LatencyMeter): close() it.
    accuracy_on_device: val accuracies (the teacher's too) come from the worker's
    accuracy(path), i.e. from the device's node. table: a device latency table whose
    predictions are recorded too; predicted: latency from it only (nothing timed; the
    teacher's milliseconds are the table's)."""
    path = export_teacher(task, Path(workdir) / "teacher" / "model.onnx")
    test_acc = _teacher_metric(path, task, task.test) if task.test is not None else None
    teacher_macs = model_macs(task.teacher, task.example)
    if predicted:
        val_acc = _teacher_metric(path, task, task.val)
        baseline = TeacherBaseline(path, val_acc, test_acc, model_size_bytes(path), table.teacher_ms)
        return PipelineContext(task=task, profile=profile, teacher=baseline, soft_targets=teacher_logits(task.teacher, task.train),
                               calibration=task.calibration, table=table, predicted=True, teacher_macs=teacher_macs, device=device)
    worker = latency(path) if latency is not None else CachedLatency(LatencyWorker(path, profile, task.timing_feed(profile)), profile)
    try:
        self_timing = worker.measure(path, fresh=True)
        val_acc = worker.accuracy(path) if accuracy_on_device else _teacher_metric(path, task, task.val)
    except Exception:
        worker.close()
        raise
    baseline = TeacherBaseline(path, val_acc, test_acc, model_size_bytes(path), self_timing.reference_median_ms)
    try:
        baseline.baselines = teacher_baselines(task, path, worker, accuracy_on_device=accuracy_on_device)
    except Exception:
        worker.close()
        raise
    return PipelineContext(
        task=task,
        profile=profile,
        teacher=baseline,
        soft_targets=teacher_logits(task.teacher, task.train),
        calibration=task.calibration,
        _latency_worker=worker,
        accuracy_on_device=accuracy_on_device,
        table=table,
        teacher_macs=teacher_macs,
        device=device,
    )


# why an exported file can compute something else than its model, said with each mismatch
UNFAITHFUL = ("the export traces the forward once, so a value the trace baked in (Python control flow on sizes or values, .item(), "
              "numpy) or a forward that leaves torch gives a file that computes something else")


def export_teacher(task: LoadedTask, dst: Path) -> Path:
    """The teacher exported to `dst` and run next to itself on real val inputs
    (export.faithful); a one-line TaskError when it cannot be exported (saying where) or
    when the file computes something else (saying the largest difference and where). The
    file is written beside `dst` and renamed once checked."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        try:
            path = export_onnx(task.teacher, task.example, tmp, dynamic_axes=task.dynamic_axes)
        except ExportError as exc:
            raise TaskError(f"the teacher could not be exported to ONNX: {exc.detail}") from exc
        batches = check_batches(task.check_inputs)
        try:
            bad = compare_export(task.teacher, path, batches)
        except Exception as exc:  # noqa: BLE001 - the teacher itself fails on some of these inputs
            rows = " and ".join(str(st.rows(b)) for b in batches)
            raise TaskError(f"checking the teacher's ONNX file against the teacher on {rows} val rows failed: {one_line(exc)}") from exc
        if bad is not None:
            raise TaskError(f"the teacher's ONNX export is not faithful: {bad}; {UNFAITHFUL}")
    return dst


def _teacher_metric(path: Path, task: LoadedTask, split) -> float:
    """task_metric of the teacher's file; a one-line TaskError naming the metric when it
    cannot be computed (e.g. the metric returns NaN on the whole split)."""
    try:
        return task_metric(path, task, split)
    except Exception as exc:  # noqa: BLE001 - the user's metric or data on the teacher's outputs
        raise TaskError(f"the teacher's {split.name} {task.metric.name} cannot be measured on its ONNX file: {one_line(exc)}") from exc


def teacher_baselines(task: LoadedTask, path: Path, worker: LatencyMeter, *, accuracy_on_device: bool = False) -> dict[str, dict[str, Any]]:
    """The teacher's file changed by each graph technique that offers a baseline
    (Technique.baseline: e.g. ORT's transformer fusion on a model with attention), written
    beside it (teacher/model.<name>.onnx) and measured like the teacher: its latency ratio
    to the teacher (the full protocol), val metric and size. A technique that fails on the
    teacher gives no baseline (its reason is kept under "failed")."""
    out: dict[str, dict[str, Any]] = {}
    for t in pipeline_order("graph"):
        found = t.baseline(task.teacher)
        if found is None:
            continue
        name, cfg = found
        record: dict[str, Any] = {}
        try:
            dst = t.apply(path, cfg, GraphContext(calibration=st.feed(task.calibration), input_shape=task.input_shape,
                                                  dst=path.with_name(f"model.{name}.onnx"), model=task.teacher, record=record))
            timing = worker.measure(Path(dst), fresh=True)
            val = worker.accuracy(dst) if accuracy_on_device else task_metric(Path(dst), task, task.val)
        except Exception as exc:  # noqa: BLE001 - the search goes on without that baseline
            out[name] = {"failed": one_line(exc)}
            continue
        out[name] = {"technique": t.name, "latency_ratio": timing.ratio, "val_metric": val, "size_bytes": model_size_bytes(Path(dst)),
                     "onnx": f"{path.parent.name}/{Path(dst).name}", **record}
    return out


def calibration_samples(task: LoadedTask) -> Any:
    """A fixed, seeded draw of training inputs for quantization calibration and
    activation statistics (LoadedTask.calibration: the same draw every time, so pruning
    can be replayed)."""
    return task.calibration


def _model_stage(student: torch.nn.Module, cfg: CandidateConfig, tctx: TransformContext, *,
                 stage: Callable[[str], Any] = lambda name: nullcontext()) -> torch.nn.Module:
    """The "model" techniques in pipeline order, each on the pipeline's own copy."""
    for t in pipeline_order("model"):
        with stage(t.name):
            student = t.apply(student, cfg[t.name], tctx)
    return student


def rebuild_student(task: LoadedTask, cfg: CandidateConfig) -> torch.nn.Module:
    """The candidate's float architecture before fine-tuning: the teacher transformed by
    the model-stage techniques exactly as in the search (deterministic given the teacher
    and the calibration draw; work that only changes weights, such as the block warm-up or
    BatchNorm re-estimation, is skipped), ready for its saved state_dict."""
    tctx = TransformContext(example_input=task.example, calibration=task.calibration, candidate=cfg, weights=False)
    return _model_stage(copy.deepcopy(task.teacher), cfg, tctx)


def export_architecture(task: LoadedTask, cfg: CandidateConfig, out_dir: Path) -> tuple[torch.nn.Module, Path]:
    """(the candidate's architecture untrained, its file exported and quantized as
    deployed): the graph ONNX Runtime runs, whose latency does not depend on the weights'
    values. BatchNorm statistics are recalibrated as after the search's fine-tune."""
    student = rebuild_student(task, cfg)
    recalibrate_batchnorm_(student, task.train_sample)
    path, _ = export_deployable(student, cfg, task, out_dir)
    return student, path


class _Stages:
    """Per-stage seconds of one build, and its failure policy: an exception inside a stage
    becomes a CandidateError naming it. A stage timed inside another (the block warm-up
    inside 'blocks') counts for itself only. `on_stage(name)` hears each stage as it starts
    (the search's progress display)."""

    def __init__(self, on_stage: Optional[Callable[[str], None]] = None):
        self.seconds: dict[str, float] = {}
        self._open: list[list[float]] = []  # per open stage: [start, seconds of the stages inside it]
        self._on_stage = on_stage

    @contextmanager
    def __call__(self, name: str):
        if self._on_stage is not None:
            self._on_stage(name)
        here = [time.perf_counter(), 0.0]
        self._open.append(here)
        try:
            yield
        except CandidateError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a candidate is recorded, not fatal
            raise CandidateError(f"{name}: {one_line(exc)}") from exc
        finally:
            self._open.pop()
            elapsed = time.perf_counter() - here[0]
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - here[1]
            if self._open:
                self._open[-1][1] += elapsed


def build_candidate(cfg: CandidateConfig, ctx: PipelineContext, out_dir: Path, *, seed: int = 0,
                    fidelity: Optional[Fidelity] = None, at_rung: Optional[Callable[[int, float, float], Decision]] = None,
                    on_stage: Optional[Callable[[str], None]] = None) -> CandidateResult:
    """Build, export and measure one candidate; artifacts go to `out_dir`.

    With `fidelity` the fine-tune runs rung by rung; after each rung but the last the
    candidate's torch val accuracy and measured latency ratio go to `at_rung(rung, acc,
    ratio)`, and a candidate that is not promoted raises CandidateStopped.

    With `ctx.gate` (concurrent trials on the latency device's cores) the whole build
    holds it, the fine-tune steps aside between steps when a measurement waits, and the
    latency worker's own calls step out of it. `on_stage(name)` hears each stage as it starts."""
    with ctx.busy():
        return _build(cfg, ctx, Path(out_dir), seed=seed, fidelity=fidelity, at_rung=at_rung, on_stage=on_stage)


def _build(cfg: CandidateConfig, ctx: PipelineContext, out_dir: Path, *, seed: int, fidelity: Optional[Fidelity],
           at_rung: Optional[Callable[[int, float, float], Decision]], on_stage: Optional[Callable[[str], None]] = None) -> CandidateResult:
    task = ctx.task
    if fidelity is not None and cfg.finetune.steps == 0:  # no fine-tune: nothing to run in rungs
        fidelity = None
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = _Stages(on_stage)
    torch.manual_seed(seed)
    tctx = TransformContext(example_input=task.example, calibration=ctx.calibration, candidate=cfg, teacher=task.teacher,
                            train_x=task.train_sample, seed=seed, timed=stage)
    cache_key = None
    if ctx.float_cache is not None and fidelity is None:
        plan = TrainPlan()
        for t in pipeline_order("finetune"):
            plan = t.apply(plan, cfg[t.name], tctx)
        if not plan.wrappers:  # a fine-tune wrapper (QAT) makes the float model depend on what follows the export
            cache_key = f"{cfg.float_id}-s{seed}"
            with stage("finetune"):
                hit = ctx.float_cache.get(cache_key)
            if hit is not None:
                return _build_reused(cfg, ctx, out_dir, hit, stage, tctx)
    with stage(pipeline_order("model")[0].name):  # the copy counts to the first model technique, as it always has
        student = copy.deepcopy(task.teacher)
    student = _model_stage(student, cfg, tctx, stage=stage)
    rungs = fidelity.rungs if fidelity is not None else (cfg.finetune.steps,)
    if rungs[-1] != cfg.finetune.steps:
        raise ValueError(f"the candidate's fine-tune ({cfg.finetune.steps} steps) is not the last rung of {rungs}")
    with stage("finetune"):
        plan = TrainPlan()
        for t in pipeline_order("finetune"):
            plan = t.apply(plan, cfg[t.name], tctx)
        probe = student
        if plan.wrappers and len(rungs) > 1:  # the rungs' latency probe: the same graph without the wrappers' changes
            probe = copy.deepcopy(student)
        handles = [w.begin(student, tctx.example_input) for w in plan.wrappers]
    rung_results: list[dict[str, Any]] = []
    done = 0
    plateau = None  # early stopping: one fine-tune only (rungs compare candidates at equal steps)
    if plan.early_stop is not None and len(rungs) == 1 and plan.steps > 0:
        from autocompress.training.early_stop import Plateau

        rule = plan.early_stop
        if not task.metric.percent:  # min_delta is a fraction of accuracy; elsewhere relative to the teacher's value
            rule = replace(rule, min_delta=rule.min_delta * (abs(ctx.teacher.val_metric) or 1.0))
        plateau = Plateau(rule, plan.steps)
    for rung, steps in enumerate(rungs):
        stop = None
        if plateau is not None:
            def stop(step: int) -> bool:
                ended = plateau.should_stop(step, lambda: task.metric.score(torch_metric(student, task, task.val)))
                student.train()
                return ended
        with stage("finetune"):  # a rung after the first: a new cosine cycle from where the last ended
            distill_(student, task.train, ctx.soft_targets, replace(plan, steps=steps - done), plan, teacher=task.teacher,
                     seed=seed + 1_000_003 * rung, between_steps=ctx.between_steps, stop=stop, objective=task.objective,
                     device=ctx.device)
        done = steps
        if rung < len(rungs) - 1:
            with stage("rungs"):
                acc, ratio = _rung_metrics(student, probe, cfg, ctx, out_dir / f"rung{rung}")
            score = task.metric.score(acc)  # the rungs rank higher-is-better values
            decision = at_rung(rung, score, ratio)  # type: ignore[misc]
            rung_results.append({"rung": rung, "steps": steps, "val_metric": acc, "score": score, "latency_ratio": ratio, "promoted": decision.promote,
                                 "place": decision.position + 1, "of": decision.n})
            if not decision.promote:
                raise CandidateStopped(decision.reason, rung_results)
    steps_run = plateau.history[-1][0] if plateau is not None and plateau.since >= plateau.rule.patience else done
    with stage("finetune"):
        for h in reversed(handles):
            h.bake_()  # e.g. QAT: weights now lie on the grid the quantizer will use
        state_path = out_dir / "model.pt"
        with atomic_path(state_path) as tmp:  # a killed search leaves no half-written file
            torch.save(student.state_dict(), tmp)
        if cache_key is not None:
            ctx.float_cache.put(cache_key, student, {"trial": _trial_number(out_dir), "steps_run": steps_run})
    return _finish(cfg, ctx, student, out_dir, state_path, stage, tctx, rung_results=rung_results, steps_run=steps_run)


def _trial_number(out_dir: Path) -> Optional[int]:
    return int(out_dir.name) if out_dir.name.isdigit() else None


def _build_reused(cfg: CandidateConfig, ctx: PipelineContext, out_dir: Path, hit, stage: "_Stages", tctx: TransformContext) -> CandidateResult:
    """The candidate from a fine-tuned float model another candidate made (FloatCache):
    its architecture rebuilt (the model stage without the work that only changes weights),
    the weights loaded, then exported and measured as usual."""
    state, info = hit
    with stage("finetune"):
        student = rebuild_student(ctx.task, cfg)
        student.load_state_dict(state)
        student.eval()
        state_path = out_dir / "model.pt"
        with atomic_path(state_path) as tmp:  # a killed search leaves no half-written file
            torch.save(student.state_dict(), tmp)
    return _finish(cfg, ctx, student, out_dir, state_path, stage, tctx, steps_run=info.get("steps_run"), reused_from=info.get("trial"))


def _finish(cfg: CandidateConfig, ctx: PipelineContext, student: torch.nn.Module, out_dir: Path, state_path: Path, stage: "_Stages",
            tctx: TransformContext, *, rung_results: Optional[list] = None, steps_run: Optional[int] = None,
            reused_from: Optional[int] = None) -> CandidateResult:
    """Export the fine-tuned model as deployed, then measure its accuracy, latency and size."""
    task = ctx.task
    record: dict[str, Any] = {}
    final, ort_only = export_deployable(student, cfg, task, out_dir, calibration=ctx.calibration, stage=stage, record=record, check=True)
    with stage("accuracy"):
        val_acc = ctx.latency_worker.accuracy(final) if ctx.accuracy_on_device else task_metric(final, task, task.val)
    with stage("latency"):
        predicted = ctx.predict_ratio(final) if ctx.table is not None else None
        latency = ctx.predicted_latency(predicted[0]) if ctx.predicted else ctx.latency_worker.measure(final)
    macs = sum(l.macs for l in layer_configs(student, tctx.example_input, cfg.quantize))
    return CandidateResult(cfg, val_acc, latency, model_size_bytes(final), final, state_path, stage.seconds, ort_only, rung_results or [],
                           macs=macs, predicted=predicted, steps_run=steps_run, reused_from=reused_from, graph_record=record)


def _ort_only(path: Path) -> bool:
    """The ONNX file uses operators of ONNX Runtime's own domain (com.microsoft)."""
    import onnx

    from autocompress.export.quantize import MS_DOMAIN

    return any(n.domain == MS_DOMAIN for n in onnx.load(str(path), load_external_data=False).graph.node)


def export_deployable(model: torch.nn.Module, cfg: CandidateConfig, task: LoadedTask, out_dir: Path, *, calibration: Any = None,
                      stage: Callable[[str], Any] = lambda name: nullcontext(),
                      record: Optional[dict[str, Any]] = None, check: bool = False) -> tuple[Path, bool]:
    """`model` as deployed: out_dir/model.onnx, exported on the task's example inputs, then
    changed by each of the candidate's active "graph" techniques in pipeline order (the
    files before the last removed; quantization calibrated on `calibration`, default the
    task's draw). (path, ort_only: the file needs ONNX Runtime). `stage(name)` wraps the
    'export' step and each technique (the pipeline times them). Each technique gets `model`
    (GraphContext.model) and may report trial attributes into `record`. `check`: the float
    file is run next to `model` first (export.faithful); a CandidateError if it computes
    something else."""
    final = Path(out_dir) / "model.onnx"
    steps = [t for t in pipeline_order("graph") if t.is_active(cfg[t.name])]
    with atomic_path(final) as staged:  # the last step writes beside model.onnx, then renames: never half a file
        with stage("export"):
            path = export_onnx(model, task.example, final.with_name("model.fp32.onnx") if steps else staged, dynamic_axes=task.dynamic_axes)
            bad = compare_export(model, path, check_batches(task.check_inputs)) if check else None
            if bad is not None:
                raise CandidateError(f"export: the ONNX file is not faithful to the model: {bad}")
        for i, t in enumerate(steps):
            with stage(t.name):
                feed = st.feed(task.calibration if calibration is None else calibration)
                dst = staged if i == len(steps) - 1 else final.with_name(f"model.{t.name}.onnx")
                out = t.apply(path, cfg[t.name], GraphContext(calibration=feed, input_shape=task.input_shape, dst=dst, model=model,
                                                              record=record if record is not None else {}))
                os.remove(path)
                path = out
        if Path(path) != staged:
            raise CandidateError(f"export: the last graph step wrote {path}, not the file it was given ({staged.name})")
    return final, bool(steps) and _ort_only(final)


def _rung_metrics(student: torch.nn.Module, probe: torch.nn.Module, cfg: CandidateConfig, ctx: PipelineContext,
                  probe_dir: Path) -> tuple[float, float]:
    """(torch val accuracy of the fine-tuning model, latency ratio of `probe` exported and
    quantized as the candidate will be) at a rung. `probe` has the candidate's graph: the
    student itself, or with a fine-tune wrapper such as QAT a copy taken before it (a
    deepcopy of a parametrized module shares its class, so baking a copy would break the
    original). The latency depends on the graph, not on the weights' values; the probe
    files are removed."""
    acc = torch_metric(student, ctx.task, ctx.task.val)
    try:
        onnx, _ = export_deployable(probe, cfg, ctx.task, probe_dir, calibration=ctx.calibration)
        ratio = ctx.predict_ratio(onnx)[0] if ctx.predicted else ctx.latency_worker.measure(onnx).ratio
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    return acc, ratio


@dataclass
class Outcome:
    """What evaluating one candidate gives a backend: the three objectives and extra
    attributes to store on the trial."""

    values: tuple[float, float, float]  # the val metric's score (max; Metric.score), latency ratio (min), size bytes (min)
    attrs: dict[str, Any] = field(default_factory=dict)


def evaluate_candidate(cfg: CandidateConfig, number: int, ctx: PipelineContext, root: Path, *, seed: int,
                       fidelity: Optional[Fidelity] = None, at_rung: Optional[Callable[[int, float, float], Decision]] = None,
                       on_stage: Optional[Callable[[str], None]] = None) -> Outcome:
    """Build and measure one candidate into trial `number`'s directory under `root` (the run
    directory, or a trial process's scratch folder); its Outcome (objectives + trial
    attributes, file paths relative to `root`). CandidateError (and CandidateStopped, with
    multi-fidelity) propagates, nothing left behind. `on_stage(name)`: each pipeline stage as it starts."""
    out_dir = trial_dir(root, number)
    try:
        res = build_candidate(cfg, ctx, out_dir, seed=build_seed(seed, cfg), fidelity=fidelity, at_rung=at_rung, on_stage=on_stage)
    except (CandidateError, CandidateStopped):
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    lat = res.latency
    attrs = {
        "val_metric": res.val_metric,
        "latency_ratio": lat.ratio,
        "size_bytes": res.size_bytes,
        "metric_drop": ctx.task.metric.drop(ctx.teacher.val_metric, res.val_metric),  # points for accuracy, else the metric's units
        "latency_ratio_spread": lat.ratio_spread,
        "latency_ratio_low": lat.ratio_low,  # the ratio's 95% interval (nan: too few passes for one)
        "latency_ratio_high": lat.ratio_high,
        "latency_passes": lat.passes,
        "latency_converged": lat.converged,
        "not_faster": lat.not_faster,  # not below the teacher's latency beyond noise
        "latency_cached": lat.cached,  # an identical file was timed before: its result
        "latency_source": lat.source,  # measured, or predicted from a device table
        "macs": res.macs,
        "macs_ratio": res.macs / ctx.teacher_macs if ctx.teacher_macs else float("nan"),  # the FLOPs proxy of the latency ratio
        "candidate_median_ms": lat.candidate_median_ms,
        "candidate_p90_ms": lat.candidate_p90_ms,
        "candidate_spread": lat.candidate_spread,
        "reference_median_ms": lat.reference_median_ms,
        "onnx": str(res.onnx_path.relative_to(root)),
        "state_dict": str(res.state_dict_path.relative_to(root)),
        "stage_seconds": res.stage_seconds,
        "ort_only": res.ort_only,
    }
    if fidelity is not None:
        attrs["rung_results"] = res.rung_results
    if cfg.finetune.early_stop and res.steps_run is not None:
        attrs["finetune_steps_run"] = res.steps_run  # of cfg.finetune.steps: fewer when the val accuracy stopped moving
    if res.reused_from is not None:
        attrs["finetune_reused_from"] = res.reused_from  # its fine-tuned float model came from that trial (FloatCache)
    attrs.update(res.graph_record)  # e.g. fuse's fused_ops
    if res.predicted is not None:
        attrs["latency_ratio_predicted"], attrs["predicted_nodes_estimated"] = res.predicted
    return Outcome((ctx.task.metric.score(res.val_metric), lat.ratio, float(res.size_bytes)), attrs)


def task_metric(path: Path, task: LoadedTask, split) -> float:
    """The task's metric of the ONNX file at `path` on `split` (ONNX Runtime)."""
    return split_metric(path, split, task.metric, kind=task.output_kind)


@torch.no_grad()
def torch_metric(model: torch.nn.Module, task: LoadedTask, split, *, batch: int = 512) -> float:
    """The task's metric of a torch model in eval mode (left in eval mode) on a split, on
    its outputs concatenated over the split as ONNX Runtime's are (named like the task's
    exported outputs): what early stopping and the rungs compare."""
    model.eval()
    on = next(model.parameters()).device  # the fine-tune's device, for its early-stopping checks
    outs: list[list[Any]] = []
    targets = []
    for inputs, y in split.batches(batch):
        if on.type != "cpu":
            inputs = st.apply(inputs, lambda t: t.to(on))
        outs.append([t.detach().cpu().numpy() for _, t in st.output_fields(st.call(model, inputs))])
        targets.append(np.asarray(y))
    fields = {n: np.concatenate([o[i] for o in outs]) for i, n in enumerate(task.output_names)}
    return task.metric(fields, np.concatenate(targets), kind=task.output_kind)


@torch.no_grad()
def torch_accuracy(model: torch.nn.Module, split, *, batch: int = 512) -> float:
    """Top-1 accuracy of a torch model in eval mode (left in eval mode) on a split."""
    model.eval()
    hits = n = 0
    for inputs, y in split.batches(batch):
        hits += int((st.primary(st.call(model, inputs)).argmax(dim=1) == torch.as_tensor(y)).sum())
        n += len(y)
    return hits / max(1, n)
