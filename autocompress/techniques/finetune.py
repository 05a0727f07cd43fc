"""finetune: the distillation fine-tune of the compressed model, a fixed number of Adam
steps (cosine-decayed learning rate), optionally quantization-aware (`qat`): the weights
of every layer the export will quantize are fake-quantized at their bit width, on exactly
ONNX Runtime's grid (training.qat), and written on that grid afterwards. The loss is the
distill technique's.

The learning rate is searched over `lr`, or over `attention_lr` where the model has
attention modules (query/key/value Linear layers, transforms.graph.attention_projections):
Adam at the 1e-3 a convolutional network recovers with undoes a trained transformer (150
distillation steps on an uncompressed text encoder: 99.25% -> 89.3% at 1e-3, 98.7% at
3e-4, 99.0% at 1e-4; experiments/README.md). `bind` swaps the range in, so the trial
parameter keeps its name (`finetune.lr`) and the hand recipes and the structured start
(the range's geometric middle) follow it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from autocompress.schema import Key
from autocompress.techniques._registry import Spec, Technique, register_technique


EARLY_STOP_DEFAULT = False


@dataclass(frozen=True)
class FinetuneConfig:
    """Distillation fine-tune length and optimiser settings (steps = 0: no fine-tune).
    qat: fake-quantize the weights during the fine-tune at the bit widths the export will
    apply (only with steps > 0 and some quantized layer). early_stop: end the fine-tune
    when the val accuracy has stopped moving (training.early_stop)."""

    steps: int = 0
    lr: float = 1e-3
    batch_size: int = 64
    qat: bool = False
    early_stop: bool = False

    @property
    def active(self) -> bool:
        return self.steps > 0


@register_technique("finetune", stage="finetune", order=10)
class Finetune(Technique):
    Config = FinetuneConfig
    off = FinetuneConfig(steps=0, lr=0.0, batch_size=0)  # what a candidate without fine-tune records
    schema = {
        "steps": Key(int, 0, 0, 100_000),
        "lr": Key(float, 1e-3, 0.0, 1.0, low_open=True),
        # the lr range used instead of `lr` on a model with attention modules (absent: `lr`)
        "attention_lr": Key(float, None, 0.0, 1.0, low_open=True),
        "batch_size": Key(int, 64, 1, 4096),
        "qat": Key(bool, False),  # quantization-aware fine-tune (when something is quantized)
        "early_stop": Key(bool, EARLY_STOP_DEFAULT),  # end a fine-tune whose val accuracy stopped moving
    }
    switch = "steps"
    needs = ("quantize",)  # QAT only when the candidate quantizes something
    in_every_id = True

    def suggest(self, trial, spec: Spec, chosen: Mapping[str, Any]) -> FinetuneConfig:
        steps = int(spec.get(trial, "steps"))
        if steps <= 0:  # the optimiser settings and QAT do not matter
            return replace(self.off, steps=steps)
        return FinetuneConfig(steps=steps, lr=float(spec.get(trial, "lr")), batch_size=int(spec.get(trial, "batch_size")),
                              qat=bool(spec.get(trial, "qat")) if chosen["quantize"].active else False,
                              early_stop=bool(spec.get(trial, "early_stop")))

    def bind(self, spec: Spec, model: Any, example_input: Any) -> tuple[Spec, list[str]]:
        """On a model with attention modules, `attention_lr` (when the space gives one)
        becomes the `lr` the trials sample, with a note; elsewhere the spec is as given."""
        spec, notes = super().bind(spec, model, example_input)
        attention = spec.params.get("attention_lr")
        if attention is None or attention.to_yaml() is None:
            return spec, notes
        from autocompress.transforms.graph import attention_projections

        if not attention_projections(model):
            return spec, notes
        return spec.with_param("lr", attention), notes + [f"finetune: attention modules found; the fine-tune lr is "
                                                          f"finetune.attention_lr ({_describe(attention)}), not finetune.lr"]

    def to_yaml(self, spec: Spec):
        """Without `attention_lr` when not given, so spaces from before it keep their
        fingerprint."""
        out = super().to_yaml(spec)
        if out is not None and out.get("attention_lr") is None:
            out.pop("attention_lr", None)
        return out

    def label(self, cfg: FinetuneConfig, candidate) -> str:
        kd = candidate.distill if candidate is not None else None
        if cfg.steps <= 0 or kd is None:
            return "no fine-tune"
        return f"kd {cfg.steps} a={kd.alpha:g} T={kd.temperature:g}" + (" +qat" if cfg.qat else "")

    def code(self, cfg: FinetuneConfig, candidate) -> str:
        """'ft150', 'ft150_qat_es': the steps, quantization-aware, early stop (the optimiser
        settings are in `explain`)."""
        return f"ft{cfg.steps}" + ("_qat" if cfg.qat else "") + ("_es" if cfg.early_stop else "") if cfg.steps > 0 else ""

    def explain(self, cfg: FinetuneConfig, candidate) -> str:
        if cfg.steps <= 0:
            return "no fine-tune"
        return (f"{cfg.steps} fine-tune steps (Adam, lr {cfg.lr:.2g}, batch {cfg.batch_size})" + (", quantization-aware" if cfg.qat else "")
                + (", stopped early when val accuracy stops moving" if cfg.early_stop else ""))

    def apply(self, plan, cfg: FinetuneConfig, ctx):
        """The TrainPlan with this fine-tune's length and optimiser, and QAT where asked."""
        if cfg.steps <= 0:
            return replace(plan, steps=0)
        plan = replace(plan, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size)
        if cfg.early_stop:
            from autocompress.training.early_stop import EarlyStop

            plan = replace(plan, early_stop=EarlyStop())
        quantize = ctx.candidate.quantize if ctx.candidate is not None else None
        if cfg.qat and quantize is not None and quantize.active:
            from autocompress.training.qat import QAT

            plan = replace(plan, wrappers=plan.wrappers + (QAT(quantize),))
        return plan

    def to_dict(self, cfg: FinetuneConfig) -> dict[str, Any]:
        """Without `early_stop` when off, so the ids of candidates from before it stay valid."""
        out = super().to_dict(cfg)
        if not out.get("early_stop"):
            out.pop("early_stop", None)
        return out

    def examples(self) -> list[FinetuneConfig]:
        from autocompress.techniques.quantize import QuantizeConfig

        qat = FinetuneConfig(steps=5, batch_size=16, qat=True)
        return [FinetuneConfig(steps=0), FinetuneConfig(steps=5, lr=1e-3, batch_size=16),
                (qat, {"quantize": QuantizeConfig("int8", "uint8", "qdq")}), (qat, {"quantize": QuantizeConfig(segment_bits=("int4", "int8"), format="qdq")})]


def _describe(param) -> str:
    """'3e-05..0.0003, log' for a range, the value or the choices otherwise."""
    raw = param.to_yaml()
    if isinstance(raw, dict):
        return f"{raw['low']:g}..{raw['high']:g}" + (", log" if raw.get("log") else "")
    return str(raw)
