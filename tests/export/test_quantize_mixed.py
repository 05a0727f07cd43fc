"""quantize_onnx: per-segment weight bit widths (fp32 / int8 / int4), formats and
calibration methods, checked on the produced graphs and with real ONNX Runtime sessions."""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

from autocompress.config import QuantizeConfig
from autocompress.export import (
    export_onnx,
    model_size_bytes,
    quantizable_nodes,
    quantize_int8,
    quantize_onnx,
)
from autocompress.export.onnx import INPUT_NAME
from autocompress.segments import split_contiguous

INPUT_SHAPE = (1, 16, 16)


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return export_onnx(_cnn(), INPUT_SHAPE, tmp_path_factory.mktemp("mixed") / "fp32.onnx")


@pytest.fixture(scope="module")
def calib():
    return np.random.default_rng(0).standard_normal((128, *INPUT_SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(1).standard_normal((256, *INPUT_SHAPE)).astype(np.float32)


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: x})[0]


def _argmax_agreement(path, fp32, x) -> float:
    out, ref = _run(path, x), _run(fp32, x)
    assert out.shape == ref.shape and np.isfinite(out).all()
    return float((out.argmax(1) == ref.argmax(1)).mean())


def _weights(fp32_path) -> dict[str, str]:
    """Quantizable node name -> its weight initializer name, in the fp32 graph."""
    graph = onnx.load(str(fp32_path)).graph
    return {n.name: n.input[1] for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}


def _initializer_types(path) -> dict[str, int]:
    return {t.name: t.data_type for t in onnx.load(str(path)).graph.initializer}


def _uses_ms_domain(path) -> bool:
    return any(n.domain == "com.microsoft" for n in onnx.load(str(path)).graph.node)


def test_quantizable_nodes_in_graph_order(fp32):
    graph = onnx.load(str(fp32)).graph
    names = quantizable_nodes(fp32)
    assert [next(n.op_type for n in graph.node if n.name == name) for name in names] == ["Conv", "Conv", "Conv", "Gemm"]
    order = [n.name for n in graph.node]
    assert [order.index(n) for n in names] == sorted(order.index(n) for n in names)


@pytest.mark.parametrize("fmt", ["qoperator", "qdq"])
def test_all_int8_matches_quantize_int8(fp32, calib, tmp_path, fmt):
    ref = quantize_int8(fp32, tmp_path / "ref.onnx", calib, activations="uint8", fmt=fmt)
    report = quantize_onnx(fp32, tmp_path / "q.onnx", calib, QuantizeConfig(mode="int8", activations="uint8", format=fmt))
    assert report.path == tmp_path / "q.onnx"
    assert report.node_bits == {name: "int8" for name in quantizable_nodes(fp32)}
    assert report.opset == 17
    assert report.ort_only == _uses_ms_domain(report.path)

    def node_set(path):
        return sorted((n.name, n.op_type, n.domain) for n in onnx.load(str(path)).graph.node)

    assert node_set(report.path) == node_set(ref)
    assert _initializer_types(report.path) == _initializer_types(ref)
    assert abs(model_size_bytes(report.path) - model_size_bytes(ref)) <= 0.02 * model_size_bytes(ref)


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_fp32_segment_stays_float(fp32, calib, inputs, tmp_path, fmt):
    cfg = QuantizeConfig(mode="int8", activations="uint8", format=fmt, segment_bits=("fp32", "int8"))
    report = quantize_onnx(fp32, tmp_path / "q.onnx", calib, cfg)
    names = quantizable_nodes(fp32)
    first, second = split_contiguous(names, 2)
    assert report.node_bits == {**{n: "fp32" for n in first}, **{n: "int8" for n in second}}

    graph = onnx.load(str(report.path)).graph
    by_name = {n.name: n for n in graph.node}
    types = {t.name: t.data_type for t in graph.initializer}
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    weights = _weights(fp32)
    for name in first:  # untouched float nodes with float weights and no dequantized input
        node = by_name[name]
        assert node.op_type in ("Conv", "Gemm")
        assert types[weights[name]] == TensorProto.FLOAT
        assert not set(node.input) & dq_outputs
        assert f"{weights[name]}_quantized" not in types
    for name in second:
        assert types[f"{weights[name]}_quantized"] == TensorProto.INT8
        if fmt == "qdq":
            assert by_name[name].input[1] in dq_outputs
        else:
            assert by_name[f"{name}_quant"].op_type in ("QLinearConv", "QGemm")
    assert _argmax_agreement(report.path, fp32, inputs) >= 0.9


