"""Where point labels go, decided before anything is drawn: each label gets a box in axes
fraction that overlaps no other label, no marked point and stays inside the axes. Pure
geometry on estimated text sizes (DejaVu Sans, matplotlib's default font)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

# Advance widths in em of DejaVu Sans, rounded up by groups; everything else counts as 0.64.
_EM = {**dict.fromkeys("ijl'IJ,. ·/:;\\|", 0.34), **dict.fromkeys("ft-()[]!r", 0.41), **dict.fromkeys("\"*_`szc?", 0.56),
       **dict.fromkeys("KAVBRXZCUHNDGOQ&", 0.79), **dict.fromkeys("wm%MW@…#+<=>^~×", 1.0)}
LINE_EM = 1.2  # ascent + descent of one line
PAD_EM = 0.2  # the label's background reaches this far beyond its text on every side

_ANGLES = (20, -20, 160, 200, 90, 270, 55, 125, 235, 305, 0, 180)  # degrees, tried in this order
_RADII = (4.0, 10.0, 18.0, 30.0, 45.0, 65.0)  # points between the marker and the label's box


def text_size(text: str, fontsize: float) -> tuple[float, float]:
    """(width, height) in points of one line of `text`, its background padding included."""
    width = sum(_EM.get(c, 0.64) for c in text) * fontsize
    return width + 2 * PAD_EM * fontsize, (LINE_EM + 2 * PAD_EM) * fontsize


Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def overlaps(a: Box, b: Box, gap: float = 0.0) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


@dataclass(frozen=True)
class Axes:
    """An axes' size in points; positions are given as fractions of it."""

    width_pt: float
    height_pt: float

    def to_pt(self, fx: float, fy: float) -> tuple[float, float]:
        return fx * self.width_pt, fy * self.height_pt

    def box_fraction(self, box: Box) -> Box:
        return (box[0] / self.width_pt, box[1] / self.height_pt, box[2] / self.width_pt, box[3] / self.height_pt)


def _square(x: float, y: float, size: float) -> Box:
    return (x - size / 2, y - size / 2, x + size / 2, y + size / 2)


def _candidates(x: float, y: float, w: float, h: float, marker: float):
    """Boxes of size w x h around (x, y), nearest first: on each side at growing distance."""
    for r in _RADII:
        for deg in _ANGLES:
            ux, uy = math.cos(math.radians(deg)), math.sin(math.radians(deg))
            reach = marker / 2 + r
            cx = x + ux * (reach + w / 2)
            cy = y + uy * (reach + h / 2)
            yield (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def place_labels(points: Sequence[tuple[float, float]], texts: Sequence[Sequence[str]], axes: Axes, *, fontsize: float,
                 marker_pt: float = 9.0, obstacles: Sequence[tuple[float, float, float]] = (),
                 avoid: Sequence[tuple[float, float]] = (), gap: float = 1.0) -> list[Optional[dict]]:
    """One label per point (positions in axes fraction). `texts[i]` lists point i's label,
    longest first; the first that fits is taken. A box never overlaps another label, a
    labelled point (a square of `marker_pt`) or an `obstacle` (x, y, size in points), and
    stays inside the axes; it avoids the `avoid` points (small markers) where it can.
    Returns per point {"text", "box" (axes fraction), "leader" (drawn apart from its point)}
    or None when no text fits anywhere."""
    pts = [axes.to_pt(fx, fy) for fx, fy in points]
    hard: list[Box] = [_square(x, y, marker_pt) for x, y in pts] + [_square(*axes.to_pt(fx, fy), s) for fx, fy, s in obstacles]
    soft: list[Box] = [_square(*axes.to_pt(fx, fy), 4.0) for fx, fy in avoid]
    placed: list[Box] = []
    out: list[Optional[dict]] = []
    for (x, y), options in zip(pts, texts):
        choice = None
        for text in options:
            w, h = text_size(text, fontsize)
            fits = [b for b in _candidates(x, y, w, h, marker_pt)
                    if b[0] >= 0 and b[1] >= 0 and b[2] <= axes.width_pt and b[3] <= axes.height_pt
                    and not any(overlaps(b, o, gap) for o in placed) and not any(overlaps(b, o) for o in hard)]
            clear = [b for b in fits if not any(overlaps(b, o) for o in soft)]
            box = (clear or fits or [None])[0]
            if box is not None:
                choice = (text, box)
                break
        if choice is None:
            out.append(None)
            continue
        text, box = choice
        placed.append(box)
        near_x = min(max(x, box[0]), box[2])
        near_y = min(max(y, box[1]), box[3])
        out.append({"text": text, "box": axes.box_fraction(box), "leader": math.hypot(near_x - x, near_y - y) > marker_pt / 2 + 2.0})
    return out


__all__ = ["Axes", "overlaps", "place_labels", "text_size"]
