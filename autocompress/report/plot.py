"""pareto.png: the val metric against latency and against size, two panels. The view is
focused from a little below the drop limit to just above the best point (trials below are
counted in the legend), the front is a line, the teacher a star, the drop limit a dashed
line, and every front point labelled without overlaps (accuracy in %; a metric where lower
is better on an inverted axis, so up is always better).

Compute first, render second: `pareto_plot_info` returns plain data (label boxes included,
in axes fraction), `render_pareto_png` draws it with matplotlib (Agg)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from autocompress.atomic import write_bytes_atomic
from autocompress.report.labels import trial_tag
from autocompress.report.layout import Axes, place_labels
from autocompress.report.tables import TeacherRow, flag_column
from autocompress.techniques.blocks import block_code

FIGSIZE = (12.0, 5.8)  # inches
AXES_RECTS = ((0.065, 0.21, 0.415, 0.68), (0.565, 0.21, 0.415, 0.68))  # figure fraction: left, bottom, width, height
LABEL_FONTSIZE = 7.5
LABEL_WIDTH = 26  # characters of a label's short name
LIMIT_MARGIN = 0.3  # the view reaches this share of the drop limit beyond it
TEACHER_PT = 15.0  # the teacher's star, in points
PANELS = (("latency_ms", "latency (ms, {source}; log scale)"), ("size_kb", "size (KB, log scale)"))


def _limit_text(limit: float, given: bool, m) -> str:
    unit = " pt" if m.percent else ""
    side = "below" if m.higher_is_better else "above"
    source = "" if given else ", the search's default"
    return f"drop limit: {limit:.4g}{unit} {side} the teacher{source}"


def _view(values: np.ndarray, teacher_y: float, limit_y: float, limit: float, sign: float, percent: bool) -> tuple[float, float]:
    """(low, high) of the y axis in the metric's display units: from LIMIT_MARGIN of the
    limit beyond it to just above the best of the teacher and the trials."""
    margin = max(LIMIT_MARGIN * limit, 0.5 if percent else 0.005 * (abs(teacher_y) or 1.0))
    worst = sign * limit_y - margin
    best = max([sign * teacher_y, *(sign * values).tolist()])
    best += 0.04 * (best - worst)
    return (worst, best) if sign > 0 else (-best, -worst)


def _xlim(values: list[float]) -> tuple[float, float]:
    """A log axis around `values` with room for labels on either side."""
    logs = np.log10([v for v in values if v > 0 and math.isfinite(v)] or [1.0])
    lo, hi = float(logs.min()), float(logs.max())
    span = max(hi - lo, 0.3)
    mid = (lo + hi) / 2
    lo, hi = min(lo, mid - span / 2), max(hi, mid + span / 2)
    return (10 ** (lo - 0.1 * span), 10 ** (hi + 0.1 * span))


def _nice_step(span: float, count: int) -> float:
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    return next(k * power for k in (1, 2, 2.5, 5, 10) if k * power >= raw)


def log_ticks(lim: tuple[float, float], *, most: int = 7) -> list[float]:
    """Readable ticks for a log axis over `lim`: 1, 10, 100... or 1-2-5 or 1..9 per decade,
    the coarsest set with at least three ticks; even steps where a range is too narrow."""
    lo, hi = lim
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for mults in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0 ** e for e in range(first, last + 1) for m in mults if lo <= m * 10.0 ** e <= hi]
        if len(ticks) >= 3:
            return ticks[:: math.ceil(len(ticks) / most)]
    step = _nice_step(hi - lo, 4)
    return [k * step for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)]


def _fraction(v: float, lim: tuple[float, float], *, log: bool = False, inverted: bool = False) -> float:
    lo, hi = lim
    if log:
        v, lo, hi = math.log10(v), math.log10(lo), math.log10(hi)
    f = (v - lo) / (hi - lo)
    return 1.0 - f if inverted else f


def _staircase(x: np.ndarray, goodness: np.ndarray) -> np.ndarray:
    """Indices of the points no other beats in both x (lower) and goodness (higher), by x."""
    order = np.lexsort((-goodness, x))
    keep, best = [], -np.inf
    for i in order:
        if goodness[i] > best:
            keep.append(int(i))
            best = goodness[i]
    return np.asarray(keep, dtype=int)


def _x(frame: pd.DataFrame, key: str) -> np.ndarray:
    """A panel's x values: latency in ms ("latency_ms") or size in KB ("size_kb")."""
    if not len(frame):
        return np.zeros(0)
    return frame["latency_ms"].to_numpy(dtype=float) if key == "latency_ms" else frame["size_bytes"].to_numpy(dtype=float) / 1024


