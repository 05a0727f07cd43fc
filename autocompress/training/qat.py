"""Quantization-aware fine-tuning (QAT) of weights, matched to what ONNX Runtime's static
quantizer (`export.quantize.quantize_onnx`) does to the exported model.

What ORT does to a weight (onnxruntime/quantization/quant_utils.py, 1.32, read and checked):
per output channel, symmetric, A = max |w_c| over the channel,

    scale = float32( float64(2 A) / (qmax - qmin) )     (compute_scale_zp, symmetric=True)
    q     = clip( round_half_even( float32(w / scale) ), qmin, qmax )   (quantize_nparray)

with (qmin, qmax) from get_qmin_qmax_for_qType(..., symmetric=True):
  * QInt8: (-127, 127): ONNX_INT_TYPE_SYMMETRIC_RANGE has INT8, so scale = A / 127 and the
    grid is symmetric;
  * QInt4: (-8, 7): that table has no INT4 entry, so the full range is used and
    scale = 2A / 15 = A / 7.5 (not A / 7). A channel's largest weight lands on q = +-7.5,
    a tie: +7.5 rounds to 8 and is clipped to 7, -7.5 rounds (to even) to -8; which of
    -7 / -8 a negative extreme gets depends on the float32 rounding of the scale.
A channel whose scale would be below float32's smallest normal gets scale 1 (all zeros).
Zero points are 0. `fake_quant` is this function, computed the same way in torch (same
float64 -> float32 scale, float32 division, half-to-even rounding), so on the same float32
weights it gives bit-identical results.

Batch-norm folding. The exporter folds an eval-mode BatchNorm into the conv that feeds it,
W_fold = W * s with s = gamma / sqrt(running_var + eps) per output channel, and ORT
quantizes W_fold. So for a conv whose output feeds a BN directly, QAT quantizes the folded
weight: the conv runs with W_eff = fake_quant(W * s) / s, and BN(conv(x, W_eff)) is a conv
with the quantized folded weight. By default those BNs stay in inference mode while QAT
is enabled (running statistics frozen, as is usual late in QAT): a forward pre-hook sets
bn.training = False before every call, so model.train() cannot switch batch statistics
back on, and the running statistics cannot drift. `enable_qat_(..., freeze_bn=False)`
leaves them training instead (see there).

Baking (`QATHandle.bake_`). The fake-quant machinery is removed and every QAT layer gets
the float weights that ORT will map onto exactly the grid QAT trained with:
  * For a BN-paired conv the fold is done here, not left to the exporter: the conv gets
    the folded weight and the BN becomes an exact identity plus the folded bias
    (gamma = 1, running_mean = 0, running_var chosen so that float32(var + eps) == 1, beta =
    the folded bias). The exporter's own fold then multiplies by exactly 1, so the ONNX
    file holds bit for bit the weights written here (the exporter's fold arithmetic would
    otherwise perturb the last bit, which decides the int4 tie above).
  * The weights written are the fake-quantized (folded) weights s*q, clamped to [-A, A]
    (A: the channel's max |w|), and the weights of magnitude A keep their trained value.
    So every channel's max |w| is still exactly A, ORT recomputes bit for bit the scale QAT
    trained with, maps every grid value s*q back to q (|s*q / s - q| ~ 1e-7), and maps
    each +-A to the same q that fake_quant gave it (the same float32 computation). No
    TensorQuantOverrides are needed.
  * int8: +-A and the grid's +-127 s differ by float rounding only, so the baked float
    model equals the QAT forward (to ~1e-6 relative) and its weights lie on the
    per-channel grid (each channel's max |w| is 127 * scale up to rounding).
  * int4: ORT's int4 quantizer has no fixed point: a channel of grid values s*q has
    max |q| = 7 or 8, never 7.5, so ORT would re-quantize it onto a different grid (scale
    7s/7.5 or 8s/7.5). Keeping each channel's extreme weight at +-7.5 s (its trained
    value) is what makes ORT reproduce the QAT grid; the price is that the baked float
    model differs from the QAT forward at those weights (by 0.5 s: each channel's extreme
    weight, and any other weight that quantized to -8). The model that matters, the
    ORT-quantized one, has exactly the QAT weights. (Writing the plain grid instead puts
    ~92% of int4 weights off the QAT grid after ORT; measured on DigitsResNet.)

Segments. `layer_bits` gives every Conv/Linear module its bit width the way quantize_onnx
gives the exported Conv/Gemm/MatMul nodes theirs: the layers in forward execution order
(which the TorchScript exporter keeps as graph order), split by `split_contiguous` into
len(segment_bits) segments. ConvTranspose layers are left out (they export as
ConvTranspose, which quantize_onnx does not quantize). Activations are not modelled: ORT
calibrates them after export as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from autocompress.names import BITS
from autocompress.segments import bits_per_item
from autocompress.transforms.order import execution_order, hooked, run_once

if TYPE_CHECKING:
    from autocompress.techniques.quantize import QuantizeConfig

# ORT's (qmin, qmax) for symmetric per-channel weights (get_qmin_qmax_for_qType).
QRANGE = {"int8": (-127, 127), "int4": (-8, 7)}
_FLOAT32_TINY = torch.finfo(torch.float32).tiny


def _is_layer(m: nn.Module) -> bool:
    """Modules that export as quantizable nodes (Conv, Gemm/MatMul)."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return not m.transposed
    return isinstance(m, nn.Linear)


