"""The hand recipes a practitioner would try first, enqueued before the search samples
anything so that the front is never worse than them. A recipe names the techniques it
uses and how; every other technique is off (each technique's `recipe_off`), so a
technique added later is switched off in them without an edit here."""

from __future__ import annotations

from typing import Any

_INT8 = {"mode": "int8", "activations": ["uint8", "int8"], "format": ["qoperator", "qdq"], "calibration": "minmax"}
_PRUNE50 = {"ratio": 0.5, "criterion": "l1", "round_to": 1}
_DYN8 = {"method": "dynamic", "reduce_range": False}  # int8 dynamic MatMuls: expressible only where the bound space has them (transformers)
KD = {"finetune": {"steps": "max"}, "distill": {"alpha": 0.5, "temperature": 4.0}}  # 'max': the longest fine-tune the space has

RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "int8 teacher": {"quantize": _INT8},
    "int8 dynamic teacher": {"matmul": _DYN8},
    "fused teacher": {"fuse": {"enabled": True, "layer_norm": False}},  # also the baseline every table compares with
    "fused + int8 dynamic teacher": {"fuse": {"enabled": True, "layer_norm": False}, "matmul": _DYN8},  # ORT's transformer recipe
    "prune 50% + KD": {"prune": _PRUNE50, **KD},
    "prune 50% + KD + int8": {"prune": _PRUNE50, **KD, "quantize": _INT8},
}


def recipe_trials(space) -> list[tuple[str, dict[str, Any]]]:
    """(name, trial params) of every recipe the (bound) space can express, in order."""
    out = []
    for name, on in RECIPES.items():
        params = space.recipe(on)
        if params is not None:
            out.append((name, params))
    return out


__all__ = ["KD", "RECIPES", "recipe_trials"]
