"""Quantization-aware fine-tuning: fake_quant against numpy and ORT's own quantizer, the
straight-through gradient, frozen BatchNorms, baking, and (end to end) that ORT's
quantization of the baked, exported model reproduces the QAT weight grid exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn.utils import parametrize

from autocompress.config import LowRankConfig, QuantizeConfig
from autocompress.export import export_onnx, quantizable_nodes, quantize_onnx
from autocompress.tasks.demo import DigitsResNet
from autocompress.training.qat import (
    QRANGE,
    enable_qat_,
    fake_quant,
    layer_bits,
    quant_params,
)
from autocompress.techniques import apply
from autocompress.transforms import TransformContext

INPUT_SHAPE = (1, 16, 16)
WIDTHS = (8, 16, 32)


def _weights(seed: int = 0) -> torch.Tensor:
    """(6, 4, 3, 3) weights: a zero channel, a channel whose max |w| is negative, one whose
    max is positive, a tiny one, and two random ones."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 4, 3, 3, generator=g)
    w[0] = 0.0
    w[1].clamp_(-1.0, 1.0)[0, 0, 0] = -3.0
    w[2].clamp_(-1.0, 1.0)[1, 1, 1] = 2.5
    w[3] *= 1e-3
    return w


def _numpy_fake_quant(w: np.ndarray, bits: str) -> tuple[np.ndarray, np.ndarray]:
    """quantize -> dequantize by hand: ORT's symmetric per-channel weight recipe."""
    qmin, qmax = {"int8": (-127, 127), "int4": (-8, 7)}[bits]
    w = w.astype(np.float32)
    absmax = np.abs(w.reshape(len(w), -1)).max(axis=1)
    scale64 = absmax.astype(np.float64) * 2.0 / (qmax - qmin)
    scale = np.where(scale64 < np.finfo(np.float32).tiny, 1.0, scale64).astype(np.float32)
    s = scale.reshape(-1, *([1] * (w.ndim - 1)))
    q = np.clip(np.round(w / s), qmin, qmax)
    return (q * s).astype(np.float32), scale


@pytest.mark.parametrize("bits", ["int8", "int4"])
def test_fake_quant_equals_numpy_and_ort(bits):
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import (
        compute_data_quant_params,
        quantize_nparray,
    )

    w = _weights()
    expected, scale = _numpy_fake_quant(w.numpy(), bits)
    got = fake_quant(w, bits)
    assert torch.isfinite(got).all()
    np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_array_equal(got[0].numpy(), 0.0)  # zero channel: zeros, no NaN
    # scale = absmax / 127 (int8) and absmax / 7.5 (int4), not absmax / 7
    divisor = {"int8": 127.0, "int4": 7.5}[bits]
    np.testing.assert_allclose(scale[1:], w.abs().amax(dim=(1, 2, 3)).numpy()[1:] / divisor, rtol=1e-6)
    np.testing.assert_array_equal(quant_params(w, bits)[1].numpy(), scale)
    q = np.round(expected / scale.reshape(-1, 1, 1, 1))
    assert q.max() <= QRANGE[bits][1] and q.min() >= QRANGE[bits][0]
    if bits == "int4":  # the negative extreme of channel 1 sits on the -7.5 tie
        assert q[1].min() in (-8, -7) and q[2].max() == 7
    # and ORT's own functions, channel by channel
    qtype = {"int8": TensorProto.INT8, "int4": TensorProto.INT4}[bits]
    for c in range(len(w)):
        data = w[c].numpy().ravel()
        zp, sc = compute_data_quant_params(data, qtype, symmetric=True)
        assert sc.dtype == np.float32 and sc == scale[c] and int(zp) == 0
        ort_q = quantize_nparray(qtype, data, sc, zp).astype(np.float32)
        np.testing.assert_array_equal(ort_q * sc, expected[c].ravel())


@pytest.mark.parametrize("bits", ["int8", "int4"])
def test_fake_quant_gradient_is_straight_through(bits):
    w = _weights(1).requires_grad_(True)
    g = torch.randn_like(w)
    fake_quant(w, bits).backward(g)
    np.testing.assert_array_equal(w.grad.numpy(), g.numpy())
    assert fake_quant(w, "fp32") is w


def _model(seed: int = 0) -> nn.Module:
    """A small DigitsResNet with non-trivial BatchNorm statistics, so folding matters."""
    torch.manual_seed(seed)
    model = DigitsResNet(WIDTHS)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
    return model.eval()


def _x(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))


def _bn_buffers(m: nn.Module) -> list[torch.Tensor]:
    return [m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()]


