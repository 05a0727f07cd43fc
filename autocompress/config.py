"""Candidate configuration: frozen data only. A CandidateConfig holds one config per
registered technique (autocompress.techniques), its off value where the candidate does not
use it, in pipeline order. Behaviour lives in the techniques and the layers they call."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterator

from autocompress.techniques import pipeline_order, technique
from autocompress.techniques.blocks import BlockConfig
from autocompress.techniques.distill import DistillConfig
from autocompress.techniques.finetune import FinetuneConfig
from autocompress.techniques.fuse import FuseConfig
from autocompress.techniques.heads import HeadPruneConfig
from autocompress.techniques.layers import LayerDropConfig
from autocompress.techniques.lowrank import LowRankConfig
from autocompress.techniques.matmul import MatMulQuantConfig
from autocompress.techniques.mlp import MlpPruneConfig
from autocompress.techniques.prune import PruneConfig
from autocompress.techniques.quantize import QuantizeConfig


class CandidateConfig:
    """One point of the search space: what to do to the teacher, technique by technique.

    CandidateConfig(prune=PruneConfig(0.5), quantize=QuantizeConfig("int8", ...)): every
    technique not given is off. `cfg.prune` (or `cfg["prune"]`) is a technique's config;
    `replace(**changes)` returns a changed copy."""

    __slots__ = ("_items",)

    def __init__(self, **configs: Any):
        order = pipeline_order()
        unknown = sorted(set(configs) - {t.name for t in order})
        if unknown:
            raise TypeError(f"CandidateConfig got unknown technique(s) {unknown}; registered: {[t.name for t in order]}")
        object.__setattr__(self, "_items", tuple((t.name, configs[t.name] if t.name in configs else t.off) for t in order))

    # ---- access
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        for key, cfg in self._items:
            if key == name:
                return cfg
        try:  # registered after this config was made: the candidate does not use it
            return technique(name).off
        except ValueError:
            raise AttributeError(f"CandidateConfig has no technique {name!r}") from None

    def __getitem__(self, name: str) -> Any:
        try:
            return self.__getattr__(name)
        except AttributeError:
            raise KeyError(name) from None

    def items(self) -> Iterator[tuple[str, Any]]:
        """(technique name, its config) in pipeline order."""
        return iter(self._items)

    def replace(self, **changes: Any) -> "CandidateConfig":
        return CandidateConfig(**{**dict(self._items), **changes})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("CandidateConfig is frozen; use .replace(...)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CandidateConfig) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __reduce__(self):
        return (_from_items, (self._items,))

    def __repr__(self) -> str:
        return "CandidateConfig(" + ", ".join(f"{k}={v!r}" for k, v in self._items) + ")"

    # ---- identity and labels
    def to_dict(self) -> dict[str, Any]:
        """{technique: its config as plain data}: the techniques of the first release always,
        any later one where the candidate uses it (see Technique.in_every_id)."""
        out = {}
        for name, cfg in self._items:
            t = technique(name)
            if t.in_every_id or t.is_active(cfg):
                out[name] = t.to_dict(cfg)
        return out

    def canonical(self) -> "CandidateConfig":
        """The same config with every field in its declared type (0 -> 0.0 for ratios)."""
        return _from_items(tuple((name, technique(name).canonical(cfg)) for name, cfg in self._items))

    @property
    def id(self) -> str:
        """Content hash of the config: equal configs get equal ids."""
        blob = json.dumps(self.canonical().to_dict(), sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def float_id(self) -> str:
        """Content hash of what the candidate is before its file is exported: the config
        without the "graph" techniques (quantization). Candidates that differ only there
        share their fine-tuned float model (pipeline.FloatCache)."""
        graph = {t.name for t in pipeline_order("graph")}
        blob = json.dumps({k: v for k, v in self.canonical().to_dict().items() if k not in graph}, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    def describe(self) -> str:
        """A short label, e.g. 'prune 0.5 l1 · rank 0.5 · kd 100 a=0.5 T=4 · int8 qop/u8':
        each technique's compact code in pipeline order; per-segment values in brackets."""
        labels = (technique(name).label(cfg, self) for name, cfg in self._items)
        return " · ".join(label for label in labels if label)

    def explain(self) -> str:
        """The same in words, e.g. 'structured pruning of 50% of the channels, ranked by L1
        weight magnitude; 100 fine-tune steps ...'."""
        parts = (technique(name).explain(cfg, self) for name, cfg in self._items)
        return "; ".join(p for p in parts if p)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CandidateConfig":
        """From to_dict()'s output; a technique missing from `data` is off."""
        return _from_items(tuple((t.name, t.from_dict(data.get(t.name))) for t in pipeline_order()))


def _from_items(items: tuple[tuple[str, Any], ...]) -> CandidateConfig:
    cfg = object.__new__(CandidateConfig)
    object.__setattr__(cfg, "_items", tuple(items))
    return cfg


__all__ = ["BlockConfig", "CandidateConfig", "DistillConfig", "FinetuneConfig", "FuseConfig", "HeadPruneConfig", "LayerDropConfig", "LowRankConfig", "MatMulQuantConfig", "MlpPruneConfig", "PruneConfig", "QuantizeConfig"]