class _Residual(nn.Module):
    """conv -> relu -> maxpool -> (x + conv) -> relu -> conv -> mean -> linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.c3 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.relu(x + self.c2(x))
        return self.fc(torch.relu(self.c3(x)).mean((2, 3)))


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_fp32_segment_keeps_its_other_ops_float(calib, inputs, tmp_path, fmt):
    """MaxPool, the residual Add and the ReLUs between fp32 layers are not quantized
    either (ORT alone would turn the Add into QLinearAdd / wrap it in Q/DQ)."""
    fp32 = export_onnx(_Residual(), INPUT_SHAPE, tmp_path / "res.onnx")
    fp32_graph = onnx.load(str(fp32)).graph
    names = [n.name for n in fp32_graph.node]
    c3 = next(n for n in fp32_graph.node if n.name == quantizable_nodes(fp32)[2])
    region = fp32_graph.node[: names.index(c3.name)]  # c1 ... the ReLU after the Add
    assert {"MaxPool", "Add"} <= {n.op_type for n in region}

    cfg = QuantizeConfig(mode="int8", activations="uint8", format=fmt, segment_bits=("fp32", "int8"))
    report = quantize_onnx(fp32, tmp_path / "q.onnx", calib, cfg)
    assert list(report.node_bits.values()) == ["fp32", "fp32", "int8", "int8"]
    graph = onnx.load(str(report.path)).graph
    kept = {(n.name, n.op_type) for n in graph.node}
    assert {(n.name, n.op_type) for n in region} <= kept
    region_tensors = {o for n in region for o in n.output}
    quant_ops = [n for n in graph.node if n.op_type not in {m.op_type for m in region}]
    touched = {i for n in quant_ops for i in n.input} & region_tensors
    assert touched == {c3.input[0]}  # only the input of the first int8 layer is quantized
    assert _argmax_agreement(report.path, fp32, inputs) >= 0.9


def test_int4_segment_writes_4bit_weights_and_runs(fp32, calib, inputs, tmp_path):
    cfg = QuantizeConfig(mode="int8", activations="uint8", format="qdq", segment_bits=("int8", "int4"))
    report = quantize_onnx(fp32, tmp_path / "q.onnx", calib, cfg)
    first, second = split_contiguous(quantizable_nodes(fp32), 2)
    assert report.node_bits == {**{n: "int8" for n in first}, **{n: "int4" for n in second}}

    types = _initializer_types(report.path)
    weights = _weights(fp32)
    for name in first:
        assert types[f"{weights[name]}_quantized"] == TensorProto.INT8
    for name in second:
        assert types[f"{weights[name]}_quantized"] in (TensorProto.INT4, TensorProto.UINT4)

    # Opset 17 has no 4-bit Q/DQ: ORT moves them to its own domain and stays at opset 17.
    model = onnx.load(str(report.path))
    qdq_domains = {n.domain for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    assert qdq_domains == {"com.microsoft"}
    assert {o.domain for o in model.opset_import} >= {"", "com.microsoft"}
    assert report.ort_only is True and report.ort_only == _uses_ms_domain(report.path)
    assert report.opset == 17

    assert _argmax_agreement(report.path, fp32, inputs) >= 0.8
    out, ref = _run(report.path, inputs), _run(fp32, inputs)
    assert np.abs(out - ref).max() <= 0.2 * np.abs(ref).max()


class _Tokens(nn.Module):
    """Rows of the image as tokens: Linear on 3-D input (MatMul with a weight), a
    token-token product (MatMul of two activations), then a classifier (Gemm)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(16, 8)
        self.fc = nn.Linear(16 * 8, 10)

    def forward(self, x):
        h = self.proj(x.flatten(1, 2))  # (B, 16, 8)
        a = torch.softmax(h @ h.transpose(1, 2), dim=-1)
        return self.fc((a @ h).flatten(1))


def test_int4_matmul_weights_and_activation_matmuls(calib, inputs, tmp_path):
    fp32 = export_onnx(_Tokens(), INPUT_SHAPE, tmp_path / "tokens.onnx")
    graph = onnx.load(str(fp32)).graph
    inits = {t.name for t in graph.initializer}
    ops = {n.name: n for n in graph.node}
    names = quantizable_nodes(fp32)
    with_weight = [n for n in names if ops[n].input[1] in inits]
    without = [n for n in names if ops[n].input[1] not in inits]
    assert any(ops[n].op_type == "MatMul" for n in with_weight) and without

    report = quantize_onnx(fp32, tmp_path / "q.onnx", calib, QuantizeConfig(mode="int4"))
    assert report.node_bits == {n: ("int4" if n in with_weight else "int8") for n in names}
    types = _initializer_types(report.path)
    for n in with_weight:
        assert types[f"{ops[n].input[1]}_quantized"] == TensorProto.INT4
    matmul = next(n for n in with_weight if ops[n].op_type == "MatMul")
    scale = numpy_helper.to_array(next(t for t in onnx.load(str(report.path)).graph.initializer
                                       if t.name == f"{ops[matmul].input[1]}_scale"))
    assert scale.shape == (8,)  # per output channel (MatMul weight: [16 in, 8 out])
    assert _argmax_agreement(report.path, fp32, inputs) >= 0.8


def test_int4_file_is_smaller_than_int8(fp32, calib, inputs, tmp_path):
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", calib, QuantizeConfig(mode="int8", format="qdq"))
    int4 = quantize_onnx(fp32, tmp_path / "int4.onnx", calib, QuantizeConfig(mode="int4"))  # format None -> qdq
    assert set(int4.node_bits.values()) == {"int4"}
    assert model_size_bytes(int4.path) < model_size_bytes(int8.path) < model_size_bytes(fp32)
    assert _argmax_agreement(int4.path, fp32, inputs) >= 0.8