def test_qat_training_step():
    model, x = _model(), _x()
    bits = layer_bits(model, x[:2], QuantizeConfig(segment_bits=("int4", "fp32", "int8")))
    assert set(bits.values()) == {"int4", "fp32", "int8"}
    handle = enable_qat_(model, x[:2], bits)
    named = dict(model.named_modules())
    paired = {l.name: l.bn for l in handle.layers}
    assert all(paired[n] is not None for n in paired if n != "fc")  # every conv here feeds a BN
    fp32_names = [n for n, b in bits.items() if b == "fp32"]
    assert fp32_names and all(not parametrize.is_parametrized(named[n]) for n in fp32_names)
    # BNs after fp32 convs train as usual; BNs after quantized convs are frozen
    frozen = [l.bn for l in handle.layers if l.bn is not None]
    free = [named[n.replace("conv", "bn")] for n in fp32_names if "conv" in n]
    assert free, fp32_names
    before_frozen = [_bn_buffers(b) for b in frozen]
    before_free = [_bn_buffers(b) for b in free]
    before_fp32 = {n: named[n].weight.detach().clone() for n in fp32_names}
    latent = {l.name: l.module.parametrizations.weight.original for l in handle.layers}
    before_latent = {n: p.detach().clone() for n, p in latent.items()}

    model.train()  # must not unfreeze the paired BNs
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(x), torch.arange(len(x)) % 10)
    opt.zero_grad()
    loss.backward()
    for name, p in latent.items():  # gradients reach the latent weights through the STE ...
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for layer in handle.layers:  # ... and gamma through the fold
        if layer.bn is not None:
            assert layer.bn.weight.grad is not None and layer.bn.weight.grad.abs().sum() > 0
    opt.step()
    for bn, old in zip(frozen, before_frozen):
        for a, b in zip(_bn_buffers(bn), old):
            assert torch.equal(a, b)
    for bn, old in zip(free, before_free):
        assert not torch.equal(bn.running_mean, old[0])
    for name, p in latent.items():
        assert not torch.equal(p, before_latent[name])
    for name in fp32_names:  # fp32 layers: plain weights, trained, never quantized
        w = named[name].weight
        assert isinstance(w, nn.Parameter) and not torch.equal(w, before_fp32[name])
        assert torch.unique(w).numel() > 100


def _grad_step(model: nn.Module, x: torch.Tensor) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(x), torch.arange(len(x)) % 10)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_bake_restores_a_plain_module(tmp_path):
    model, x = _model(), _x()
    keys = list(model.state_dict())
    bits = layer_bits(model, x[:2], QuantizeConfig(segment_bits=("int8", "fp32", "int8")))
    handle = enable_qat_(model, x[:2], bits)
    assert list(model.state_dict()) != keys
    _grad_step(model, x)
    with torch.no_grad():
        qat_out = model.eval()(x)
    quantized = handle.quantized_weights()
    handle.bake_()
    assert list(model.state_dict()) == keys
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    with torch.no_grad():
        baked_out = model(x)
    torch.testing.assert_close(baked_out, qat_out, rtol=1e-5, atol=1e-5)
    named = dict(model.named_modules())
    for layer in handle.layers:  # int8: the written weights are the QAT grid (to rounding)
        torch.testing.assert_close(named[layer.name].weight, quantized[layer.name], rtol=1e-6, atol=1e-7)
    path = export_onnx(model, INPUT_SHAPE, tmp_path / "baked.onnx")
    assert not [n for n in onnx.load(str(path)).graph.node if n.op_type == "BatchNormalization"]
    assert handle.bake_() is model  # idempotent


def test_bake_int4_changes_only_channel_extremes():
    """int4 has no fixed point under ORT's quantizer: bake keeps each channel's max |w|
    at its trained value (+-7.5 * scale), everything else is written on the grid."""
    model, x = _model(1), _x()
    handle = enable_qat_(model, x[:2], layer_bits(model, x[:2], QuantizeConfig(mode="int4")))
    _grad_step(model, x)
    folded, quantized = handle.folded_weights(), handle.quantized_weights()
    handle.bake_()
    named = dict(model.named_modules())
    for layer in handle.layers:
        w, f, q = named[layer.name].weight.detach(), folded[layer.name], quantized[layer.name]
        absmax = f.abs().flatten(1).amax(1).reshape(-1, *([1] * (f.dim() - 1)))
        differs = w != q
        assert differs.any()
        assert torch.equal(w[differs].abs(), absmax.expand_as(w)[differs])  # only +-A differ
        scale = absmax / 7.5
        torch.testing.assert_close((w - q)[differs].abs(), (0.5 * scale).expand_as(w)[differs], rtol=1e-5, atol=0)
        torch.testing.assert_close(w.abs().flatten(1).amax(1), f.abs().flatten(1).amax(1), rtol=0, atol=0)


