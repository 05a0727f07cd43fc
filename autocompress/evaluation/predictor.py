"""A per-device latency table and a predictor built from it (the nn-Meter idea, with our own
measurement protocol).

The table holds, for every layer configuration the search produces (Conv / depthwise Conv /
Linear with its shapes, bit width and quantization format), the latency of that layer alone
as a ratio to a fixed reference layer timed interleaved with it on the device (absolute
times drift; ratios do not). It also holds the teacher's latency in the same unit and a
per-graph overhead fitted on whole candidates measured while the table was made:

    predicted candidate latency (reference-layer units) = sum of its layers' entries
                                                          + c0 + c1 * (number of layers)
    predicted ratio to the teacher = that / the teacher's latency in the same units

A layer configuration missing from the table is estimated from the nearest entry of the
same kind, bit width and format, scaled by multiply-accumulates. Everything here is pure
except `time_layers` (which measures with ONNX Runtime) and `layer_configs` (which runs the
torch model once with hooks).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

TABLE_VERSION = 1


@dataclass(frozen=True)
class LayerConfig:
    """One Conv2d or Linear as it runs in a candidate: shapes, bit width, format."""

    kind: str  # "conv" | "linear"
    cin: int
    cout: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    groups: int = 1
    hw: tuple[int, int] = (1, 1)  # input height, width (conv)
    bits: str = "fp32"
    fmt: str = ""  # "qoperator" | "qdq" when quantized
    activations: str = ""  # "uint8" | "int8" when quantized

    @property
    def key(self) -> str:
        q = f"{self.bits}/{self.fmt}/{self.activations}" if self.bits != "fp32" else "fp32"
        if self.kind == "linear":
            return f"linear {self.cin}->{self.cout} {q}"
        return (f"conv {self.cin}->{self.cout} k{self.kernel[0]}x{self.kernel[1]} s{self.stride[0]}x{self.stride[1]} "
                f"g{self.groups} @{self.hw[0]}x{self.hw[1]} {q}")

    @property
    def family(self) -> tuple:
        """What must match for one entry to stand in for another (scaled by MACs)."""
        depthwise = self.kind == "conv" and self.groups == self.cin and self.groups > 1
        return (self.kind, depthwise, self.kernel, self.bits, self.fmt, self.activations)

    @property
    def macs(self) -> int:
        if self.kind == "linear":
            return self.cin * self.cout
        ho = (self.hw[0] + 2 * (self.kernel[0] // 2) - self.kernel[0]) // self.stride[0] + 1
        wo = (self.hw[1] + 2 * (self.kernel[1] // 2) - self.kernel[1]) // self.stride[1] + 1
        return self.cout * (self.cin // self.groups) * self.kernel[0] * self.kernel[1] * max(ho, 1) * max(wo, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


REFERENCE_LAYER = LayerConfig("conv", 32, 32, (3, 3), (1, 1), 1, (16, 16))


@dataclass
class LatencyTable:
    """Layer entries (ratio to the reference layer) for one hardware profile."""

    profile: str
    profile_fingerprint: str
    entries: dict[str, float]  # LayerConfig.key -> latency / reference layer latency
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> LayerConfig.to_dict()
    teacher_units: float = float("nan")  # the teacher's latency in reference-layer units
    reference_ms: float = float("nan")  # the reference layer's median when the table was made (display only)
    overhead: tuple[float, float] = (0.0, 0.0)  # c0, c1 (per layer)
    reference: str = REFERENCE_LAYER.key
    fit: dict[str, Any] = field(default_factory=dict)  # how the overhead was fitted (samples, residuals)

    def save(self, path: str | Path) -> None:
        from autocompress.run import write_text_atomic

        d = asdict(self)
        d["version"] = TABLE_VERSION
        d["overhead"] = list(self.overhead)
        write_text_atomic(Path(path), json.dumps(d, indent=1) + "\n")

    @classmethod
    def load_for(cls, path: str | Path, profile_name: str, profile_fingerprint: str) -> "LatencyTable":
        """load(), refused (ConfigError) when the table was made under another profile."""
        from autocompress.errors import ConfigError

        table = cls.load(path)
        if table.profile_fingerprint != profile_fingerprint:
            raise ConfigError(f"--table {path} was made for profile {table.profile!r} ({table.profile_fingerprint}); this run uses "
                              f"{profile_name!r} ({profile_fingerprint}): make one with autocompress profile-device --profile {profile_name}")
        return table

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        from autocompress.errors import ConfigError

        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"--table: no such file {str(path)!r}") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--table {path}: not a latency table ({type(exc).__name__})") from None
        if not isinstance(d, dict) or d.get("version") != TABLE_VERSION or not isinstance(d.get("entries"), dict):
            raise ConfigError(f"--table {path}: not a latency table of version {TABLE_VERSION} (make one with autocompress profile-device)")
        d.pop("version")
        d["overhead"] = tuple(d.get("overhead", (0.0, 0.0)))
        return cls(**d)

    # ---- prediction
    @cached_property
    def _families(self) -> dict[tuple, list[tuple[int, float]]]:
        """Layer family -> (MACs, units) of its entries (parsed once per table)."""
        groups: dict[tuple, list[tuple[int, float]]] = {}
        for key, d in self.layers.items():
            layer = LayerConfig.from_dict(d)
            if layer.macs > 0:
                groups.setdefault(layer.family, []).append((layer.macs, self.entries[key]))
        return groups

    @cached_property
    def _family_lines(self) -> dict[tuple, tuple[float, float]]:
        """Per layer family with entries at two or more sizes: (a, b) of units = a + b *
        MACs, least squares (a: the layer's fixed cost, b >= 0)."""
        lines = {}
        for family, pts in self._families.items():
            x, y = (np.array(v, dtype=float) for v in zip(*pts))
            if len(set(x)) < 2:
                continue
            b, a = np.polyfit(x, y, 1)
            if b > 0:
                lines[family] = (float(a), float(b))
        return lines

    def layer_units(self, layer: LayerConfig) -> tuple[float, bool]:
        """(entry for `layer`, True) if in the table, else (False and) an estimate from its
        family: the family's affine fit in MACs when it has entries at several sizes,
        else the nearest entry scaled by MACs; nan when no entry is alike."""
        if layer.key in self.entries:
            return self.entries[layer.key], True
        line = self._family_lines.get(layer.family)
        if line is not None:
            a, b = line
            return max(a + b * layer.macs, 1e-6), False
        pts = self._families.get(layer.family)
        if not pts:
            return float("nan"), False
        macs, units = min(pts, key=lambda p: abs(np.log(layer.macs / p[0])))
        return units * layer.macs / macs, False

    def predict_units(self, layers: Sequence[LayerConfig]) -> tuple[float, int]:
        """(predicted latency in reference-layer units, how many layers were estimated)."""
        total, missing = 0.0, 0
        for layer in layers:
            units, hit = self.layer_units(layer)
            total += units
            missing += not hit
        c0, c1 = self.overhead
        return total + c0 + c1 * len(layers), missing

    def predict_ratio(self, layers: Sequence[LayerConfig]) -> tuple[float, int]:
        """(predicted latency ratio to the teacher, layers estimated)."""
        units, missing = self.predict_units(layers)
        return units / self.teacher_units, missing


def fit_overhead(layer_sums: Sequence[float], layer_counts: Sequence[int], measured_units: Sequence[float]) -> tuple[float, float]:
    """Least-squares (c0, c1) in measured = layer_sum + c0 + c1 * n_layers, fitted on
    relative errors (each sample weighted by 1 / measured), so small and large models
    count alike. Pure."""
    s, n, m = (np.asarray(v, dtype=float) for v in (layer_sums, layer_counts, measured_units))
    if len(m) == 0:
        return 0.0, 0.0
    w = 1.0 / m
    a = np.column_stack([np.ones_like(n), n]) * w[:, None]
    b = (m - s) * w
    if len(m) == 1:
        return float(m[0] - s[0]), 0.0
    (c0, c1), *_ = np.linalg.lstsq(a, b, rcond=None)
    return float(c0), float(c1)


def layer_configs(model, example_input, quantize_cfg) -> list[LayerConfig]:
    """The Conv2d / Linear layers of `model` as they run on `example_input` (one sample's
    batch), with the bit width and format `quantize_cfg` gives each."""
    import torch
    from torch import nn

    from autocompress.training.qat import layer_bits

    bits = layer_bits(model, example_input, quantize_cfg)
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    def record(name: str):
        def hook(mod, args) -> None:  # a pre-hook returning something would replace the inputs
            shapes.setdefault(name, tuple(args[0].shape))

        return hook

    for name, m in model.named_modules():
        if name in bits:
            hooks.append(m.register_forward_pre_hook(record(name)))
    try:
        with torch.no_grad():
            model.eval()(example_input[:1])
    finally:
        for h in hooks:
            h.remove()
    modules = dict(model.named_modules())
    out = []
    for name, b in bits.items():
        m, shape = modules[name], shapes.get(name)
        if shape is None:
            continue  # never ran
        q = {"bits": b, "fmt": quantize_cfg.format or "", "activations": quantize_cfg.activations or ""} if b != "fp32" else {}
        if b == "int4":
            q["fmt"] = "qdq"
        if isinstance(m, nn.Linear):
            out.append(LayerConfig("linear", m.in_features, m.out_features, **q))
        elif isinstance(m, nn.Conv2d):
            out.append(LayerConfig("conv", m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.stride), m.groups,
                                   (int(shape[-2]), int(shape[-1])), **q))
    return out


