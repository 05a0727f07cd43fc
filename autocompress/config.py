"""Candidate configuration: frozen data only. Behaviour lives in the transforms, training,
export and evaluation layers, which read these records."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional


@dataclass(frozen=True)
class PruneConfig:
    """Structured channel pruning with one global ratio (0 = keep every channel)."""

    ratio: float = 0.0


@dataclass(frozen=True)
class FinetuneConfig:
    """Distillation fine-tune length and optimiser settings (steps = 0: no fine-tune)."""

    steps: int = 0
    lr: float = 1e-3
    batch_size: int = 64


@dataclass(frozen=True)
class DistillConfig:
    """L = alpha * CE(student, y) + (1 - alpha) * T^2 * KL(teacher_T || student_T)."""

    alpha: float = 0.5
    temperature: float = 4.0


@dataclass(frozen=True)
class QuantizeConfig:
    """Post-export quantization with ONNX Runtime. mode 'fp32' leaves the model as is."""

    mode: str = "fp32"
    activations: Optional[str] = None  # 'int8' | 'uint8' (int8 mode only)
    format: Optional[str] = None  # 'qdq' | 'qoperator' (int8 mode only)


@dataclass(frozen=True)
class CandidateConfig:
    """One point of the search space: what to do to the teacher, in pipeline order."""

    prune: PruneConfig = field(default_factory=PruneConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    distill: Optional[DistillConfig] = None  # None when finetune.steps == 0
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def canonical(self) -> "CandidateConfig":
        """The same config with every field in its declared type (0 -> 0.0 for ratios)."""
        def fix(obj: Any) -> Any:
            if obj is None:
                return None
            kw = {}
            for f in fields(obj):
                v = getattr(obj, f.name)
                kw[f.name] = float(v) if f.type == "float" and v is not None else int(v) if f.type == "int" and v is not None else v
            return type(obj)(**kw)

        return CandidateConfig(fix(self.prune), fix(self.finetune), fix(self.distill), fix(self.quantize))

    @property
    def id(self) -> str:
        """Content hash of the config: equal configs get equal ids."""
        blob = json.dumps(self.canonical().to_dict(), sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    def describe(self) -> str:
        """A short human-readable label, e.g. 'prune 0.50 · kd 100 a=0.5 T=4 · int8 qop/u8'."""
        parts = [f"prune {self.prune.ratio:.2f}" if self.prune.ratio > 0 else "no prune"]
        if self.finetune.steps > 0 and self.distill is not None:
            parts.append(
                f"kd {self.finetune.steps} a={self.distill.alpha:g} T={self.distill.temperature:g}"
            )
        else:
            parts.append("no fine-tune")
        q = self.quantize
        if q.mode == "int8":
            fmt = {"qoperator": "qop", "qdq": "qdq"}.get(q.format or "", q.format)
            parts.append(f"int8 {fmt}/{'u8' if q.activations == 'uint8' else 's8'}")
        else:
            parts.append(q.mode)
        return " · ".join(parts)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CandidateConfig":
        return cls(
            prune=PruneConfig(**data.get("prune", {})),
            finetune=FinetuneConfig(**data.get("finetune", {})),
            distill=DistillConfig(**data["distill"]) if data.get("distill") else None,
            quantize=QuantizeConfig(**data.get("quantize", {})),
        )