def _names(model: nn.Module) -> dict[int, str]:
    out: dict[int, str] = {}
    for name, m in model.named_modules():
        out.setdefault(id(m), name)
    return out


def quantized_layers(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of the Conv/Linear modules in the order they first run (ConvTranspose excluded)."""
    names = _names(model)
    return [names[id(m)] for m in execution_order(model, example_input) if _is_layer(m)]


def layer_bits(model: nn.Module, example_input: torch.Tensor, quantize_cfg: QuantizeConfig) -> dict[str, str]:
    """Conv/Linear module name -> 'fp32' | 'int8' | 'int4', in forward execution order,
    segmented exactly like quantize_onnx segments the exported model's nodes."""
    names = quantized_layers(model, example_input)
    if not quantize_cfg.active:
        return {n: "fp32" for n in names}
    return bits_per_item(names, quantize_cfg)


# --------------------------------------------------------------------------- fake quant


def _channel_view(x: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[axis] = -1
    return x.reshape(shape)


@torch.no_grad()
def quant_params(w: torch.Tensor, bits: str, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(absmax, scale) per channel along `axis`, as ORT computes them (float32 results)."""
    if bits not in QRANGE:
        raise ValueError(f"bits must be one of {tuple(QRANGE)}, got {bits!r}")
    qmin, qmax = QRANGE[bits]
    axis = axis % w.dim()
    dims = [d for d in range(w.dim()) if d != axis]
    w32 = w.detach().float()
    absmax = w32.abs().amax(dim=dims) if dims else w32.abs()
    scale64 = absmax.double() * 2.0 / float(qmax - qmin)
    scale = torch.where(scale64 < _FLOAT32_TINY, torch.ones_like(scale64), scale64).float()
    return absmax, scale


@torch.no_grad()
def quantize_to_int(w: torch.Tensor, bits: str, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale): the integer weights (as float32) and per-channel scales ORT would write."""
    qmin, qmax = QRANGE[bits]
    _, scale = quant_params(w, bits, axis)
    s = _channel_view(scale, axis % w.dim(), w.dim())
    q = torch.clamp(torch.round(w.detach().float() / s), qmin, qmax)
    return q, scale


def fake_quant(w: torch.Tensor, bits: str, axis: int = 0) -> torch.Tensor:
    """Symmetric per-channel fake quantization (ORT's weight quantization, see the module
    docstring) with a straight-through estimator: the forward value is scale * q, the
    gradient w.r.t. `w` is the identity. 'fp32' returns `w`. Zero channels give zeros."""
    if bits == "fp32":
        return w
    q, scale = quantize_to_int(w, bits, axis)
    deq = (q * _channel_view(scale, axis % w.dim(), w.dim())).to(w.dtype)
    return w + (deq - w).detach()


# --------------------------------------------------------------------------- QAT modules


def _bn_scale(bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """gamma / sqrt(running_var + eps) per channel (gamma = 1 without affine)."""
    std = torch.sqrt(bn.running_var + bn.eps)
    return (bn.weight / std) if bn.weight is not None else 1.0 / std


class _FakeQuantWeight(nn.Module):
    """Parametrization: weight -> fake_quant(weight) (per output channel, axis 0)."""

    def __init__(self, bits: str):
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return fake_quant(w, self.bits, axis=0)


class _FakeQuantFolded(nn.Module):
    """Parametrization: weight -> fake_quant(weight * s) / s with s the BN's per-channel
    scale. The BN is held outside the module tree (no extra state_dict entries)."""

    def __init__(self, bits: str, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.bits = bits
        self._bn = [bn]

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = _channel_view(_bn_scale(self._bn[0]), 0, w.dim())
        # A channel whose BN scale is 0 (gamma = 0, e.g. the zero-initialized last BN of a
        # new residual block) has folded weight 0, which quantizes exactly; its conv weight
        # does not reach the output, so leave it as is instead of dividing by 0.
        dead = s == 0
        q = fake_quant(w * s, self.bits, axis=0) / torch.where(dead, torch.ones_like(s), s)
        return torch.where(dead, w, q)


def _freeze_bn_hook(bn: nn.Module, args: Any) -> None:
    bn.training = False  # running statistics, even after model.train()


def _conv_bn_pairs(model: nn.Module, example_input: torch.Tensor) -> dict[nn.Module, nn.modules.batchnorm._BatchNorm]:
    """conv -> BN for every BatchNorm whose input is the very tensor a conv returned, found
    on one eval-mode forward pass (the pattern the exporter folds)."""
    outputs: list[tuple[torch.Tensor, nn.Module]] = []  # tensors kept alive: ids stay unique
    pairs: dict[nn.Module, nn.modules.batchnorm._BatchNorm] = {}

    def conv_hook(mod, inputs, output):
        outputs.append((output, mod))

    def bn_hook(mod, inputs):
        for out, conv in outputs:
            if inputs[0] is out:
                if pairs.get(conv, mod) is not mod:
                    raise ValueError("a conv feeds two BatchNorms: cannot fold its weight for QAT")
                pairs[conv] = mod

    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed]
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with hooked(convs, conv_hook), hooked(bns, bn_hook, pre=True):
        run_once(model, example_input)
    return pairs


@dataclass
class _QATLayer:
    name: str
    module: nn.Module
    bits: str
    bn: nn.modules.batchnorm._BatchNorm | None = None
    param_order: tuple[str, ...] = ()


@dataclass
class QATHandle:
    """What enable_qat_ changed; `bake_()` undoes it and writes the deployable weights."""

    model: nn.Module
    layers: list[_QATLayer]
    _hooks: list[Any] = field(default_factory=list)
    _bn_training: dict[nn.Module, bool] = field(default_factory=dict)
    baked: bool = False

    @property
    def bits(self) -> dict[str, str]:
        return {l.name: l.bits for l in self.layers}

    @torch.no_grad()
    def folded_weights(self) -> dict[str, torch.Tensor]:
        """Layer name -> the float weight ORT will quantize (the BN-folded one for paired
        convs), from the current (latent) parameters. Only while QAT is enabled."""
        if self.baked:
            raise RuntimeError("the QAT handle has been baked")
        out = {}
        for l in self.layers:
            w = l.module.parametrizations.weight.original.detach().clone()
            if l.bn is not None:
                w = w * _channel_view(_bn_scale(l.bn), 0, w.dim())
            out[l.name] = w
        return out

    @torch.no_grad()
    def quantized_weights(self) -> dict[str, torch.Tensor]:
        """Layer name -> fake_quant(folded weight): the dequantized weights ORT must end up
        with after bake_ -> export -> quantize_onnx."""
        return {l.name: fake_quant(w, l.bits) for l, w in zip(self.layers, self.folded_weights().values())}

    @torch.no_grad()
    def bake_(self) -> nn.Module:
        """Remove the fake-quant parametrizations and BN hooks and write the weights that
        ORT's quantizer maps onto the QAT grid (see the module docstring): a plain module
        again, with the state_dict keys it had before enable_qat_. Idempotent."""
        if self.baked:
            return self.model
        deploy = {name: _deploy_weight(w, l.bits) for (name, w), l in zip(self.folded_weights().items(), self.layers)}
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for l in self.layers:
            parametrize.remove_parametrizations(l.module, "weight", leave_parametrized=False)
            params = l.module._parameters  # put 'weight' back in its place (state_dict order)
            for key in [k for k in l.param_order if k in params]:
                params[key] = params.pop(key)
            w = l.module.weight
            if l.bn is None:
                w.copy_(deploy[l.name].to(w.dtype))
                continue
            _fold_into_conv_(l.module, l.bn, deploy[l.name])
        for bn in self._bn_training:
            bn.training = self.model.training
        self.baked = True
        return self.model


def _deploy_weight(folded: torch.Tensor, bits: str) -> torch.Tensor:
    """The grid values scale * q clamped to [-A, A] (A: the channel's max |w|), with every
    weight of magnitude A kept as is. So the channel's max |w| stays exactly A, ORT
    recomputes the same scale, and every written value rounds to the q fake_quant gave it
    (a clamped value is +-A, which rounds like the channel's extreme: division is
    monotonic, so a weight that reached q = -8 (int4) or +-127 (int8) shares A's q)."""
    q, scale = quantize_to_int(folded, bits)
    absmax = folded.abs().amax(dim=list(range(1, folded.dim()))) if folded.dim() > 1 else folded.abs()
    a = _channel_view(absmax, 0, folded.dim())
    grid = torch.maximum(torch.minimum(q * _channel_view(scale, 0, folded.dim()), a), -a)
    return torch.where(folded.abs() == a, folded, grid)


def _identity_var(eps: float) -> float:
    """A float32 running_var with float32(var + eps) == 1 and float64(var + eps) rounding to
    1 in float32, so sqrt(var + eps) is exactly 1 however the exporter computes it."""
    v = torch.tensor(1.0 - eps, dtype=torch.float32)
    for _ in range(64):
        if (v + eps).item() == 1.0 and torch.tensor(float(v) + eps, dtype=torch.float64).float().item() == 1.0:
            return float(v)
        v = torch.nextafter(v, torch.tensor(2.0)) if (v + eps).item() < 1.0 else torch.nextafter(v, torch.tensor(0.0))
    raise RuntimeError(f"no float32 running_var makes var + {eps} exactly 1")


@torch.no_grad()
def _fold_into_conv_(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm, folded_weight: torch.Tensor) -> None:
    """conv.weight <- folded_weight; the BN becomes identity + the folded bias (its
    parameters and buffers keep their names and shapes)."""
    s = _bn_scale(bn)
    bias = -bn.running_mean * s
    if bn.bias is not None:
        bias = bias + bn.bias
    if conv.bias is not None:
        bias = bias + conv.bias * s
        conv.bias.zero_()
    conv.weight.copy_(folded_weight.to(conv.weight.dtype))
    if bn.weight is None or bn.bias is None:
        raise ValueError("baking a folded conv needs an affine BatchNorm (to hold the folded bias)")
    bn.weight.fill_(1.0)
    bn.bias.copy_(bias)
    bn.running_mean.zero_()
    bn.running_var.fill_(_identity_var(bn.eps))


def enable_qat_(
    model: nn.Module, example_input: torch.Tensor, bits: dict[str, str], *, freeze_bn: bool = True
) -> QATHandle:
    """Make every Conv/Linear with bits != 'fp32' run with fake-quantized weights (in place).
    `bits`: layer name -> 'fp32' | 'int8' | 'int4' (e.g. from layer_bits); layers not named
    stay fp32. A conv whose output feeds a BatchNorm quantizes the folded weight
    fake_quant(W * s) / s, s from the BN's running statistics.

    freeze_bn=True (default): those BNs are held in inference mode until bake_() (running
    statistics fixed, whatever model.train() says), so the training forward is exactly
    the deployed function (up to activation quantization).
    freeze_bn=False: the BNs train as usual (batch statistics, running statistics updated);
    the weight grid follows the running statistics as they move, and bake_() uses their
    final values, so the exported weights are still exactly on the grid ORT uses; only the
    training forward normalizes with batch statistics. On the demo, freezing BN for a
    whole short fine-tune costs as much accuracy as it does without any quantization
    (experiments/qat_vs_ptq.py).

    Create the optimizer afterwards or keep it: the trained Parameters stay the same
    objects."""
    named = dict(model.named_modules())
    for name, b in bits.items():
        if b not in BITS:
            raise ValueError(f"bit width for {name!r} must be one of {BITS}, got {b!r}")
        if name not in named or not _is_layer(named[name]):
            raise ValueError(f"{name!r} is not a Conv/Linear module of the model")
    pairs = _conv_bn_pairs(model, example_input)
    handle = QATHandle(model, [])
    for name in quantized_layers(model, example_input):
        b = bits.get(name, "fp32")
        if b == "fp32":
            continue
        module = named[name]
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError(f"{name!r} already has a parametrized weight (QAT enabled twice?)")
        bn = pairs.get(module)
        order = tuple(module._parameters)
        if bn is not None:
            parametrize.register_parametrization(module, "weight", _FakeQuantFolded(b, bn))
            if freeze_bn:
                handle._bn_training[bn] = bn.training
                handle._hooks.append(bn.register_forward_pre_hook(_freeze_bn_hook))
                bn.training = False
        else:
            parametrize.register_parametrization(module, "weight", _FakeQuantWeight(b))
        handle.layers.append(_QATLayer(name, module, b, bn, order))
    return handle


def disable_qat_(model: nn.Module, handle: QATHandle) -> nn.Module:
    """Same as handle.bake_()."""
    if handle.model is not model:
        raise ValueError("the handle belongs to another model")
    return handle.bake_()




@dataclass(frozen=True)
class QAT:
    """A fine-tune wrapper (training.plan.TrainPlan.wrappers): for the length of the
    fine-tune every layer that `quantize` (a QuantizeConfig) quantizes has its weights
    fake-quantized at its bit width; the handle's bake_() writes the deployable weights.
    BatchNorm keeps training by default: freezing it cost accuracy on the demo
    (experiments/qat_vs_ptq.py); the grid follows the running statistics."""

    quantize: Any
    freeze_bn: bool = False

    def begin(self, model: nn.Module, example_input: torch.Tensor) -> QATHandle:
        return enable_qat_(model, example_input, layer_bits(model, example_input, self.quantize), freeze_bn=self.freeze_bn)


__all__ = ["QAT", "QATHandle", "disable_qat_", "enable_qat_", "fake_quant", "layer_bits", "quant_params", "quantize_to_int", "quantized_layers"]
