"""A per-device latency table and a predictor built from it (the nn-Meter idea, with our own
measurement protocol).

A model of a few hundred microseconds is not the sum of its layers timed alone (an earlier
table that did so got 20% of a demo run's candidates within ±10%): ONNX Runtime fuses and
re-lays-out the graph, and every node's dispatch counts. So the table's unit is a node of
ORT's optimized graph (evaluation.graph_profile.GraphNode: operator, attributes, shapes,
element types), and its entry is that node's kernel time *inside* whole sampled candidates,
as a ratio to the teacher's summed kernel time timed interleaved with it (absolute times
drift; ratios do not). A candidate's latency ratio to the teacher is then predicted as

    a * (sum of its nodes' entries) + b * (number of nodes) + c

with a, b, c fitted (least squares on relative error) on the sampled candidates' measured
ratios: b absorbs the profiler's own per-node cost and the dispatch between nodes. A node
configuration missing from the table is estimated from its family (same operator, input
type, kernel, stride, depthwise or not): a power law in its size (multiply-accumulates, or
elements), exponent between 0 and 1, fitted on the family's entries (else the operator's,
else the median entry).

`LayerConfig` / `layer_configs` describe a torch model's Conv2d / Linear layers for the
FLOPs (multiply-accumulates) proxy the audit reports next to the predictor. Everything here
is pure except `layer_configs` (which runs the torch model once with hooks).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from autocompress.evaluation.graph_profile import GraphNode

TABLE_VERSION = 3


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
    def macs(self) -> int:
        if self.kind == "linear":
            return self.cin * self.cout
        ho = (self.hw[0] + 2 * (self.kernel[0] // 2) - self.kernel[0]) // self.stride[0] + 1
        wo = (self.hw[1] + 2 * (self.kernel[1] // 2) - self.kernel[1]) // self.stride[1] + 1
        return self.cout * (self.cin // self.groups) * self.kernel[0] * self.kernel[1] * max(ho, 1) * max(wo, 1)


@dataclass
class LatencyTable:
    """Node entries (kernel time in context / the teacher's summed kernel time) for one
    hardware profile, and the fitted combination (a, b, c)."""

    profile: str
    profile_fingerprint: str
    entries: dict[str, float]  # GraphNode.key -> units
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> GraphNode.to_dict()
    combine: tuple[float, float, float] = (1.0, 0.0, 0.0)  # a, b, c
    teacher_ms: float = float("nan")  # the teacher's median when the table was made (display only)
    fit: dict[str, Any] = field(default_factory=dict)  # how it was made (samples, in-sample accuracy)

    def save(self, path: str | Path) -> None:
        from autocompress.atomic import write_text_atomic

        d = asdict(self)
        d["version"] = TABLE_VERSION
        d["combine"] = list(self.combine)
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
        d["combine"] = tuple(d.get("combine", (1.0, 0.0, 0.0)))
        return cls(**d)

    @classmethod
    def from_samples(cls, profile, samples: Sequence[tuple[Sequence[GraphNode], Sequence[float], float]], *,
                     teacher_ms: float = float("nan"), fit: dict[str, Any] | None = None) -> "LatencyTable":
        """The table from sampled models: (nodes, each node's units, measured latency ratio to
        the teacher) each (the teacher itself among them, ratio 1). Entries: the median of a
        key's units over the samples; (a, b, c) fitted on the samples' measured ratios. Pure."""
        units: dict[str, list[float]] = {}
        nodes: dict[str, dict[str, Any]] = {}
        for sample_nodes, sample_units, _ in samples:
            for node, u in zip(sample_nodes, sample_units):
                units.setdefault(node.key, []).append(float(u))
                nodes[node.key] = node.to_dict()
        table = cls(profile.name, profile.fingerprint, {k: float(np.median(v)) for k, v in units.items()}, nodes,
                    teacher_ms=teacher_ms, fit=dict(fit or {}))
        sums = [float(np.sum(u)) for _, u, _ in samples]
        table.combine = fit_combination(sums, [len(n) for n, _, _ in samples], [r for _, _, r in samples])
        return table

    # ---- prediction
    @cached_property
    def _fits(self) -> dict[tuple[str, str], tuple[float, float]]:
        """("family" | "op", name) -> (k, e) of units = k * size ** e, least squares in logs
        with 0 <= e <= 1 (a node never costs less when larger, nor more than in proportion),
        over that family's (or operator's) entries; one entry, or one size: e = 0."""
        groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for key, d in self.nodes.items():
            point = (max(float(d["size"]), 1.0), max(self.entries[key], 1e-9))
            groups.setdefault(("family", d["family"]), []).append(point)
            groups.setdefault(("op", d["op"]), []).append(point)
        fits = {}
        for name, pts in groups.items():
            x, y = (np.log(np.array(v, dtype=float)) for v in zip(*pts))
            e = 0.0
            if len(set(x)) >= 2:
                e = float(np.clip(np.polyfit(x, y, 1)[0], 0.0, 1.0))
            fits[name] = (float(np.exp(np.mean(y - e * x))), e)
        return fits

    @cached_property
    def _median_entry(self) -> float:
        return float(np.median(list(self.entries.values()))) if self.entries else float("nan")

    def node_units(self, node: GraphNode) -> tuple[float, bool]:
        """(entry for `node`, True) if in the table, else (an estimate, False): a power law in
        size fitted on its family's entries, else on its operator's, else the median entry."""
        if node.key in self.entries:
            return self.entries[node.key], True
        fit = self._fits.get(("family", node.family)) or self._fits.get(("op", node.op))
        if fit is None:
            return self._median_entry, False
        k, e = fit
        return k * max(node.size, 1.0) ** e, False

    def predict_ratio(self, nodes: Sequence[GraphNode]) -> tuple[float, int]:
        """(predicted latency ratio to the teacher, nodes estimated rather than looked up)."""
        total, missing = 0.0, 0
        for node in nodes:
            units, hit = self.node_units(node)
            total += units
            missing += not hit
        a, b, c = self.combine
        return a * total + b * len(nodes) + c, missing


def fit_combination(sums: Sequence[float], counts: Sequence[int], measured: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares (a, b, c) in measured = a * sum + b * count + c, on relative errors
    (each sample weighted by 1 / measured, so small and large models count alike); with
    fewer than three samples, (measured / sum, 0, 0) in the mean. Pure."""
    s, n, m = (np.asarray(v, dtype=float) for v in (sums, counts, measured))
    if len(m) == 0:
        return 1.0, 0.0, 0.0
    if len(m) < 3 or len(set(n)) < 2:
        return float(np.mean(m / s)), 0.0, 0.0
    w = 1.0 / m
    coef, *_ = np.linalg.lstsq(np.column_stack([s, n, np.ones_like(s)]) * w[:, None], m * w, rcond=None)
    return float(coef[0]), float(coef[1]), float(coef[2])


