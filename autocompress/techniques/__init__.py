"""Compression techniques, one file and one registration each (see _registry for what a
record holds). The built-ins are registered here in the order they are sampled."""

from __future__ import annotations

from autocompress.techniques._registry import (
    STAGES,
    Move,
    Spec,
    Technique,
    apply,
    code_values,
    format_values,
    pipeline_order,
    register_technique,
    segment_moves,
    short_label,
    step,
    technique,
    technique_of,
    techniques,
    unregister_technique,
)
from autocompress.techniques import prune, lowrank, quantize, finetune, distill, blocks, layers, heads, mlp, matmul, fuse  # noqa: E402,F401  (register, in this order)

__all__ = ["STAGES", "Move", "Spec", "Technique", "apply", "code_values", "format_values", "pipeline_order", "register_technique",
           "segment_moves", "short_label", "step", "technique",
           "technique_of", "techniques", "unregister_technique"]
