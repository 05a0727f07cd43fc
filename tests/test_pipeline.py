"""The candidate pipeline on the tiny user task: prepare() once, then build candidates."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch

from autocompress.config import CandidateConfig, DistillConfig, FinetuneConfig, PruneConfig, QuantizeConfig
from autocompress.errors import CandidateError
from autocompress.evaluation import onnx_accuracy
from autocompress.export import model_size_bytes
from autocompress.pipeline import CALIBRATION_SAMPLES, build_candidate, prepare
from autocompress.tasks.user import user_task
from tests.helpers import TINY_DATA_SPEC, TINY_MODEL_SPEC, assert_state_equal, state_snapshot

KD_INT8 = CandidateConfig(
    prune=PruneConfig(0.5),
    finetune=FinetuneConfig(steps=10, lr=1e-3, batch_size=32),
    distill=DistillConfig(alpha=0.5, temperature=4.0),
    quantize=QuantizeConfig("int8", "uint8", "qoperator"),
)


def test_prepare_measures_the_teacher(prepared, tiny_task):
    t = prepared.teacher
    assert t.onnx_path.is_file()
    with torch.no_grad():
        torch_val = (tiny_task.teacher(tiny_task.val.x).argmax(1) == tiny_task.val.y).float().mean().item()
    assert abs(t.val_metric - torch_val) <= 0.005
    assert t.val_metric > 0.8  # the fixture's teacher really learned its task
    assert t.test_metric == onnx_accuracy(t.onnx_path, tiny_task.test.x.numpy(), tiny_task.test.y.numpy())
    assert t.size_bytes == model_size_bytes(t.onnx_path) == t.onnx_path.stat().st_size
    assert t.latency_ms > 0
    with torch.no_grad():
        torch.testing.assert_close(prepared.soft_targets, tiny_task.teacher(tiny_task.train.x))
    assert prepared.calibration.shape == (min(CALIBRATION_SAMPLES, len(tiny_task.train)), *tiny_task.input_shape)
    assert prepared.calibration.dtype == torch.float32
    train_rows = {row.tobytes() for row in tiny_task.train.x.numpy()}
    assert all(row.tobytes() in train_rows for row in prepared.calibration.numpy())


def test_prepare_without_a_test_split(tiny_task, fast_profile, tmp_path):
    task = dataclasses.replace(tiny_task, test=None)
    ctx = prepare(task, fast_profile, tmp_path)
    assert ctx.teacher.test_metric is None


def test_building_a_candidate_leaves_the_teacher_untouched(fast_profile, tmp_path):
    task = user_task(TINY_MODEL_SPEC, TINY_DATA_SPEC)  # a private teacher: this test may not share one
    ctx = prepare(task, fast_profile, tmp_path / "run")
    teacher = task.teacher
    snapshot = state_snapshot(teacher)
    modules = {name: id(m) for name, m in teacher.named_modules()}
    params = {name: (id(p), p.data_ptr(), p.requires_grad) for name, p in teacher.named_parameters()}
    grads = {name: None if p.grad is None else p.grad.clone() for name, p in teacher.named_parameters()}
    with torch.no_grad():
        logits = teacher(task.val.x)

    res = build_candidate(KD_INT8, ctx, tmp_path / "run" / "trials" / "0")
    assert res.onnx_path.is_file()

    assert ctx.task.teacher is teacher
    assert_state_equal(teacher, snapshot)
    assert {name: id(m) for name, m in teacher.named_modules()} == modules
    assert {name: (id(p), p.data_ptr(), p.requires_grad) for name, p in teacher.named_parameters()} == params
    assert not teacher.training
    for name, p in teacher.named_parameters():  # the user's leftover grads, not ours
        assert (p.grad is None) == (grads[name] is None) and (p.grad is None or torch.equal(p.grad, grads[name])), name
    with torch.no_grad():
        assert torch.equal(teacher(task.val.x), logits)
    # the latency reference on disk is unchanged too
    assert onnx_accuracy(ctx.teacher.onnx_path, task.val.x.numpy(), task.val.y.numpy()) == ctx.teacher.val_metric


def test_int8_candidate_artifacts_and_metrics(prepared, tiny_task, tmp_path):
    res = build_candidate(KD_INT8, prepared, tmp_path / "c")
    assert res.config == KD_INT8
    assert res.onnx_path == tmp_path / "c" / "model.onnx" and res.onnx_path.is_file()
    assert not (tmp_path / "c" / "model.fp32.onnx").exists()  # the intermediate is removed
    assert "QLinearConv" in {n.op_type for n in onnx.load(str(res.onnx_path)).graph.node}
    assert res.val_metric == onnx_accuracy(res.onnx_path, tiny_task.val.x.numpy(), tiny_task.val.y.numpy())
    assert res.size_bytes == model_size_bytes(res.onnx_path)
    assert res.size_bytes < prepared.teacher.size_bytes
    assert res.latency.passes == prepared.profile.passes and res.latency.ratio > 0
    assert set(res.stage_seconds) == {"blocks", "heads", "mlp", "layers", "prune", "lowrank", "finetune", "export", "quantize", "accuracy",
                                      "latency"}
    # the saved state_dict is the pruned, fine-tuned student
    state = torch.load(res.state_dict_path, weights_only=True)
    assert state["stem.0.weight"].shape[0] < tiny_task.teacher.stem[0].weight.shape[0]


def test_identity_candidate_reproduces_the_teacher(prepared, tmp_path):
    res = build_candidate(CandidateConfig(), prepared, tmp_path / "id")
    assert res.val_metric == prepared.teacher.val_metric
    assert res.size_bytes == prepared.teacher.size_bytes
    assert 0.2 < res.latency.ratio < 5.0  # the same model; loose because the timing is short
    assert "quantize" not in res.stage_seconds


def test_candidates_are_deterministic_for_a_seed(prepared, tmp_path):
    cfg = KD_INT8.replace(quantize=QuantizeConfig())
    a = build_candidate(cfg, prepared, tmp_path / "a", seed=5)
    b = build_candidate(cfg, prepared, tmp_path / "b", seed=5)
    assert a.val_metric == b.val_metric
    sa, sb = torch.load(a.state_dict_path, weights_only=True), torch.load(b.state_dict_path, weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_failing_stage_becomes_a_candidate_error_naming_it(prepared, tmp_path):
    broken = dataclasses.replace(prepared, calibration=torch.zeros((4, 2, 2, 2)))
    with pytest.raises(CandidateError, match=r"^quantize: "):
        build_candidate(CandidateConfig(quantize=QuantizeConfig("int8", "uint8", "qoperator")), broken, tmp_path / "q")
    with pytest.raises(CandidateError, match=r"^finetune: "):
        bad_targets = dataclasses.replace(prepared, soft_targets=prepared.soft_targets[:, :2])
        build_candidate(KD_INT8, bad_targets, tmp_path / "f")


def test_qat_candidate_builds_and_its_weights_reload(prepared, tiny_task, tmp_path):
    from autocompress.config import CandidateConfig, DistillConfig, FinetuneConfig, PruneConfig, QuantizeConfig
    from autocompress.pipeline import rebuild_student

    cfg = CandidateConfig(
        prune=PruneConfig(0.25),
        finetune=FinetuneConfig(steps=10, lr=1e-3, batch_size=32, qat=True),
        distill=DistillConfig(0.5, 4.0),
        quantize=QuantizeConfig("int8", "uint8", "qdq", "minmax", ("int8", "int4")),
    )
    res = build_candidate(cfg, prepared, tmp_path / "qat", seed=0)
    assert res.onnx_path.is_file() and 0.0 <= res.val_metric <= 1.0 and res.ort_only  # int4: com.microsoft Q/DQ
    model = rebuild_student(tiny_task, cfg)
    model.load_state_dict(torch.load(res.state_dict_path, weights_only=True))
    assert model(tiny_task.val.x[:4]).shape == (4, tiny_task.num_classes)


def test_block_warmup_runs_as_its_own_stage_and_the_weights_reload(prepared, tiny_task, tmp_path):
    from autocompress.config import BlockConfig
    from autocompress.pipeline import rebuild_student

    blocks = BlockConfig((("block1", "mbconv_e3_k3"), ("block2", "shuffle_v2")), warmup_steps=20)
    cfg = KD_INT8.replace(prune=PruneConfig(0.25), blocks=blocks)
    assert "warm-up 20" in cfg.describe()
    assert CandidateConfig.from_dict(cfg.to_dict()) == cfg and cfg.id != cfg.replace(blocks=BlockConfig(blocks.choices)).id
    res = build_candidate(cfg, prepared, tmp_path / "w", seed=0)
    assert "warmup" in res.stage_seconds and res.stage_seconds["warmup"] > 0
    model = rebuild_student(tiny_task, cfg)
    model.load_state_dict(torch.load(res.state_dict_path, weights_only=True))
    assert model(tiny_task.val.x[:4]).shape == (4, tiny_task.num_classes)
    no_warmup = build_candidate(cfg.replace(blocks=BlockConfig(blocks.choices)), prepared, tmp_path / "n", seed=0)
    assert "warmup" not in no_warmup.stage_seconds


def _rung_recorder(promote: bool):
    from autocompress.fidelity import Decision

    calls = []

    def at_rung(rung, acc, ratio):
        calls.append((rung, acc, ratio))
        return Decision(promote, 0 if promote else 1, 2, 1, "promoted" if promote else "stopped at rung 0: place 2 of 2")

    return calls, at_rung


def test_a_candidate_not_promoted_at_a_rung_stops_with_its_rung_results(prepared, tmp_path):
    from autocompress.fidelity import Fidelity
    from autocompress.errors import CandidateStopped

    calls, at_rung = _rung_recorder(False)
    with pytest.raises(CandidateStopped) as stop:
        build_candidate(KD_INT8, prepared, tmp_path / "s", fidelity=Fidelity((4, 10)), at_rung=at_rung)
    (rung, acc, ratio), = calls
    assert rung == 0 and 0.0 <= acc <= 1.0 and 0.0 < ratio < 5.0
    assert stop.value.reason == "stopped at rung 0: place 2 of 2"
    assert stop.value.rung_results == [{"rung": 0, "steps": 4, "val_metric": acc, "score": acc, "latency_ratio": ratio, "promoted": False,
                                        "place": 2, "of": 2}]
    assert not (tmp_path / "s" / "model.onnx").exists() and not (tmp_path / "s" / "rung0").exists()  # no probe left behind


def test_a_promoted_candidate_finishes_the_full_pipeline(prepared, tmp_path):
    from autocompress.fidelity import Fidelity

    import onnx

    measured = []  # the op types of every graph the latency worker was given
    worker = prepared.latency_worker
    real_measure = worker.measure

    def recording_measure(path, *args, **kwargs):
        measured.append(sorted(node.op_type for node in onnx.load(str(path)).graph.node))
        return real_measure(path, *args, **kwargs)

    worker.measure = recording_measure
    try:
        calls, at_rung = _rung_recorder(True)
        res = build_candidate(KD_INT8, prepared, tmp_path / "p", fidelity=Fidelity((4, 10)), at_rung=at_rung)
    finally:
        del worker.measure
    assert len(calls) == 1 and res.onnx_path.is_file() and 0.0 <= res.val_metric <= 1.0
    assert res.rung_results[0]["promoted"] is True and res.rung_results[0]["steps"] == 4
    assert res.stage_seconds["rungs"] > 0 and res.stage_seconds["finetune"] > 0
    assert calls[0][2] > 0 and res.latency.ratio > 0
    # the rung's latency probe had the candidate's graph: the same quantized ops as the final file
    # (compared by structure, not by the two timings: on a 0.02 ms model they differ by noise)
    final_ops = sorted(node.op_type for node in onnx.load(str(res.onnx_path)).graph.node)
    assert len(measured) == 2 and measured[0] == measured[1] == final_ops
    assert any(op.startswith(("QLinear", "QuantizeLinear", "ConvInteger", "MatMulInteger")) for op in final_ops)


def test_rungs_must_end_at_the_candidates_fine_tune(prepared, tmp_path):
    from autocompress.fidelity import Fidelity

    with pytest.raises(ValueError, match="not the last rung"):
        build_candidate(KD_INT8, prepared, tmp_path / "x", fidelity=Fidelity((4, 20)), at_rung=_rung_recorder(True)[1])


def test_qat_with_rungs_builds_and_its_weights_reload(prepared, tiny_task, tmp_path):
    # the rung probe must not be a deepcopy of the parametrized student: baking one breaks the other
    from autocompress.fidelity import Fidelity
    from autocompress.pipeline import rebuild_student

    cfg = KD_INT8.replace(prune=PruneConfig(0.25), finetune=FinetuneConfig(steps=10, lr=1e-3, batch_size=32, qat=True),
                              quantize=QuantizeConfig("int8", "int8", "qdq", "minmax"))
    res = build_candidate(cfg, prepared, tmp_path / "q", fidelity=Fidelity((4, 10)), at_rung=_rung_recorder(True)[1])
    model = rebuild_student(tiny_task, cfg)
    model.load_state_dict(torch.load(res.state_dict_path, weights_only=True))
    assert model(tiny_task.val.x[:4]).shape == (4, tiny_task.num_classes)


def test_stage_names_follow_the_registry_in_pipeline_order():
    from autocompress.pipeline import stage_names

    assert stage_names() == ("blocks", "warmup", "heads", "mlp", "layers", "prune", "lowrank", "finetune", "rungs", "export", "fuse", "quantize",
                             "matmul", "accuracy", "latency")


def test_candidates_differing_only_after_the_export_share_one_fine_tune(prepared, tmp_path):
    """The second candidate (same pruning and fine-tune, int8 instead of fp32) loads the
    first one's fine-tuned float model from the cache: the same weights as building it
    from scratch with the same seed, and no training."""
    from autocompress.pipeline import FloatCache, build_seed

    fp32 = KD_INT8.replace(quantize=QuantizeConfig())
    assert fp32.float_id == KD_INT8.float_id and fp32.id != KD_INT8.id
    assert build_seed(0, fp32) == build_seed(0, KD_INT8) != build_seed(1, KD_INT8)
    cached = dataclasses.replace(prepared, float_cache=FloatCache(tmp_path / "cache"))
    seed = build_seed(0, fp32)
    first = build_candidate(fp32, cached, tmp_path / "run" / "trials" / "3", seed=seed)
    second = build_candidate(KD_INT8, cached, tmp_path / "run" / "trials" / "4", seed=seed)
    assert first.reused_from is None and second.reused_from == 3
    assert "prune" not in second.stage_seconds  # nothing was pruned or trained again
    fresh = build_candidate(KD_INT8, prepared, tmp_path / "fresh", seed=seed)  # no cache: built and fine-tuned
    assert fresh.reused_from is None
    got, want = torch.load(second.state_dict_path, weights_only=True), torch.load(fresh.state_dict_path, weights_only=True)
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert second.val_metric == fresh.val_metric
    # another seed is another fine-tune: not shared
    other = build_candidate(KD_INT8, cached, tmp_path / "run" / "trials" / "5", seed=seed + 1)
    assert other.reused_from is None


def test_a_qat_candidate_neither_takes_nor_leaves_a_float_model(prepared, tmp_path):
    from autocompress.pipeline import FloatCache

    cache = FloatCache(tmp_path / "cache")
    cached = dataclasses.replace(prepared, float_cache=cache)
    qat = KD_INT8.replace(finetune=FinetuneConfig(steps=10, lr=1e-3, batch_size=32, qat=True))
    build_candidate(KD_INT8.replace(quantize=QuantizeConfig()), cached, tmp_path / "trials" / "0")
    res = build_candidate(qat, cached, tmp_path / "trials" / "1")
    assert res.reused_from is None and len(list(cache.root.glob("*.pt"))) == 1


def test_the_float_cache_keeps_its_newest_entries(tmp_path):
    import os
    import time

    from autocompress.pipeline import FloatCache

    cache = FloatCache(tmp_path, keep=2)
    model = torch.nn.Linear(2, 2)
    for i, key in enumerate("abc"):
        cache.put(key, model, {"trial": i, "steps_run": 5})
        t = time.time() - 100 + i
        os.utime(tmp_path / f"{key}.json", (t, t))
    assert cache.get("a") is None and sorted(f.stem for f in tmp_path.glob("*.pt")) == ["b", "c"]
    state, info = cache.get("c")
    assert info == {"trial": 2, "steps_run": 5} and torch.equal(state["weight"], model.weight.detach())


def test_on_stage_hears_each_stage_as_it_starts_and_the_failing_one_last(prepared, tmp_path):
    heard: list[str] = []
    res = build_candidate(KD_INT8, prepared, tmp_path / "a", on_stage=heard.append)
    assert set(res.stage_seconds) <= set(heard)  # every timed stage was announced
    order = [s for i, s in enumerate(heard) if s in ("prune", "finetune", "export", "quantize", "accuracy", "latency") and s not in heard[:i]]
    assert order == ["prune", "finetune", "export", "quantize", "accuracy", "latency"]
    heard.clear()
    broken = dataclasses.replace(prepared, calibration=torch.zeros((4, 2, 2, 2)))
    with pytest.raises(CandidateError, match=r"^quantize: "):
        build_candidate(CandidateConfig(quantize=QuantizeConfig("int8", "uint8", "qoperator")), broken, tmp_path / "q", on_stage=heard.append)
    assert heard[-1] == "quantize"
