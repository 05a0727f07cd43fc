"""One candidate config -> measured metrics, on the artifact a user would deploy:

copy teacher -> substitute blocks [-> block-wise warm-up] -> prune (Torch-Pruning) -> SVD
low-rank -> distillation fine-tune -> export ONNX -> [int8 static quantization] -> accuracy
with ORT on val -> latency with ORT, timed interleaved with the teacher -> size (all bytes of
the ONNX model).

Any exception inside becomes a CandidateError naming the stage; the search records it
on the trial and goes on.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from autocompress.backends.halving import Decision, Fidelity
from autocompress.config import CandidateConfig, DistillConfig
from autocompress.errors import CandidateError, CandidateStopped, one_line
from autocompress.evaluation import CachedLatency, LatencyResult, LatencyWorker, onnx_accuracy
from autocompress.evaluation.predictor import layer_configs, model_macs
from autocompress.export import export_onnx, model_size_bytes, quantize_onnx
from autocompress.hardware import HardwareProfile
from autocompress.tasks import Task
from autocompress.training import distill_, recalibrate_batchnorm_, teacher_logits
from autocompress.transforms import TransformContext, apply_transform

CALIBRATION_SAMPLES = 128
STAGES = ("blocks", "warmup", "prune", "lowrank", "finetune", "rungs", "export", "quantize", "accuracy", "latency")


@dataclass
class TeacherBaseline:
    onnx_path: Path
    val_accuracy: float
    test_accuracy: Optional[float]
    size_bytes: int
    latency_ms: float  # the teacher's median under the profile, measured at the start


@dataclass
class PipelineContext:
    """Everything a candidate build needs that does not change between candidates."""

    task: Task
    profile: HardwareProfile
    teacher: TeacherBaseline
    soft_targets: torch.Tensor
    calibration: np.ndarray
    _latency_worker: Any = None
    accuracy_on_device: bool = False  # val accuracy by the latency worker (on the device's node), not here on the CPU
    gate: Any = None  # with busy() and step(): CPU work that a latency measurement on the same cores must not overlap
    table: Any = None  # evaluation.predictor.LatencyTable: predictions recorded next to (or instead of) measurements
    predicted: bool = False  # latency comes from `table`, nothing is timed
    teacher_macs: int = 0

    def predict_ratio(self, path: Path) -> tuple[float, int]:
        """(latency ratio to the teacher the table predicts for the ONNX file at `path`, nodes
        it estimated): the nodes ONNX Runtime runs for it under the profile, looked up."""
        from autocompress.evaluation.graph_profile import graph_nodes

        return self.table.predict_ratio(graph_nodes(path, self.profile, self.task.input_shape))

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
    def calibration_tensor(self) -> torch.Tensor:
        """The calibration samples as a tensor (activation statistics for pruning)."""
        return torch.from_numpy(self.calibration)

    @property
    def latency_worker(self) -> LatencyWorker:
        """The process that times candidates against the teacher (started on first use)."""
        if self._latency_worker is None:
            self._latency_worker = CachedLatency(LatencyWorker(self.teacher.onnx_path, self.profile, self.task.input_shape), self.profile)
        return self._latency_worker

    def close(self) -> None:
        if self._latency_worker is not None:
            self._latency_worker.close()
            self._latency_worker = None


@dataclass
class CandidateResult:
    config: CandidateConfig
    val_accuracy: float
    latency: LatencyResult
    size_bytes: int
    onnx_path: Path
    state_dict_path: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    ort_only: bool = False  # the ONNX file uses com.microsoft operators: it needs ONNX Runtime
    rung_results: list[dict[str, Any]] = field(default_factory=list)  # multi-fidelity: the candidate's rungs before the last
    macs: int = 0  # multiply-accumulates of its Conv/Linear layers (the FLOPs proxy)
    predicted: Optional[tuple[float, int]] = None  # (latency ratio the device table predicts, nodes it had to estimate)


def prepare(task: Task, profile: HardwareProfile, workdir: Path, *, latency: Optional[Callable[[Path], Any]] = None,
            accuracy_on_device: bool = False, table=None, predicted: bool = False) -> PipelineContext:
    """Export and measure the teacher once; precompute teacher logits and calibration data.
    The returned context owns a latency worker (`latency(teacher_onnx_path)`, default a
    local LatencyWorker process; anything with measure(path) and close()): close() it.
    accuracy_on_device: val accuracies (the teacher's too) come from the worker's
    accuracy(path), i.e. from the device's node. table: a device latency table whose
    predictions are recorded too; predicted: latency from it only (nothing timed; the
    teacher's milliseconds are the table's)."""
    path = export_onnx(task.teacher, task.input_shape, Path(workdir) / "teacher" / "model.onnx")
    test_acc = onnx_accuracy(path, task.test.x.numpy(), task.test.y.numpy()) if task.test is not None else None
    teacher_macs = model_macs(task.teacher, task.train.x[:2])
    if predicted:
        val_acc = onnx_accuracy(path, task.val.x.numpy(), task.val.y.numpy())
        baseline = TeacherBaseline(path, val_acc, test_acc, model_size_bytes(path), table.teacher_ms)
        return PipelineContext(task=task, profile=profile, teacher=baseline, soft_targets=teacher_logits(task.teacher, task.train.x),
                               calibration=calibration_samples(task).numpy(), table=table, predicted=True, teacher_macs=teacher_macs)
    worker = latency(path) if latency is not None else CachedLatency(LatencyWorker(path, profile, task.input_shape), profile)
    try:
        self_timing = worker.measure(path)
        val_acc = worker.accuracy(path) if accuracy_on_device else onnx_accuracy(path, task.val.x.numpy(), task.val.y.numpy())
    except Exception:
        worker.close()
        raise
    baseline = TeacherBaseline(path, val_acc, test_acc, model_size_bytes(path), self_timing.reference_median_ms)
    return PipelineContext(
        task=task,
        profile=profile,
        teacher=baseline,
        soft_targets=teacher_logits(task.teacher, task.train.x),
        calibration=calibration_samples(task).numpy(),
        _latency_worker=worker,
        accuracy_on_device=accuracy_on_device,
        table=table,
        teacher_macs=teacher_macs,
    )


def calibration_samples(task: Task) -> torch.Tensor:
    """A fixed, seeded draw of training inputs for quantization calibration and
    activation statistics (the same draw every time, so pruning can be replayed)."""
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(task.train), generator=gen)[:CALIBRATION_SAMPLES]
    return task.train.x[idx]


def rebuild_student(task: Task, cfg: CandidateConfig) -> torch.nn.Module:
    """The candidate's float architecture before fine-tuning: the teacher pruned and
    factorized exactly as in the search (both are deterministic given the teacher and the
    calibration draw), ready for its saved state_dict."""
    tctx = TransformContext(example_input=task.train.x[:2], calibration=calibration_samples(task))
    student = apply_transform(task.teacher, cfg.blocks, tctx)
    return apply_transform(apply_transform(student, _prune_cfg(cfg), tctx), cfg.lowrank, tctx)


def export_architecture(task: Task, cfg: CandidateConfig, calibration: np.ndarray, out_dir: Path) -> tuple[torch.nn.Module, Path]:
    """(the candidate's architecture untrained, its file exported and quantized as
    deployed): the graph ONNX Runtime runs, whose latency does not depend on the weights'
    values. BatchNorm statistics are recalibrated as after the search's fine-tune."""
    student = rebuild_student(task, cfg)
    recalibrate_batchnorm_(student, task.train.x)
    path, _ = export_deployable(student, cfg.quantize, task.input_shape, calibration, out_dir)
    return student, path


def _prune_cfg(cfg: CandidateConfig):
    """The prune config with substituted ShuffleNet units excluded: Torch-Pruning 1.6's
    dependency graph fails (IndexError) on their chunk -> cat -> channel-shuffle pattern."""
    from dataclasses import replace

    shuffles = tuple(path for path, name in cfg.blocks.choices if name.startswith("shuffle"))
    return replace(cfg.prune, exclude=cfg.prune.exclude + shuffles) if shuffles and cfg.prune.active else cfg.prune


@contextmanager
def _stage(name: str, seconds: dict[str, float]):
    t0 = time.perf_counter()
    try:
        yield
    except CandidateError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a candidate is recorded, not fatal
        raise CandidateError(f"{name}: {one_line(exc)}") from exc
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0


def build_candidate(cfg: CandidateConfig, ctx: PipelineContext, out_dir: Path, *, seed: int = 0,
                    fidelity: Optional[Fidelity] = None, at_rung: Optional[Callable[[int, float, float], Decision]] = None) -> CandidateResult:
    """Build, export and measure one candidate; artifacts go to `out_dir`.

    With `fidelity` the fine-tune runs rung by rung; after each rung but the last the
    candidate's torch val accuracy and measured latency ratio go to `at_rung(rung, acc,
    ratio)`, and a candidate that is not promoted raises CandidateStopped.

    With `ctx.gate` (concurrent trials on the latency device's cores) the whole build
    holds it, the fine-tune steps aside between steps when a measurement waits, and the
    latency worker's own calls step out of it."""
    with ctx.busy():
        return _build(cfg, ctx, Path(out_dir), seed=seed, fidelity=fidelity, at_rung=at_rung)


def _build(cfg: CandidateConfig, ctx: PipelineContext, out_dir: Path, *, seed: int, fidelity: Optional[Fidelity],
           at_rung: Optional[Callable[[int, float, float], Decision]]) -> CandidateResult:
    task = ctx.task
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    torch.manual_seed(seed)
    tctx = TransformContext(example_input=task.train.x[:2], calibration=ctx.calibration_tensor)
    with _stage("blocks", seconds):
        student = apply_transform(task.teacher, cfg.blocks, tctx)
    if cfg.blocks.active and cfg.blocks.warmup_steps > 0:
        with _stage("warmup", seconds):
            from autocompress.training.warmup import warmup_blocks_

            new = [path for path, name in cfg.blocks.choices if name != "keep"]
            warmup_blocks_(student, task.teacher, new, task.train.x, cfg.blocks.warmup_steps, seed=seed)
    with _stage("prune", seconds):
        student = apply_transform(student, _prune_cfg(cfg), tctx)
        if cfg.prune.active:
            recalibrate_batchnorm_(student, task.train.x)
    with _stage("lowrank", seconds):
        student = apply_transform(student, cfg.lowrank, tctx)
    rungs = fidelity.rungs if fidelity is not None else (cfg.finetune.steps,)
    if rungs[-1] != cfg.finetune.steps:
        raise ValueError(f"the candidate's fine-tune ({cfg.finetune.steps} steps) is not the last rung of {rungs}")
    with _stage("finetune", seconds):
        qat, probe = None, student
        if cfg.finetune.qat and cfg.finetune.steps > 0 and cfg.quantize.active:
            from autocompress.training.qat import enable_qat_, layer_bits

            # BatchNorm keeps training during QAT: freezing it cost accuracy on the demo
            # (experiments/qat_vs_ptq.py); the grid follows the running statistics.
            bits = layer_bits(student, tctx.example_input, cfg.quantize)
            if len(rungs) > 1:  # the rungs' latency probe: the same graph without fake-quant parametrizations
                import copy

                probe = copy.deepcopy(student)
            qat = enable_qat_(student, tctx.example_input, bits, freeze_bn=False)
    rung_results: list[dict[str, Any]] = []
    done = 0
    for rung, steps in enumerate(rungs):
        with _stage("finetune", seconds):  # a rung after the first: a new cosine cycle from where the last ended
            distill_(student, task.train.x, task.train.y, ctx.soft_targets, replace(cfg.finetune, steps=steps - done),
                     cfg.distill or DistillConfig(), seed=seed + 1_000_003 * rung, between_steps=ctx.between_steps)
        done = steps
        if rung < len(rungs) - 1:
            with _stage("rungs", seconds):
                acc, ratio = _rung_metrics(student, probe, cfg, ctx, out_dir / f"rung{rung}")
            decision = at_rung(rung, acc, ratio)  # type: ignore[misc]
            rung_results.append({"rung": rung, "steps": steps, "val_accuracy": acc, "latency_ratio": ratio, "promoted": decision.promote,
                                 "place": decision.position + 1, "of": decision.n})
            if not decision.promote:
                raise CandidateStopped(decision.reason, rung_results)
    with _stage("finetune", seconds):
        if qat is not None:
            qat.bake_()  # weights now lie on the grid the quantizer will use
        state_path = out_dir / "model.pt"
        torch.save(student.state_dict(), state_path)
    final, ort_only = export_deployable(student, cfg.quantize, task.input_shape, ctx.calibration, out_dir,
                                        stage=lambda name: _stage(name, seconds))
    with _stage("accuracy", seconds):
        val_acc = ctx.latency_worker.accuracy(final) if ctx.accuracy_on_device else onnx_accuracy(final, task.val.x.numpy(), task.val.y.numpy())
    with _stage("latency", seconds):
        predicted = ctx.predict_ratio(final) if ctx.table is not None else None
        latency = ctx.predicted_latency(predicted[0]) if ctx.predicted else ctx.latency_worker.measure(final)
    macs = sum(l.macs for l in layer_configs(student, tctx.example_input, cfg.quantize))
    return CandidateResult(cfg, val_acc, latency, model_size_bytes(final), final, state_path, seconds, ort_only, rung_results,
                           macs=macs, predicted=predicted)


def export_deployable(model: torch.nn.Module, quantize, input_shape: tuple[int, ...], calibration: np.ndarray, out_dir: Path, *,
                      stage: Callable[[str], Any] = lambda name: nullcontext()) -> tuple[Path, bool]:
    """`model` as deployed: out_dir/model.onnx, exported and, when `quantize` is active,
    quantized (the float file removed). (path, ort_only). `stage(name)` wraps the
    'export' and 'quantize' steps (the pipeline times them)."""
    final = Path(out_dir) / "model.onnx"
    with stage("export"):
        fp32 = export_onnx(model, input_shape, final.with_name("model.fp32.onnx") if quantize.active else final)
    if not quantize.active:
        return final, False
    with stage("quantize"):
        ort_only = quantize_onnx(fp32, final, calibration, quantize).ort_only
        os.remove(fp32)
    return final, ort_only


def _rung_metrics(student: torch.nn.Module, probe: torch.nn.Module, cfg: CandidateConfig, ctx: PipelineContext,
                  probe_dir: Path) -> tuple[float, float]:
    """(torch val accuracy of the fine-tuning model, latency ratio of `probe` exported and
    quantized as the candidate will be) at a rung. `probe` has the candidate's graph: the
    student itself, or with QAT a copy taken before the fake-quant parametrizations (a
    deepcopy of a parametrized module shares its class, so baking a copy would break the
    original). The latency depends on the graph, not on the weights' values; the probe
    files are removed."""
    import shutil

    acc = torch_accuracy(student, ctx.task.val.x, ctx.task.val.y)
    try:
        onnx, _ = export_deployable(probe, cfg.quantize, ctx.task.input_shape, ctx.calibration, probe_dir)
        ratio = ctx.predict_ratio(onnx)[0] if ctx.predicted else ctx.latency_worker.measure(onnx).ratio
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    return acc, ratio


@torch.no_grad()
def torch_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch: int = 512) -> float:
    """Top-1 accuracy of a torch model in eval mode (left in eval mode)."""
    model.eval()
    hits = sum(int((model(x[i : i + batch]).argmax(dim=1) == y[i : i + batch]).sum()) for i in range(0, len(y), batch))
    return hits / max(1, len(y))