@pytest.mark.parametrize(
    "cfg",
    [
        QuantizeConfig(mode="int4", format="qoperator"),
        QuantizeConfig(mode="int8", format="qoperator", segment_bits=("int8", "fp32", "int4")),
    ],
)
def test_int4_with_qoperator_is_refused(fp32, calib, tmp_path, cfg):
    with pytest.raises(ValueError, match=r"int4.*QDQ|QDQ.*int4"):
        quantize_onnx(fp32, tmp_path / "q.onnx", calib, cfg)
    assert not (tmp_path / "q.onnx").exists()


def _activation_scales(path) -> dict[str, float]:
    return {
        t.name: float(numpy_helper.to_array(t))
        for t in onnx.load(str(path)).graph.initializer
        if t.name.endswith("_scale") and t.dims == []
    }


def test_calibration_methods_run_and_differ(fp32, calib, inputs, tmp_path):
    scales = {}
    for method in ("minmax", "entropy", "percentile"):
        cfg = QuantizeConfig(mode="int8", activations="uint8", format="qdq", calibration=method)
        start = time.perf_counter()
        report = quantize_onnx(fp32, tmp_path / f"{method}.onnx", calib, cfg)
        assert time.perf_counter() - start < 10, method
        assert _argmax_agreement(report.path, fp32, inputs) >= 0.8
        scales[method] = _activation_scales(report.path)
    assert scales["minmax"].keys() == scales["entropy"].keys() == scales["percentile"].keys()
    # Histogram methods clip some range: ORT's default entropy bins would give MinMax's.
    assert scales["entropy"] != scales["minmax"]
    assert scales["percentile"] != scales["minmax"]


def test_entropy_with_qoperator_and_int8_activations(fp32, calib, inputs, tmp_path):
    cfg = QuantizeConfig(mode="int8", activations="int8", format="qoperator", calibration="entropy")
    report = quantize_onnx(fp32, tmp_path / "q.onnx", calib, cfg)
    assert _argmax_agreement(report.path, fp32, inputs) >= 0.8


@pytest.mark.parametrize(
    "cfg", [QuantizeConfig(), QuantizeConfig(mode="int8", segment_bits=("fp32", "fp32", "fp32"))]
)
def test_all_fp32_copies_the_model(fp32, inputs, calib, tmp_path, cfg):
    report = quantize_onnx(fp32, tmp_path / "sub" / "q.onnx", calib, cfg)
    assert report.path.read_bytes() == fp32.read_bytes()
    assert set(report.node_bits.values()) == {"fp32"} and len(report.node_bits) == 4
    assert report.ort_only is False and report.opset == 17
    np.testing.assert_array_equal(_run(report.path, inputs), _run(fp32, inputs))


def test_bad_bit_width_is_refused(fp32, calib, tmp_path):
    with pytest.raises(ValueError, match="segment_bits"):
        quantize_onnx(fp32, tmp_path / "q.onnx", calib, QuantizeConfig(mode="int8", segment_bits=("int8", "int2")))


@pytest.fixture(scope="module")
def masked_bert(tmp_path_factory):
    """A Hugging Face BERT (config, random weights) exported with padded inputs: transformers
    5.x masks the attention scores with a -inf constant."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)).eval()
    ids = torch.randint(1, 50, (64, 16))
    mask = torch.ones(64, 16, dtype=torch.int64)
    mask[:, 10:] = 0
    ids[:, 10:] = 0
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    path = export_onnx(model, {"input_ids": ids[:2], "attention_mask": mask[:2]}, tmp_path_factory.mktemp("bert") / "model.onnx")
    return path, feed


@pytest.mark.parametrize("calibration", ["minmax", "percentile", "entropy"])
def test_an_infinite_mask_stays_in_float_and_every_calibration_runs(masked_bert, calibration, tmp_path):
    from autocompress.export.quantize import unbounded_nodes

    path, feed = masked_bert
    model = onnx.load(str(path))
    bounded, masked = unbounded_nodes(model)
    assert bounded
    assert any("Where" in n for n in masked) and any("Add" in n for n in masked)
    consts = [numpy_helper.to_array(a.t) for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    assert all(np.isfinite(c).all() for c in consts if c.dtype.kind == "f")  # bounded in place
    out = quantize_onnx(path, tmp_path / "q.onnx", feed, QuantizeConfig(mode="int8", calibration=calibration)).path
    ref = ort.InferenceSession(str(path)).run(None, feed)[0]
    got = ort.InferenceSession(str(out)).run(None, feed)[0]
    assert np.isfinite(got).all()
    assert np.abs(got - ref).max() < 0.25 * np.abs(ref).max() + 0.05  # int8, not garbage
    quantized = {n.name for n in onnx.load(str(out)).graph.node}
    assert not any(n.startswith("QLinear") and "Where" in n for n in quantized)