def pareto_plot_info(df: pd.DataFrame, teacher: TeacherRow, *, drop_limit: Optional[float] = None,
                     limit_given: Optional[bool] = None) -> dict[str, Any]:
    """Plain data for pareto.png (tested without rendering). `drop_limit` in the metric's
    drop units (points for accuracy); None: the search's default (Metric.drop_reference).
    `limit_given`: whether the user set it (default: whenever `drop_limit` is given)."""
    m = teacher.metric
    scale = 100.0 if m.percent else 1.0
    sign = 1.0 if m.higher_is_better else -1.0
    given = (drop_limit is not None) if limit_given is None else bool(limit_given)
    limit = float(drop_limit) if drop_limit is not None else m.drop_reference(teacher.val_metric)
    teacher_y = scale * teacher.val_metric
    limit_y = teacher_y - sign * limit

    done = df[df["state"].eq("COMPLETE")] if len(df) else df
    if len(done):
        finite = np.isfinite(done[["val_metric", "latency_ms", "size_bytes"]].to_numpy(dtype=float)).all(axis=1)
        done = done[finite]
    on_front = flag_column(done, "pareto").to_numpy(dtype=bool) if len(done) else np.zeros(0, dtype=bool)
    y = scale * done["val_metric"].to_numpy(dtype=float) if len(done) else np.zeros(0)
    ylim = _view(y, teacher_y, limit_y, limit, sign, m.percent)
    worst_edge = ylim[0] if sign > 0 else ylim[1]
    in_view = sign * y >= sign * worst_edge - 1e-9
    n_out = int((~in_view).sum())

    front = done[on_front].sort_values("latency_ms") if len(done) else done
    other = done[~on_front] if len(done) else done
    front_y = scale * front["val_metric"].to_numpy(dtype=float) if len(front) else np.zeros(0)
    front_in = sign * front_y >= sign * worst_edge - 1e-9
    unit = "%" if m.percent else ""
    others_label = "other trials" + (f" ({n_out} {'below' if sign > 0 else 'above'} {worst_edge:.4g}{unit}: outside the view)" if n_out else "")

    teacher_xy = {"latency_ms": teacher.latency_ms, "size_kb": teacher.size_bytes / 1024}
    predicted = "latency_source" in done and bool(done["latency_source"].eq("predicted").any())
    panels = []
    for (key, xlabel), rect in zip(PANELS, AXES_RECTS):
        fx = _x(front, key)
        oy = scale * other["val_metric"].to_numpy(dtype=float) if len(other) else np.zeros(0)
        xlim = _xlim([*_x(done, key)[in_view].tolist(), teacher_xy[key]])
        axes = Axes(FIGSIZE[0] * 72 * rect[2], FIGSIZE[1] * 72 * rect[3])

        def at(xv: float, yv: float) -> tuple[float, float]:
            return (_fraction(xv, xlim, log=True), _fraction(yv, ylim, inverted=sign < 0))

        idx = np.flatnonzero(front_in)
        points = [at(fx[i], front_y[i]) for i in idx]
        rows = [front.iloc[i] for i in idx]
        texts = [[trial_tag(r, width=LABEL_WIDTH), f"#{int(r['number'])}"] for r in rows]
        avoid = [at(xv, yv) for xv, yv in zip(_x(other, key), oy) if sign * yv >= sign * worst_edge]
        placed = place_labels(points, texts, axes, fontsize=LABEL_FONTSIZE, obstacles=[(*at(teacher_xy[key], teacher_y), TEACHER_PT)],
                              avoid=avoid)
        labels = [{"number": int(r["number"]), "anchor": p, **lab} for r, p, lab in zip(rows, points, placed) if lab is not None]
        stair = idx[_staircase(fx[idx], sign * front_y[idx])] if len(idx) else idx
        panels.append({
            "key": key,
            "xlabel": xlabel.format(source="PREDICTED from a device table" if predicted else "measured"),
            "xlim": xlim,
            "xticks": log_ticks(xlim),
            "axes_rect": rect,
            "axes_pt": (axes.width_pt, axes.height_pt),
            "line": {"x": fx[stair].tolist(), "y": front_y[stair].tolist()},
            "labels": labels,
            "unlabelled": [int(r["number"]) for r, lab in zip(rows, placed) if lab is None],
        })

    return {
        "others": {"latency_ms": _x(other, "latency_ms").tolist(), "size_kb": _x(other, "size_kb").tolist(),
                   "acc": (scale * other["val_metric"]).tolist()},
        "front": {
            "latency_ms": _x(front, "latency_ms").tolist(),
            "size_kb": _x(front, "size_kb").tolist(),
            "acc": front_y.tolist(),
            "labels": [str(int(n)) for n in front["number"]],
            "blocks": [_blocks_label(r) for _, r in front.iterrows()],
        },
        "teacher": {"latency_ms": teacher.latency_ms, "size_kb": teacher.size_bytes / 1024, "acc": teacher_y},
        "limit": {"drop": limit, "y": limit_y, "given": given, "text": _limit_text(limit, given, m)},
        "outside": {"count": n_out, "front": int((~front_in).sum()), "edge": worst_edge},
        "ylim": ylim,
        "ylabel": f"val {m.name}" + (" (%)" if m.percent else ""),
        "lower_is_better": not m.higher_is_better,
        "legend": {"others": others_label, "front": "Pareto front (line: best at each x)", "teacher": "teacher"},
        "figure": {"size_in": FIGSIZE, "label_fontsize": LABEL_FONTSIZE},
        "panels": panels,
    }


