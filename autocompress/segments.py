"""Segments: a model's layers (or prunable groups) split in model order into a few
contiguous parts, so that 'one ratio per segment' means the same on any model. Pure."""

from __future__ import annotations

from typing import Any, Sequence, TypeVar

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


def bits_per_item(items: Sequence[T], quantize: Any) -> dict[T, str]:
    """Each item's weight bit width under `quantize` (mode for every item, or segment_bits
    per contiguous segment, as QuantizeConfig holds them): the one rule that the ONNX
    quantizer (per graph node) and QAT (per layer) share, so both agree on every layer."""
    from autocompress.names import BITS

    if quantize.segment_bits is None:
        if quantize.mode not in BITS:
            raise ValueError(f"quantize mode must be one of {BITS}, got {quantize.mode!r}")
        return {item: quantize.mode for item in items}
    if len(quantize.segment_bits) == 0:
        raise ValueError("segment_bits must name at least one segment")
    for bits in quantize.segment_bits:
        if bits not in BITS:
            raise ValueError(f"segment_bits entries must be one of {BITS}, got {bits!r}")
    out: dict[T, str] = {}
    for seg, bits in zip(split_contiguous(items, len(quantize.segment_bits)), quantize.segment_bits):
        out.update((item, bits) for item in seg)
    return out
