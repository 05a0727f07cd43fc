"""Short names for trials in plots and tables: a trial's `label` (a compact per-technique
name) when trials.csv has one, else its `description` with what is switched off left out."""

from __future__ import annotations

import math
from typing import Any, Mapping

SEPARATOR = " · "


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` characters, an ellipsis marking the cut."""
    return text if len(text) <= width else text[: max(1, width - 1)].rstrip() + "…"


def short_description(description: str) -> str:
    """'no prune · kd 10 a=0.5 T=4 · int8 qop/u8' -> 'kd 10 · int8 qop/u8': the parts that
    switch a technique off ('no ...') and the key=value settings inside a part are dropped."""
    parts = [p.strip() for p in description.split(SEPARATOR) if p.strip()]
    kept = []
    for part in parts:
        if part.startswith("no "):
            continue
        tokens = part.split()
        if len(tokens) > 1:
            tokens = [t for t in tokens if "=" not in t] or tokens
        kept.append(" ".join(tokens))
    return SEPARATOR.join(kept or parts[:1])


def row_label(row: Mapping[str, Any], *, width: int = 32) -> str:
    """A trials-table row's short name, cut to `width`: its `label` if it has one (the one
    techniques.short_label built for the candidate), else its shortened description ('' when
    it has neither)."""
    label = _text(row.get("label"))
    return shorten(label or short_description(_text(row.get("description"))), width)


def trial_tag(row: Mapping[str, Any], *, width: int = 32) -> str:
    """'#12 kd 10 · int8 qop/u8': the trial number and its short name."""
    label = row_label(row, width=width)
    return f"#{int(row['number'])}" + (f" {label}" if label else "")


__all__ = ["row_label", "short_description", "shorten", "trial_tag"]
