"""Segments: a model's layers (or prunable groups) split in model order into a few
contiguous parts, so that 'one ratio per segment' means the same on any model."""

from __future__ import annotations

from typing import Sequence, TypeVar

T = TypeVar("T")


def split_contiguous(items: Sequence[T], n: int) -> list[list[T]]:
    """`items` in order, split into `n` contiguous parts whose sizes differ by at most one
    (earlier parts are not larger than later ones). Segment i holds
    items[floor(i*L/n) : floor((i+1)*L/n)]; with fewer items than parts, some are empty."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    L = len(items)
    return [list(items[(i * L) // n : ((i + 1) * L) // n]) for i in range(n)]


def per_item(items: Sequence[T], values: Sequence[float]) -> list[tuple[T, float]]:
    """Pair each item with the value of its segment (len(values) segments)."""
    out: list[tuple[T, float]] = []
    for seg, value in zip(split_contiguous(items, len(values)), values):
        out.extend((item, value) for item in seg)
    return out
