"""MatMul quantization (export.matmul): int8 dynamic and 4-bit weight-only files of the
conformance suite's TinyEncoder and of a Hugging Face BERT built from a config (random
weights, padded inputs so that its -inf attention mask is used), run in real ONNX Runtime
sessions and compared with the float file.

Tolerances, as max |logit difference| / max |float logit| on the inputs below (measured on
an AMD EPYC with AVX-512 VNNI, ORT 1.32): TinyEncoder dynamic 0.68% (0.94% with
reduce_range), int4 block 32 4.35% (accuracy level 0 or 4); BERT dynamic 0.023% (0.012%),
int4 block 32 0.18%. The bounds are a few times those: 3% dynamic, 10% int4
(TinyEncoder), 1% and 2% (BERT)."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from autocompress.export import export_onnx
from autocompress.export.matmul import activation_matmuls, quantize_matmul_dynamic, quantize_matmul_int4, weight_matmuls
from autocompress.export.quantize import unbounded_nodes
from autocompress.testing import INPUT_SHAPE, conformance_model

TINY_WEIGHT_MATMULS = 13  # embed, 2 x (q, k, v, out, fc1, fc2); the head is a Gemm
BERT_WEIGHT_MATMULS = 12  # 2 x (query, key, value, attention output, intermediate, output); pooler and classifier are Gemm


def _sha(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _run(path: Path, feed: dict) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: feed[i.name] for i in sess.get_inputs()})[0]


def _ops(path: Path) -> Counter:
    return Counter((n.domain, n.op_type) for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, x = conformance_model("transformer")
    path = export_onnx(model, INPUT_SHAPE, tmp_path_factory.mktemp("tiny") / "tiny.onnx")
    name = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    return path, {name: x[:16].numpy()}


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)).eval()
    ids = torch.randint(1, 50, (8, 16))
    mask = torch.ones(8, 16, dtype=torch.int64)
    mask[::2, 10:] = 0  # padded rows: the attention mask's -inf is used
    ids[::2, 10:] = 0
    path = export_onnx(model, {"input_ids": ids[:2], "attention_mask": mask[:2]}, tmp_path_factory.mktemp("bert") / "bert.onnx",
                       dynamic_axes={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}})
    return path, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}


def _rel(ref: np.ndarray, got: np.ndarray) -> float:
    assert got.shape == ref.shape and np.isfinite(got).all()
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("which, bound", [("tiny", 0.03), ("bert", 0.01)])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_dynamic_int8_quantizes_the_weight_matmuls_only_and_stays_close(which, bound, reduce_range, request, tmp_path):
    src, feed = request.getfixturevalue(which)
    before = _sha(src)
    report = quantize_matmul_dynamic(src, tmp_path / "q.onnx", reduce_range=reduce_range)
    assert _sha(src) == before  # the input file is untouched
    assert report.path == tmp_path / "q.onnx" and report.method == "dynamic" and not report.ort_only
    assert report.quantized == tuple(weight_matmuls(src))
    assert len(report.quantized) == (TINY_WEIGHT_MATMULS if which == "tiny" else BERT_WEIGHT_MATMULS)
    ops = _ops(report.path)
    assert ops[("", "MatMulInteger")] == len(report.quantized) and ops[("", "DynamicQuantizeLinear")] > 0
    assert not any(domain for domain, _ in ops)  # standard ONNX operators only
    # attention's Q K^T and weights x V stay float MatMuls, under their own names
    attention = activation_matmuls(src)
    assert len(attention) == 4 and not set(attention) & set(report.quantized)
    out_nodes = {n.name: n.op_type for n in onnx.load(str(report.path)).graph.node}
    assert all(out_nodes.get(name) == "MatMul" for name in attention)
    # Gemm (the head, BERT's pooler) stays float: ORT writes it as a float MatMul + Add
    gemms = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Gemm"]
    assert gemms and all(out_nodes.get(f"{g}_MatMul") == "MatMul" for g in gemms)
    assert _rel(_run(src, feed), _run(report.path, feed)) < bound
    assert report.path.stat().st_size < src.stat().st_size


@pytest.mark.parametrize("which, bound", [("tiny", 0.10), ("bert", 0.02)])
@pytest.mark.parametrize("accuracy_level", [0, 4])
def test_int4_weight_only_writes_matmulnbits_a_smaller_file_and_stays_close(which, bound, accuracy_level, request, tmp_path):
    src, feed = request.getfixturevalue(which)
    before = _sha(src)
    report = quantize_matmul_int4(src, tmp_path / "q.onnx", block_size=32, accuracy_level=accuracy_level)
    assert _sha(src) == before
    assert report.method == "int4_wo" and report.ort_only  # MatMulNBits is com.microsoft
    if which == "tiny":  # the embedding's 16 input features are fewer than a block: left float
        assert report.skipped == {"/embed/MatMul": "input dimension 16 is smaller than the block size 32"}
        assert report.quantized == tuple(weight_matmuls(src)[1:])
    else:
        assert report.skipped == {} and len(report.quantized) == BERT_WEIGHT_MATMULS
    ops = _ops(report.path)
    assert ops[("com.microsoft", "MatMulNBits")] == len(report.quantized)
    assert ops[("", "MatMul")] == 4 + len(report.skipped)  # attention's two MatMuls per layer, and the skipped
    assert ops[("", "Gemm")] == len([n for n in onnx.load(str(src)).graph.node if n.op_type == "Gemm"])  # untouched
    nbits = [n for n in onnx.load(str(report.path)).graph.node if n.op_type == "MatMulNBits"]
    attrs = {a.name: a.i for a in nbits[0].attribute}
    assert attrs["bits"] == 4 and attrs["block_size"] == 32 and attrs.get("accuracy_level", 0) == accuracy_level
    assert len(nbits[0].input) == 3  # symmetric: no zero points
    assert _rel(_run(src, feed), _run(report.path, feed)) < bound
    assert report.path.stat().st_size < 0.7 * src.stat().st_size


def test_int4_leaves_weights_shorter_than_a_block_float_and_copies_a_graph_with_none(tiny, tmp_path):
    src, feed = tiny
    r64 = quantize_matmul_int4(src, tmp_path / "b64.onnx", block_size=64)
    assert r64.quantized == ("/layers.0/fc2/MatMul", "/layers.1/fc2/MatMul")  # K = 64; the others have K 16 or 32
    assert len(r64.skipped) == TINY_WEIGHT_MATMULS - 2
    assert np.isfinite(_run(r64.path, feed)).all()
    r128 = quantize_matmul_int4(src, tmp_path / "b128.onnx", block_size=128)
    assert r128.quantized == () and len(r128.skipped) == TINY_WEIGHT_MATMULS and not r128.ort_only
    assert _sha(r128.path) == _sha(src)
    with pytest.raises(ValueError, match="block_size must be one of"):
        quantize_matmul_int4(src, tmp_path / "x.onnx", block_size=48)


def test_an_input_dimension_that_is_not_a_multiple_of_the_block_is_padded_by_ort(tmp_path):
    """K = 48 at block 32: two blocks, the second padded with zero rows; as close as K = 64
    (max |diff| / max |output|: 11% and 9% on these random weights, 4-bit symmetric)."""
    errors = {}
    for k in (48, 64):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(k, 40), torch.nn.ReLU(), torch.nn.Linear(40, 8)).eval()
        src = export_onnx(model, (5, k), tmp_path / f"k{k}.onnx")
        report = quantize_matmul_int4(src, tmp_path / f"k{k}.q.onnx", block_size=32)
        assert len(report.quantized) == 2 and report.skipped == {}
        scales = {t.name: list(t.dims) for t in onnx.load(str(report.path)).graph.initializer if t.name.endswith("_scales")}
        assert sorted(scales.values()) == [[8, 2], [40, 2]]  # K 48 or 64 -> 2 blocks; K 40 -> 2 blocks
        feed = {"input": torch.randn(4, 5, k, generator=torch.Generator().manual_seed(1)).numpy()}
        errors[k] = _rel(_run(src, feed), _run(report.path, feed))
    assert errors[48] < 0.2 and errors[64] < 0.2


def test_the_bert_attention_mask_stays_as_it_was(bert, tmp_path):
    """transformers 5.x masks scores with a -inf constant through Where: neither method
    calibrates, so it is left as it is (static quantization has to bound it)."""
    src, feed = bert
    assert unbounded_nodes(onnx.load(str(src)))[0]  # the float graph has an infinite constant
    ref = _run(src, feed)
    for report in (quantize_matmul_dynamic(src, tmp_path / "d.onnx"), quantize_matmul_int4(src, tmp_path / "w.onnx")):
        assert unbounded_nodes(onnx.load(str(report.path)))[0]
        got = _run(report.path, feed)
        assert np.isfinite(got).all() and _rel(ref, got) < 0.02
        # padded rows: the same logits whatever the padding holds
        other = dict(feed, input_ids=np.where(feed["attention_mask"] == 0, 3, feed["input_ids"]))
        np.testing.assert_allclose(_run(report.path, other)[::2], got[::2], atol=1e-5)


def test_quantizing_is_quiet_and_leaves_logging_as_it_was(tiny, tmp_path):
    """ORT's MatMulNBits module calls logging.basicConfig(level=INFO) when imported and logs
    every node at INFO: in a fresh process, nothing is printed and the root logger keeps its
    handlers and level."""
    src, _ = tiny
    code = (
        "import logging, sys\n"
        "from autocompress.export.matmul import quantize_matmul_dynamic, quantize_matmul_int4\n"
        f"quantize_matmul_int4({str(src)!r}, {str(tmp_path / 'w.onnx')!r})\n"
        f"quantize_matmul_dynamic({str(src)!r}, {str(tmp_path / 'd.onnx')!r})\n"
        "root = logging.getLogger()\n"
        "print('ROOT', root.handlers, logging.getLevelName(root.level))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "ROOT [] WARNING" and out.stderr.strip() == ""


def test_in_process_the_root_logger_is_left_alone(tiny, tmp_path, capsys):
    src, _ = tiny
    root = logging.getLogger()
    handlers, level, filters, stdout = list(root.handlers), root.level, list(root.filters), sys.stdout
    quantize_matmul_int4(src, tmp_path / "w.onnx")
    quantize_matmul_dynamic(src, tmp_path / "d.onnx")
    assert (list(root.handlers), root.level, list(root.filters), sys.stdout) == (handlers, level, filters, stdout)
    assert not logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").filters
    out, err = capsys.readouterr()
    assert "quantize" not in (out + err).lower()