def layer_configs(model, example_input, quantize_cfg) -> list[LayerConfig]:
    """The Conv2d / Linear layers of `model` as they run on `example_input` (one sample's
    batch), with the bit width and format `quantize_cfg` gives each."""
    from torch import nn

    from autocompress.data import structure as st
    from autocompress.training.qat import layer_bits
    from autocompress.transforms.order import hooked, run_once

    bits = layer_bits(model, example_input, quantize_cfg)
    shapes: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
    name_of = {id(modules[name]): name for name in bits}

    def hook(mod, args) -> None:  # a pre-hook returning something would replace the inputs
        shapes.setdefault(name_of[id(mod)], tuple(args[0].shape))

    with hooked((modules[name] for name in bits), hook, pre=True):
        run_once(model.eval(), st.take(example_input, slice(0, 1)))
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
    from types import SimpleNamespace

    every_layer_float = SimpleNamespace(mode="fp32", segment_bits=None, active=False, format=None, activations=None)
    return sum(l.macs for l in layer_configs(model, example_input, every_layer_float))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties). Pure."""
    import pandas as pd

    return float(pd.Series(list(a)).corr(pd.Series(list(b)), method="spearman"))


def within(predicted: Sequence[float], measured: Sequence[float], tol: float = 0.10) -> float:
    """Share of predictions within ±tol of the measured value (relative). Pure."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    return float(np.mean(np.abs(p / m - 1.0) <= tol)) if len(m) else float("nan")


__all__ = ["LatencyTable", "LayerConfig", "fit_combination", "layer_configs", "model_macs", "spearman", "within"]
