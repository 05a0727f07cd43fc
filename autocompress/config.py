"""Candidate configuration: frozen data only. Behaviour lives in the transforms, training,
export and evaluation layers, which read these records."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional


@dataclass(frozen=True)
class BlockConfig:
    """Block substitution: (module path, block name) pairs, e.g. ('layer2', 'mbconv_e6_k3').
    'keep' (or a path not listed) leaves the original block. Applied first, before pruning.
    warmup_steps: block-wise feature distillation of the new blocks onto the teacher's
    blocks before anything else (training.warmup); 0 = none."""

    choices: tuple[tuple[str, str], ...] = ()
    warmup_steps: int = 0

    @property
    def active(self) -> bool:
        return any(name != "keep" for _, name in self.choices)


@dataclass(frozen=True)
class PruneConfig:
    """Structured channel pruning. `ratio` applies to every prunable group unless
    `segment_ratios` gives one ratio per segment (the prunable groups split in model order
    into len(segment_ratios) contiguous parts). 0 keeps every channel.

    criterion: 'l1' | 'l2' (weight magnitude) or 'act_mean' | 'act_zero' (mean |activation|,
    or the share of non-zero activations after ReLU, over calibration batches).
    round_to: channel counts kept at multiples of this (None: any count).
    exclude: module names never pruned (the classifier's outputs never are)."""

    ratio: float = 0.0
    segment_ratios: Optional[tuple[float, ...]] = None
    criterion: str = "l1"
    round_to: Optional[int] = None
    exclude: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return any(r > 0 for r in (self.segment_ratios or (self.ratio,)))


@dataclass(frozen=True)
class LowRankConfig:
    """SVD low-rank factorization of Linear and Conv2d layers. `rank_ratio` (kept rank /
    full rank; 1.0 = leave as is) applies to every factorizable layer unless
    `segment_ratios` gives one per segment (the layers split in model order into
    contiguous parts). A layer whose factorized form would not have fewer parameters is
    left as is. exclude: module names never factorized."""

    rank_ratio: float = 1.0
    segment_ratios: Optional[tuple[float, ...]] = None
    exclude: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return any(r < 1 for r in (self.segment_ratios or (self.rank_ratio,)))


@dataclass(frozen=True)
class FinetuneConfig:
    """Distillation fine-tune length and optimiser settings (steps = 0: no fine-tune).
    qat: fake-quantize the weights during the fine-tune at the bit widths the export will
    apply (only with steps > 0 and some quantized layer)."""

    steps: int = 0
    lr: float = 1e-3
    batch_size: int = 64
    qat: bool = False


@dataclass(frozen=True)
class DistillConfig:
    """L = alpha * CE(student, y) + (1 - alpha) * T^2 * KL(teacher_T || student_T)."""

    alpha: float = 0.5
    temperature: float = 4.0


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


@dataclass(frozen=True)
class CandidateConfig:
    """One point of the search space: what to do to the teacher, in pipeline order."""

    prune: PruneConfig = field(default_factory=PruneConfig)
    lowrank: LowRankConfig = field(default_factory=LowRankConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    distill: Optional[DistillConfig] = None  # None when finetune.steps == 0
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    blocks: BlockConfig = field(default_factory=BlockConfig)  # applied first

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
                if v is None:
                    kw[f.name] = v
                elif f.type == "float":
                    kw[f.name] = float(v)
                elif f.type in ("int", "Optional[int]"):
                    kw[f.name] = int(v)
                elif "tuple[float" in str(f.type):
                    kw[f.name] = tuple(float(x) for x in v)
                elif "tuple" in str(f.type):
                    kw[f.name] = tuple(v)
                else:
                    kw[f.name] = v
            return type(obj)(**kw)

        blocks = BlockConfig(tuple((str(path), str(name)) for path, name in self.blocks.choices), int(self.blocks.warmup_steps))
        return CandidateConfig(fix(self.prune), fix(self.lowrank), fix(self.finetune), fix(self.distill), fix(self.quantize), blocks)

    @property
    def id(self) -> str:
        """Content hash of the config: equal configs get equal ids."""
        blob = json.dumps(self.canonical().to_dict(), sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    def describe(self) -> str:
        """A short label, e.g. 'prune 0.5 l1 · rank 0.5 · kd 100 a=0.5 T=4 · int8 qop/u8'.
        Per-segment values are listed in brackets in model order."""

        def vals(one: Any, per_segment: Optional[tuple]) -> str:
            return f"[{' '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in per_segment)}]" if per_segment else (f"{one:g}" if isinstance(one, float) else str(one))

        p, lr, q = self.prune, self.lowrank, self.quantize
        parts = [f"{path}={name}" for path, name in self.blocks.choices if name != "keep"]
        if self.blocks.active and self.blocks.warmup_steps > 0:
            parts.append(f"warm-up {self.blocks.warmup_steps}")
        if p.active:
            parts.append(f"prune {vals(p.ratio, p.segment_ratios)} {p.criterion}" + (f"/{p.round_to}" if p.round_to else ""))
        else:
            parts.append("no prune")
        if lr.active:
            parts.append(f"rank {vals(lr.rank_ratio, lr.segment_ratios)}")
        if self.finetune.steps > 0 and self.distill is not None:
            parts.append(f"kd {self.finetune.steps} a={self.distill.alpha:g} T={self.distill.temperature:g}" + (" +qat" if self.finetune.qat else ""))
        else:
            parts.append("no fine-tune")
        if q.active:
            fmt = {"qoperator": "qop", "qdq": "qdq"}.get(q.format or "", q.format)
            label = f"{vals(q.mode, q.segment_bits)} {fmt}/{'u8' if q.activations == 'uint8' else 's8'}"
            parts.append(label + ("" if q.calibration == "minmax" else f" {q.calibration}"))
        else:
            parts.append("fp32")
        return " · ".join(parts)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CandidateConfig":
        return cls(
            prune=PruneConfig(**data.get("prune", {})),
            lowrank=LowRankConfig(**data.get("lowrank", {})),
            finetune=FinetuneConfig(**data.get("finetune", {})),
            distill=DistillConfig(**data["distill"]) if data.get("distill") else None,
            quantize=QuantizeConfig(**data.get("quantize", {})),
            blocks=BlockConfig(
                tuple(tuple(c) for c in data.get("blocks", {}).get("choices", ())), data.get("blocks", {}).get("warmup_steps", 0)
            ),
        ).canonical()
