"""quantize: static quantization of the exported graph with ONNX Runtime's tools
(export.quantize): a weight bit width per segment of layers (fp32: left float; int8
per-channel; int4), int8 or uint8 activations, QDQ or QOperator format, MinMax, entropy or
percentile calibration on training samples. 4-bit weights need QDQ."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from autocompress.errors import ConfigError
from autocompress.names import BITS
from autocompress.schema import Key, values_of
from autocompress.techniques._registry import Move, Spec, Technique, code_values, format_values, register_technique, segment_moves


@dataclass(frozen=True)
class QuantizeConfig:
    """Post-export quantization with ONNX Runtime. mode 'fp32' leaves the model as is."""

    mode: str = "fp32"  # 'fp32' | 'int8' | 'int4' (weights), for every quantizable layer ...
    activations: Optional[str] = None  # 'int8' | 'uint8' (when anything is quantized)
    format: Optional[str] = None  # 'qdq' | 'qoperator' (int4 weights need 'qdq')
    calibration: str = "minmax"  # 'minmax' | 'entropy' | 'percentile'
    segment_bits: Optional[tuple[str, ...]] = None  # ... unless given per segment of layers

    @property
    def active(self) -> bool:
        return any(b != "fp32" for b in (self.segment_bits or (self.mode,)))


@register_technique("quantize", stage="graph", order=10)
class Quantize(Technique):
    Config = QuantizeConfig
    off = QuantizeConfig()
    schema = {
        "mode": Key(str, "fp32", allowed=BITS),  # weight bit width
        "activations": Key(str, "uint8", allowed=("int8", "uint8")),
        "format": Key(str, "qoperator", allowed=("qdq", "qoperator")),
        "calibration": Key(str, "minmax", allowed=("minmax", "entropy", "percentile")),
    }
    segmented = "mode"
    switch = "mode"
    in_every_id = True

    def check(self, spec: Spec) -> None:
        bits, fmt = spec.params["mode"], spec.params["format"]
        if values_of(bits) & {"int4"} and "qdq" not in values_of(fmt):
            raise ConfigError(f"quantize.mode allows int4, whose 4-bit weights need quantize.format qdq, but format allows only "
                              f"{sorted(values_of(fmt))}")

    def check_profile(self, spec: Spec, profile: Any) -> None:
        """Every bit width the space may choose must run on the profile's execution
        provider: refused, not silently changed."""
        from autocompress.hardware import supported_bits

        allowed = supported_bits(profile)
        for bits in sorted(values_of(spec.params["mode"]) - set(allowed)):
            raise ConfigError(f"quantize.mode {bits!r} is not run by {profile.providers[0]} (profile {profile.name!r}); "
                              f"allowed there: {list(allowed)}")

    def suggest(self, trial, spec: Spec, chosen: Mapping[str, Any]) -> QuantizeConfig:
        mode, bits = spec.get_segmented(trial, "mode")
        cfg = QuantizeConfig(mode=mode or "fp32", segment_bits=bits)
        if not cfg.active:  # activation type, format and calibration do not matter
            return QuantizeConfig()
        fmt = "qdq" if "int4" in set(bits or (mode,)) else spec.get(trial, "format")
        return QuantizeConfig(mode=cfg.mode, activations=spec.get(trial, "activations"), format=fmt,
                              calibration=spec.get(trial, "calibration"), segment_bits=bits)

    def stronger(self, spec: Spec, params: Mapping[str, Any], *, scale: float = 1.0) -> list[Move]:
        """fp32 -> int8 weights, every segment, then each alone. int4 is left to the sampler:
        4-bit weights buy size, and on CPUs run slower than int8 (QDQ, dequantized)."""
        return segment_moves(spec, "mode", params, up=True, ladder=("fp32", "int8"), what="int8 weights", unset="fp32", scale=scale)

    def label(self, cfg: QuantizeConfig, candidate) -> str:
        if not cfg.active:
            return "fp32"
        fmt = {"qoperator": "qop", "qdq": "qdq"}.get(cfg.format or "", cfg.format)
        label = f"{format_values(cfg.mode, cfg.segment_bits)} {fmt}/{'u8' if cfg.activations == 'uint8' else 's8'}"
        return label + ("" if cfg.calibration == "minmax" else f" {cfg.calibration}")

    def code(self, cfg: QuantizeConfig, candidate) -> str:
        """'q8', 'q88f_qdq_s8_ent': weight bits per segment (8, 4, f: float), then QDQ (int4
        is always QDQ), signed activations, the calibration unless MinMax."""
        if not cfg.active:
            return ""
        bits = [{"fp32": "f", "int8": "8", "int4": "4"}.get(b, b) for b in (cfg.segment_bits or (cfg.mode,))]
        text = bits[0] if len(set(bits)) == 1 else ("" if all(len(b) == 1 for b in bits) else ",").join(bits)
        return (f"q{text}" + ("_qdq" if cfg.format == "qdq" and "4" not in bits else "") + ("_s8" if cfg.activations == "int8" else "")
                + {"minmax": "", "entropy": "_ent", "percentile": "_pct"}.get(cfg.calibration, f"_{cfg.calibration}"))

    def explain(self, cfg: QuantizeConfig, candidate) -> str:
        if not cfg.active:
            return "float weights"
        bits = cfg.mode if cfg.segment_bits is None else "/".join(cfg.segment_bits) + " by segment"
        return f"{bits} weights, {cfg.activations} activations ({cfg.format}, {cfg.calibration} calibration)"

    def apply(self, path, cfg: QuantizeConfig, ctx):
        """Quantize the ONNX file at `path` into ctx.dst."""
        from autocompress.export import quantize_onnx

        return quantize_onnx(path, ctx.dst, ctx.calibration, cfg).path

    def examples(self) -> list[QuantizeConfig]:
        return [QuantizeConfig(), QuantizeConfig("int8", "uint8", "qoperator"), QuantizeConfig("int8", "int8", "qdq", "entropy"),
                QuantizeConfig(activations="uint8", format="qdq", segment_bits=("int4", "fp32", "int8"))]
