"""matmul: quantization of the MatMul nodes of transformer graphs with ONNX Runtime's tools
(export.matmul), on the exported file, without calibration: int8 dynamic quantization
('dynamic': int8 weights, activations quantized per run) or 4-bit weight-only quantization
('int4_wo': MatMulNBits, blocks of 32, 64 or 128 input rows, accuracy level 0 or 4).

What it acts on: MatMul nodes with a weight initializer, which is what a torch Linear on an
input of more than 2 dimensions exports as (a transformer's projections and MLP layers).
Attention's activation x activation MatMuls, Gemm nodes (a Linear on 2-D inputs: a
classifier head, a pooler) and embeddings stay float; see export/matmul.py.

One method per candidate: static quantization (`quantize`) quantizes MatMuls too, so a
candidate whose `quantize` config is active gets no MatMul quantization (nothing sampled).
The space is bound to the user's model: one forward pass with hooks on its Linear layers;
a model none of whose Linear layers runs on an input of more than 2 dimensions (the
convolutional demo) has nothing here, and the section is fixed to its off value (nothing
sampled, no hand recipe, no climb move), so its trials are what they were without it.
Without a `matmul` section nothing is quantized here.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as _replace
from typing import Any, Mapping

from autocompress.errors import ConfigError
from autocompress.schema import Fixed, Key, Range, values_of
from autocompress.techniques._registry import Move, Spec, Technique, register_technique

METHODS = ("none", "dynamic", "int4_wo")
BLOCK_SIZES = (32, 64, 128)
ACCURACY_LEVELS = (0, 4)
# The methods each execution provider runs (the profile's first provider). The CPU EP runs
# MatMulInteger / DynamicQuantizeLinear and com.microsoft MatMulNBits (ONNX Runtime 1.32).
# The CUDA EP's kernels for them were not checked on a GPU: held to 'none', as quantize
# holds it to fp32 (hardware.SUPPORTED_BITS).
SUPPORTED_METHODS: dict[str, tuple[str, ...]] = {"CPUExecutionProvider": METHODS}


@dataclass(frozen=True)
class MatMulQuantConfig:
    """MatMul quantization of the exported graph. method 'none' leaves it as it is;
    'dynamic': int8 weights, uint8 activations quantized per run (`reduce_range`: 7-bit
    weights, for CPUs without VNNI); 'int4_wo': 4-bit symmetric weights in blocks of
    `block_size` input rows, run by MatMulNBits at `accuracy_level` (0: float compute; 4:
    int8 compute)."""

    method: str = "none"
    reduce_range: bool = False  # dynamic only
    block_size: int = 32  # int4_wo only
    accuracy_level: int = 0  # int4_wo only

    @property
    def active(self) -> bool:
        return self.method != "none"


def _three_d_linears(model: Any, example_input: Any) -> list[str]:
    """Names of the Linear modules that run on an input of more than 2 dimensions in one
    forward pass on `example_input` (they export as MatMul with a weight; on 2-D as Gemm)."""
    import torch

    from autocompress.transforms.order import hooked, run_once

    names = {id(m): n for n, m in model.named_modules()}
    found: dict[str, None] = {}

    def hook(mod, inputs, output) -> None:
        x = inputs[0] if inputs else None
        if isinstance(x, torch.Tensor) and x.dim() > 2:
            found.setdefault(names.get(id(mod), type(mod).__name__))

    with hooked((m for m in model.modules() if isinstance(m, torch.nn.Linear)), hook):
        run_once(model, example_input)
    return list(found)


@register_technique("matmul", stage="graph", order=20)
class MatMulQuant(Technique):
    Config = MatMulQuantConfig
    off = MatMulQuantConfig()
    schema = {
        "method": Key(str, "none", allowed=METHODS),
        "reduce_range": Key(bool, False),
        "block_size": Key(int, 32, 32, 128),  # one of BLOCK_SIZES (check)
        "accuracy_level": Key(int, 0, 0, 4),  # one of ACCURACY_LEVELS (check)
    }
    switch = "method"
    needs = ("quantize",)
    binds_to_model = True
    conformance = "transformer"

    def check(self, spec: Spec) -> None:
        for key, allowed in (("block_size", BLOCK_SIZES), ("accuracy_level", ACCURACY_LEVELS)):
            param = spec.params[key]
            if isinstance(param, Range):
                raise ConfigError(f"matmul.{key} takes a value or a list of choices from {list(allowed)}, not a range")
            bad = sorted(values_of(param) - set(allowed))
            if bad:
                raise ConfigError(f"matmul.{key} must be one of {list(allowed)}, got {bad[0]!r}")

    def check_profile(self, spec: Spec, profile: Any) -> None:
        """Every method the space may choose must run on the profile's execution provider."""
        allowed = SUPPORTED_METHODS.get(profile.providers[0], ("none",))
        for method in sorted(values_of(spec.params["method"]) - set(allowed)):
            raise ConfigError(f"matmul.method {method!r} is not run by {profile.providers[0]} (profile {profile.name!r}); "
                              f"allowed there: {list(allowed)}")

    def bind(self, spec: Spec, model: Any, example_input: Any) -> tuple[Spec, list[str]]:
        """Searched only where some Linear runs on an input of more than 2 dimensions (one
        forward pass with hooks; `extra` holds their names); elsewhere every key is fixed to
        its off value, with a note. Before binding nothing is sampled."""
        if values_of(spec.params["method"]) <= {"none"}:
            return spec, []  # no section, or switched off: nothing to find
        linears = _three_d_linears(model, example_input)
        if not linears:
            off = _replace(spec, params={key: Fixed(k.default) for key, k in self.schema.items()}, extra=())
            return off, ["matmul: no Linear layer of the model runs on an input of more than 2 dimensions (those export as "
                         "MatMul nodes with a weight; a Linear on 2-D inputs is a Gemm, left float); MatMul quantization is not searched"]
        methods = [m for m in METHODS if m != "none" and spec.params["method"].contains(m)]
        return _replace(spec, extra=tuple(linears)), [
            f"matmul: {len(linears)} Linear layers run on inputs of more than 2 dimensions (MatMul nodes with a weight); "
            f"MatMul quantization ({', '.join(methods)}) is searched when quantize is off"]

    def suggest(self, trial, spec: Spec, chosen: Mapping[str, Any]) -> MatMulQuantConfig:
        if not self.bound(spec) or chosen["quantize"].active:  # static quantization quantizes MatMuls already: one method per candidate
            return self.off
        method = spec.get(trial, "method")
        if method == "dynamic":
            return MatMulQuantConfig("dynamic", reduce_range=bool(spec.get(trial, "reduce_range")))
        if method == "int4_wo":
            return MatMulQuantConfig("int4_wo", block_size=int(spec.get(trial, "block_size")),
                                     accuracy_level=int(spec.get(trial, "accuracy_level")))
        return self.off

    def stronger(self, spec: Spec, params: Mapping[str, Any], *, scale: float = 1.0) -> list[Move]:
        """none -> int8 dynamic, when the space has it and the trial quantizes nothing
        statically (no finer step). int4 weight-only is left to the sampler: it buys size,
        and on the CPUs we measured it is no faster than float at a sequence of 64."""
        method = spec.params["method"]
        if not self.bound(spec) or scale < 1 or isinstance(method, Fixed) or not method.contains("dynamic"):
            return []
        if params.get("matmul.method", "none") != "none" or any(k.startswith("quantize.mode") and v != "fp32" for k, v in params.items()):
            return []  # already quantized here, or statically (then nothing is sampled here)
        return [Move("int8 dynamic MatMuls", {"matmul.method": "dynamic"}, True)]

    def label(self, cfg: MatMulQuantConfig, candidate) -> str:
        if cfg.method == "dynamic":
            return "dyn8" + (" rr" if cfg.reduce_range else "")
        if cfg.method == "int4_wo":
            return f"w4 b{cfg.block_size}" + (f" a{cfg.accuracy_level}" if cfg.accuracy_level else "")
        return ""

    def code(self, cfg: MatMulQuantConfig, candidate) -> str:
        """'dyn8', 'dyn8_rr' (7-bit weights); 'w4b32', 'w4b32_a4' (int8 compute)."""
        if cfg.method == "dynamic":
            return "dyn8" + ("_rr" if cfg.reduce_range else "")
        if cfg.method == "int4_wo":
            return f"w4b{cfg.block_size}" + (f"_a{cfg.accuracy_level}" if cfg.accuracy_level else "")
        return ""

    def explain(self, cfg: MatMulQuantConfig, candidate) -> str:
        if cfg.method == "dynamic":
            return ("int8 dynamic quantization of the MatMul weights (activations quantized at run time"
                    + (", 7-bit weights" if cfg.reduce_range else "") + ")")
        if cfg.method == "int4_wo":
            return (f"4-bit weight-only quantization of the MatMul weights (blocks of {cfg.block_size}, "
                    + ("int8 compute" if cfg.accuracy_level == 4 else "float compute") + ")")
        return ""

    def apply(self, path, cfg: MatMulQuantConfig, ctx):
        """Quantize the ONNX file at `path` into ctx.dst."""
        from autocompress.export.matmul import quantize_matmul_dynamic, quantize_matmul_int4

        if cfg.method == "dynamic":
            return quantize_matmul_dynamic(path, ctx.dst, reduce_range=cfg.reduce_range).path
        if cfg.method == "int4_wo":
            return quantize_matmul_int4(path, ctx.dst, block_size=cfg.block_size, accuracy_level=cfg.accuracy_level).path
        raise ValueError(f"matmul.method must be one of {METHODS}, got {cfg.method!r}")

    def examples(self) -> list[MatMulQuantConfig]:
        """For the conformance suite's TinyEncoder (16 input features, width 32, MLP 64): at
        block 32 all but the 16-feature embedding are quantized, at block 64 the MLPs' second layers."""
        return [MatMulQuantConfig(), MatMulQuantConfig("dynamic"), MatMulQuantConfig("dynamic", reduce_range=True),
                MatMulQuantConfig("int4_wo", block_size=32), MatMulQuantConfig("int4_wo", block_size=64, accuracy_level=4)]