def _blocks_label(row: pd.Series) -> str:
    """The substituted blocks of one trial in target order, e.g. 'sk/mb3k3/-' ('-' = kept);
    '' when no block is substituted."""
    cols = [c for c in row.index if c.startswith("param.blocks.") and c != "param.blocks.warmup"]
    names = [str(row[c]) if isinstance(row[c], str) else "keep" for c in cols]
    return "" if all(n == "keep" for n in names) else "/".join("-" if n == "keep" else block_code(n) for n in names)


def draw_pareto(info: dict[str, Any], *, title: str = ""):
    """The matplotlib Figure of `info` (Agg); each label's Text carries gid 'label:<panel>:<trial>'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    fig = plt.figure(figsize=info["figure"]["size_in"])
    lo, hi = info["ylim"]
    worse = info.get("lower_is_better", False)
    fontsize = info["figure"]["label_fontsize"]
    front = info["front"]
    blocks = np.asarray([bool(b) for b in front.get("blocks", [""] * len(front["labels"]))], dtype=bool)
    for p, panel in enumerate(info["panels"]):
        ax = fig.add_axes(panel["axes_rect"])
        key = panel["key"]
        ax.set_xscale("log")
        ax.set_xlim(*panel["xlim"])
        ax.xaxis.set_major_locator(FixedLocator(panel["xticks"]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim((hi, lo) if worse else (lo, hi))
        ax.scatter(info["others"][key], info["others"]["acc"], s=14, c="0.72", zorder=2)
        ax.axhline(info["limit"]["y"], color="tab:orange", ls="--", lw=1.2, zorder=1)
        if panel["line"]["x"]:
            ax.step(panel["line"]["x"], panel["line"]["y"], where="post", color="tab:red", lw=1.3, alpha=0.7, zorder=3)
        fx, fy = np.asarray(front[key], dtype=float), np.asarray(front["acc"], dtype=float)
        ax.scatter(fx[~blocks], fy[~blocks], s=36, c="tab:red", edgecolors="white", linewidths=0.6, zorder=4)
        if blocks.any():
            ax.scatter(fx[blocks], fy[blocks], s=44, c="tab:red", marker="D", edgecolors="white", linewidths=0.6, zorder=4)
        t = info["teacher"]
        ax.scatter([t[key]], [t["acc"]], marker="*", s=200, c="tab:blue", edgecolors="white", linewidths=0.6, zorder=5)
        w_pt, h_pt = panel["axes_pt"]
        pad = 0.2 * fontsize
        for lab in panel["labels"]:
            x0, y0, x1, y1 = lab["box"]
            text = ax.text(x0 + pad / w_pt, y0 + pad / h_pt, lab["text"], transform=ax.transAxes, fontsize=fontsize, ha="left", va="bottom",
                           zorder=6, bbox={"boxstyle": "square,pad=0.2", "fc": "white", "ec": "0.85", "lw": 0.4, "alpha": 0.9})
            text.set_gid(f"label:{p}:{lab['number']}")
            if lab["leader"]:
                ax_, ay_ = lab["anchor"]
                near = (min(max(ax_, x0), x1), min(max(ay_, y0), y1))
                ax.annotate("", xy=lab["anchor"], xycoords="axes fraction", xytext=near, textcoords="axes fraction",
                            arrowprops={"arrowstyle": "-", "color": "0.45", "lw": 0.6, "shrinkA": 0, "shrinkB": 4}, zorder=5)
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(info.get("ylabel", "val accuracy (%)") + (" (lower is better: axis inverted)" if worse else ""))
        ax.grid(alpha=0.3, which="both", lw=0.5)
    handles = [
        Line2D([], [], ls="", marker="o", ms=5, color="0.72"),
        Line2D([], [], ls="-", marker="o", ms=6, color="tab:red"),
        Line2D([], [], ls="", marker="*", ms=13, color="tab:blue"),
        Line2D([], [], ls="--", color="tab:orange"),
    ]
    legend = info["legend"]
    names = [legend["others"], legend["front"], legend["teacher"], info["limit"]["text"]]
    if blocks.any():
        handles.append(Line2D([], [], ls="", marker="D", ms=6, color="tab:red"))
        names.append("front point with substituted blocks")
    fig.legend(handles, names, loc="lower center", ncol=3, frameon=False, fontsize=9, bbox_to_anchor=(0.5, 0.0), columnspacing=1.5, handletextpad=0.5)
    if title:
        fig.suptitle(title, y=0.975)
    return fig


def render_pareto_png(info: dict[str, Any], path: str | Path, *, title: str = "") -> Path:
    import io

    import matplotlib.pyplot as plt

    fig = draw_pareto(info, title=title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    write_bytes_atomic(path, buf.getvalue())
    return path


__all__ = ["draw_pareto", "pareto_plot_info", "render_pareto_png"]