def _dequantized_weights(qpath, fp32_path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """fp32 node name -> (dequantized weight, per-channel scale) from a QDQ file."""
    fp32_graph = onnx.load(str(fp32_path)).graph
    graph = onnx.load(str(qpath)).graph
    inits = {t.name: t for t in graph.initializer}
    dq = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    nodes = {n.name: n for n in graph.node}
    out = {}
    for n in fp32_graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        deq = dq[nodes[n.name].input[1]]
        q_t, s_t, zp_t = (inits[i] for i in deq.input)
        q = numpy_helper.to_array(q_t).astype(np.float32)  # INT4 comes back as ml_dtypes.int4
        scale, zp = numpy_helper.to_array(s_t), numpy_helper.to_array(zp_t).astype(np.float32)
        axis = next((a.i for a in deq.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        shape[axis] = -1
        assert not zp.any()
        out[n.name] = ((q - zp.reshape(shape)) * scale.reshape(shape), scale)
    return out


@pytest.mark.parametrize("bits,freeze_bn", [("int8", True), ("int4", True), ("int4", False)])
def test_ort_reproduces_the_qat_grid(bits, freeze_bn, tmp_path):
    model, x = _model(2), _x()
    handle = enable_qat_(model, x[:2], layer_bits(model, x[:2], QuantizeConfig(mode=bits)), freeze_bn=freeze_bn)
    bn = handle.layers[0].bn
    stats = bn.running_var.clone()
    _grad_step(model, x)
    assert torch.equal(bn.running_var, stats) == freeze_bn  # freeze_bn=False: BNs keep training
    expected = handle.quantized_weights()
    scales = {name: quant_params(w, bits)[1] for name, w in handle.folded_weights().items()}
    names = [l.name for l in handle.layers]
    handle.bake_()
    fp32 = export_onnx(model, INPUT_SHAPE, tmp_path / "fp32.onnx")
    cfg = QuantizeConfig(mode=bits, activations="uint8", format="qdq")
    report = quantize_onnx(fp32, tmp_path / "q.onnx", _x(32, 1).numpy(), cfg)
    nodes = quantizable_nodes(fp32)
    assert len(nodes) == len(names) and set(report.node_bits.values()) == {bits}
    got = _dequantized_weights(report.path, fp32)
    saw_minus8 = False
    for node, name in zip(nodes, names):
        deq, scale = got[node]
        want = expected[name].numpy()
        assert deq.shape == want.shape, (node, name)
        np.testing.assert_array_equal(scale, scales[name].numpy())  # ORT recomputed QAT's scales
        tol = 1e-6 * scale.reshape(-1, *([1] * (want.ndim - 1)))
        assert (np.abs(deq - want) <= tol).all(), (node, name, np.abs(deq - want).max())
        saw_minus8 |= bool((np.round(want / scale.reshape(-1, *([1] * (want.ndim - 1)))) == -8).any())
    if bits == "int4":
        assert saw_minus8  # the -8 end of ORT's int4 range was exercised


def _segment_check(model: nn.Module, x: torch.Tensor, tmp_path, tag: str) -> None:
    fp32 = export_onnx(model, INPUT_SHAPE, tmp_path / f"{tag}.onnx")
    nodes = quantizable_nodes(fp32)
    graph = onnx.load(str(fp32)).graph
    inits = {t.name: tuple(t.dims) for t in graph.initializer}
    weight_of = {n.name: n.input[1] for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    op = {n.name: n.op_type for n in graph.node}
    named = dict(model.named_modules())
    cfg = QuantizeConfig(segment_bits=("int4", "fp32", "int8"), activations="uint8", format="qdq")
    bits = layer_bits(model, x, cfg)
    assert len(bits) == len(nodes)
    for node, name in zip(nodes, bits):  # i-th layer is the i-th node: same weight shape
        shape = tuple(named[name].weight.shape)  # a bias-free Linear exports as MatMul(x, W^T)
        assert inits[weight_of[node]] == (shape[::-1] if op[node] == "MatMul" else shape), (node, name)
    report = quantize_onnx(fp32, tmp_path / f"{tag}.q.onnx", x.numpy(), cfg)
    assert [report.node_bits[n] for n in nodes] == list(bits.values())
    for cfg in (QuantizeConfig(), QuantizeConfig(mode="int8"), QuantizeConfig(segment_bits=("int8", "int4"))):
        from autocompress.export.quantize import _node_bits

        expected = list(_node_bits(nodes, cfg).values()) if cfg.active else ["fp32"] * len(nodes)
        assert list(layer_bits(model, x, cfg).values()) == expected


def test_layer_bits_match_quantize_onnx_segments(tmp_path):
    x = _x(8)
    model = _model(3)
    _segment_check(model, x, tmp_path, "resnet")
    low = apply(model, LowRankConfig(0.5), TransformContext(example_input=x[:2]))
    assert len(layer_bits(low, x, QuantizeConfig(mode="int8"))) > len(layer_bits(model, x, QuantizeConfig(mode="int8")))
    _segment_check(low, x, tmp_path, "lowrank")


def test_qat_with_a_zero_gamma_batchnorm_stays_finite():
    """A new MobileNet residual block starts with its last BN's gamma at 0 (s = 0): the
    folded parametrization must not divide by it."""
    from autocompress.transforms.blocks import make_block

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), make_block("mbconv_e3_k3", 8, 8, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    x = torch.randn(16, 1, 8, 8)
    bits = layer_bits(model, x[:2], QuantizeConfig("int8", "uint8", "qdq"))
    handle = enable_qat_(model, x[:2], bits, freeze_bn=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = model.train()(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    handle.bake_()
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