def model_macs(model, example_input) -> int:
    """Multiply-accumulates of the model's Conv2d / Linear layers for one sample."""
    from autocompress.config import QuantizeConfig

    return sum(l.macs for l in layer_configs(model, example_input, QuantizeConfig()))


def single_layer_module(layer: LayerConfig):
    """(torch module, one sample's input shape) computing just `layer`."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if layer.kind == "linear":
        return nn.Linear(layer.cin, layer.cout).eval(), (layer.cin,)
    pad = (layer.kernel[0] // 2, layer.kernel[1] // 2)
    conv = nn.Conv2d(layer.cin, layer.cout, layer.kernel, layer.stride, pad, groups=layer.groups)
    return conv.eval(), (layer.cin, *layer.hw)


def export_layer(layer: LayerConfig, path: Path) -> Path:
    """The layer alone as an ONNX file, quantized as it would be in a candidate."""
    import torch

    from autocompress.config import QuantizeConfig
    from autocompress.export import export_onnx, quantize_onnx

    module, shape = single_layer_module(layer)
    if layer.bits == "fp32":
        return export_onnx(module, shape, path)
    fp32 = export_onnx(module, shape, path.with_suffix(".fp32.onnx"))
    calib = torch.randn(16, *shape, generator=torch.Generator().manual_seed(0)).numpy()
    quantize_onnx(fp32, path, calib, QuantizeConfig(layer.bits, layer.activations, layer.fmt, "minmax"))
    fp32.unlink()
    return path


def time_layers(layers: Iterable[LayerConfig], profile, workdir: Path, *, progress=lambda s: None) -> dict[str, float]:
    """key -> latency of the layer alone / the reference layer's, each timed interleaved
    with the reference layer under `profile` (in a LatencyWorker process)."""
    from autocompress.evaluation.latency import LatencyWorker

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ref = export_layer(REFERENCE_LAYER, workdir / "reference.onnx")
    _, ref_shape = single_layer_module(REFERENCE_LAYER)
    out: dict[str, float] = {}
    todo = list({l.key: l for l in layers}.values())
    with LatencyWorker(ref, profile, ref_shape) as worker:
        for i, layer in enumerate(todo):
            path = export_layer(layer, workdir / f"layer{i}.onnx")
            out[layer.key] = worker.measure(path, candidate_shape=single_layer_module(layer)[1]).ratio
            path.unlink()
            if (i + 1) % 20 == 0 or i + 1 == len(todo):
                progress(f"  timed {i + 1}/{len(todo)} layer configurations")
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties). Pure."""
    import pandas as pd

    return float(pd.Series(list(a)).corr(pd.Series(list(b)), method="spearman"))


def within(predicted: Sequence[float], measured: Sequence[float], tol: float = 0.10) -> float:
    """Share of predictions within ±tol of the measured value (relative). Pure."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    return float(np.mean(np.abs(p / m - 1.0) <= tol)) if len(m) else float("nan")


__all__ = ["LatencyTable", "LayerConfig", "REFERENCE_LAYER", "fit_overhead", "layer_configs", "spearman", "time_layers", "within"]
