"""distill: knowledge distillation as the fine-tune's loss,
L = alpha * CE(student, y) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))
(training.distill). Sampled only for candidates that are fine-tuned."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional

from autocompress.schema import Key
from autocompress.techniques._registry import Spec, Technique, code_values, register_technique


@dataclass(frozen=True)
class DistillConfig:
    """L = alpha * CE(student, y) + (1 - alpha) * T^2 * KL(teacher_T || student_T)."""

    alpha: float = 0.5
    temperature: float = 4.0


@register_technique("distill", stage="finetune", order=20)
class Distill(Technique):
    Config = DistillConfig
    off = None  # a candidate without fine-tune has no loss
    schema = {
        "alpha": Key(float, 0.5, 0.0, 1.0),
        "temperature": Key(float, 4.0, 0.0, 100.0, low_open=True),
    }
    needs = ("finetune",)
    in_every_id = True

    def suggest(self, trial, spec: Spec, chosen: Mapping[str, Any]) -> Optional[DistillConfig]:
        if chosen["finetune"].steps <= 0:
            return None
        return DistillConfig(alpha=float(spec.get(trial, "alpha")), temperature=float(spec.get(trial, "temperature")))

    def is_active(self, cfg: Optional[DistillConfig]) -> bool:
        return cfg is not None

    # label: the fine-tune's ("kd 100 a=0.5 T=4") says how it distils

    def code(self, cfg: Optional[DistillConfig], candidate) -> str:
        """'kd.5_T4': the hard-label weight alpha and the temperature."""
        return "" if cfg is None else f"kd{code_values(cfg.alpha)}_T{code_values(cfg.temperature)}"

    def explain(self, cfg: Optional[DistillConfig], candidate) -> str:
        if cfg is None:
            return ""
        return f"distilled from the teacher (alpha {cfg.alpha:g} on the labels, temperature {cfg.temperature:g})"

    def apply(self, plan, cfg: Optional[DistillConfig], ctx):
        """The TrainPlan with this loss."""
        return plan if cfg is None else replace(plan, alpha=cfg.alpha, temperature=cfg.temperature)

    def from_dict(self, data: Any) -> Optional[DistillConfig]:
        return self.canonical(DistillConfig(**data)) if data else None

    def examples(self) -> list[Optional[DistillConfig]]:
        return [None, DistillConfig(0.0, 2.0), DistillConfig(1.0, 4.0)]
