"""ONNX export and int8 quantization, checked with real ONNX Runtime sessions."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from autocompress.config import PruneConfig
from autocompress.evaluation import onnx_accuracy
from autocompress.export import export_onnx, model_size_bytes, quantize_int8
from autocompress.export.onnx import INPUT_NAME, OUTPUT_NAME
from autocompress.techniques import apply
from autocompress.transforms import TransformContext


def _torch_accuracy(model, split) -> float:
    with torch.no_grad():
        return (model.eval()(split.x).argmax(1) == split.y).float().mean().item()


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def teacher_onnx(tiny_task, tmp_path_factory):
    return export_onnx(tiny_task.teacher, tiny_task.input_shape, tmp_path_factory.mktemp("export") / "teacher.onnx")


def test_fp32_export_matches_torch(tiny_task, teacher_onnx):
    assert teacher_onnx.is_file()
    for split in (tiny_task.val, tiny_task.test):
        torch_acc = _torch_accuracy(tiny_task.teacher, split)
        onnx_acc = onnx_accuracy(teacher_onnx, split.x.numpy(), split.y.numpy())
        assert abs(onnx_acc - torch_acc) <= 0.005
    with torch.no_grad():
        ref = tiny_task.teacher(tiny_task.val.x).numpy()
    out = _session(teacher_onnx).run(None, {INPUT_NAME: tiny_task.val.x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_export_has_a_dynamic_batch_axis_and_folds_batchnorm(tiny_task, teacher_onnx):
    sess = _session(teacher_onnx)
    assert [i.name for i in sess.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in sess.get_outputs()] == [OUTPUT_NAME]
    for n in (1, 7):
        out = sess.run(None, {INPUT_NAME: tiny_task.val.x[:n].numpy()})[0]
        assert out.shape == (n, tiny_task.num_classes)
    ops = {node.op_type for node in onnx.load(str(teacher_onnx)).graph.node}
    assert "Conv" in ops and "BatchNormalization" not in ops


def test_export_restores_training_mode_and_writes_parents(tiny_module, tmp_path):
    model = tiny_module.TinyResNet().train()
    path = export_onnx(model, (3, 8, 8), tmp_path / "a" / "b" / "m.onnx")
    assert path.is_file() and model.training


def test_pruned_model_exports_smaller_and_consistent(tiny_task, teacher_onnx, tmp_path):
    pruned = apply(tiny_task.teacher, PruneConfig(0.5), TransformContext(example_input=tiny_task.train.x[:2]))
    path = export_onnx(pruned, tiny_task.input_shape, tmp_path / "pruned.onnx")
    assert model_size_bytes(path) < 0.6 * model_size_bytes(teacher_onnx)
    acc = onnx_accuracy(path, tiny_task.val.x.numpy(), tiny_task.val.y.numpy())
    assert abs(acc - _torch_accuracy(pruned, tiny_task.val)) <= 0.005


@pytest.mark.parametrize("activations", ["uint8", "int8"])
@pytest.mark.parametrize("fmt", ["qoperator", "qdq"])
def test_int8_quantization_gives_a_runnable_smaller_model(tiny_task, teacher_onnx, tmp_path, activations, fmt):
    calibration = tiny_task.train.x[:64].numpy()
    out = quantize_int8(teacher_onnx, tmp_path / "q" / "model.onnx", calibration, activations=activations, fmt=fmt)
    assert out.is_file()
    assert model_size_bytes(out) < model_size_bytes(teacher_onnx)

    logits = _session(out).run(None, {INPUT_NAME: tiny_task.val.x.numpy()})[0]
    assert logits.shape == (len(tiny_task.val), tiny_task.num_classes) and np.isfinite(logits).all()
    fp32_acc = onnx_accuracy(teacher_onnx, tiny_task.val.x.numpy(), tiny_task.val.y.numpy())
    assert onnx_accuracy(out, tiny_task.val.x.numpy(), tiny_task.val.y.numpy()) >= fp32_acc - 0.05

    graph = onnx.load(str(out)).graph
    ops = {n.op_type for n in graph.node}
    if fmt == "qoperator":
        assert "QLinearConv" in ops
    else:
        assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and "QLinearConv" not in ops
    inits = {i.name: i for i in graph.initializer}
    zero_points = {inits[n.input[2]].data_type for n in graph.node if n.op_type == "QuantizeLinear" and n.input[2] in inits}
    expected = onnx.TensorProto.UINT8 if activations == "uint8" else onnx.TensorProto.INT8
    assert zero_points == {expected}


def test_quantize_rejects_bad_options(teacher_onnx, tmp_path):
    x = np.zeros((4, 3, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="activations"):
        quantize_int8(teacher_onnx, tmp_path / "q.onnx", x, activations="int4")
    with pytest.raises(ValueError, match="fmt"):
        quantize_int8(teacher_onnx, tmp_path / "q.onnx", x, fmt="qat")


def test_model_size_of_a_self_contained_file(teacher_onnx):
    assert model_size_bytes(teacher_onnx) == teacher_onnx.stat().st_size


def test_model_size_counts_external_data(tiny_task, teacher_onnx, tmp_path):
    model = onnx.load(str(teacher_onnx))
    one = tmp_path / "one" / "model.onnx"
    one.parent.mkdir()
    onnx.save_model(model, str(one), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    weights = one.parent / "weights.bin"
    assert weights.stat().st_size > one.stat().st_size  # the weights really moved out
    assert model_size_bytes(one) == one.stat().st_size + weights.stat().st_size

    many = tmp_path / "many" / "model.onnx"
    many.parent.mkdir()
    onnx.save_model(onnx.load(str(teacher_onnx)), str(many), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    total = sum(p.stat().st_size for p in many.parent.iterdir())
    assert len(list(many.parent.iterdir())) > 2
    assert model_size_bytes(many) == total

    # and the external-data model is still the same model
    a = onnx_accuracy(one, tiny_task.val.x.numpy(), tiny_task.val.y.numpy())
    assert a == onnx_accuracy(teacher_onnx, tiny_task.val.x.numpy(), tiny_task.val.y.numpy())


def test_equal_folded_biases_are_not_aliased_and_qoperator_quantization_works(tmp_path):
    """Fresh BatchNorms fold to equal biases, which the exporter would share through
    Identity nodes; ORT's QOperator quantizer needs each conv's bias as an initializer."""
    import numpy as np
    import onnx
    import torch
    from torch import nn

    from autocompress.config import QuantizeConfig
    from autocompress.export import export_onnx, quantize_onnx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, bias=False),
                          nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    path = export_onnx(model, (3, 8, 8), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    inits = {t.name for t in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert len(convs) == 3 and all(n.input[2] in inits for n in convs)
    assert not any(n.op_type == "Identity" for n in proto.graph.node)
    calib = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    report = quantize_onnx(path, tmp_path / "q.onnx", calib, QuantizeConfig("int8", "uint8", "qoperator", "minmax", ("fp32", "int8", "fp32")))
    assert report.path.is_file()


def test_torch_s_own_transformer_encoder_exports_and_matches(tmp_path):
    """nn.TransformerEncoder in eval mode takes a fused fast path that has no ONNX export; the
    export writes its attention in the split form (the same outputs), the model is untouched."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    model = torch.nn.Sequential(torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), torch.nn.Flatten(), torch.nn.Linear(5 * 16, 3)).eval()
    x = torch.randn(4, 5, 16)
    path = export_onnx(model, x[:2], tmp_path / "m.onnx")
    assert isinstance(model[0].layers[0].self_attn, torch.nn.MultiheadAttention)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0], want, rtol=1e-4, atol=1e-5)
