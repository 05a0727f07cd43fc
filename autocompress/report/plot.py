"""pareto.png: the val metric vs latency and vs size, front highlighted, teacher marked
(accuracy in %; a metric where lower is better on an inverted axis, so up is better)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autocompress.report.tables import TeacherRow


def pareto_plot_info(df: pd.DataFrame, teacher: TeacherRow) -> dict[str, Any]:
    """Plain data for the plot (tested without rendering)."""
    m = teacher.metric
    scale = 100.0 if m.percent else 1.0
    done = df[df["state"].eq("COMPLETE")] if len(df) else df
    front = done[done["pareto"]].sort_values("latency_ms") if len(done) else done
    other = done[~done["pareto"]] if len(done) else done
    return {
        "others": {"latency_ms": other["latency_ms"].tolist(), "size_kb": (other["size_bytes"] / 1024).tolist(), "acc": (scale * other["val_metric"]).tolist()},
        "front": {
            "latency_ms": front["latency_ms"].tolist(),
            "size_kb": (front["size_bytes"] / 1024).tolist(),
            "acc": (scale * front["val_metric"]).tolist(),
            "labels": [str(int(n)) for n in front["number"]],
            "blocks": [_blocks_label(r) for _, r in front.iterrows()],
        },
        "teacher": {"latency_ms": teacher.latency_ms, "size_kb": teacher.size_bytes / 1024, "acc": scale * teacher.val_metric},
        "ylim": _ylim(scale * front["val_metric"].to_numpy() if len(front) else np.zeros(0), scale * teacher.val_metric)
        if m.percent else _span(front["val_metric"].to_numpy() if len(front) else np.zeros(0), teacher.val_metric),
        "ylabel": f"val {m.name}" + (" (%)" if m.percent else ""),
        "lower_is_better": not m.higher_is_better,
    }


def _short(block: str) -> str:
    """mbconv_e3_k5 -> mb3k5, dwsep_k3 -> dw3, shuffle_v2 -> sh, skip -> sk."""
    if block.startswith("mbconv_e"):
        e, k = block[len("mbconv_e"):].split("_k")
        return f"mb{e}k{k}"
    if block.startswith("dwsep_k"):
        return "dw" + block[len("dwsep_k"):]
    return {"shuffle_v2": "sh", "skip": "sk"}.get(block, block)


def _blocks_label(row: pd.Series) -> str:
    """The substituted blocks of one trial in target order, e.g. 'sk/mb3k3/-' ('-' = kept);
    '' when no block is substituted."""
    cols = [c for c in row.index if c.startswith("param.blocks.") and c != "param.blocks.warmup"]
    names = [str(row[c]) if isinstance(row[c], str) else "keep" for c in cols]
    return "" if all(n == "keep" for n in names) else "/".join("-" if n == "keep" else _short(n) for n in names)


def _ylim(front_acc: np.ndarray, teacher_acc: float) -> tuple[float, float]:
    """Zoom on what matters: from the lowest front point (or 10 points under the teacher,
    whichever is lower) to just above the best accuracy. Trials below are counted, not drawn."""
    low = min([teacher_acc - 10.0, *front_acc.tolist()])
    high = max([teacher_acc, *front_acc.tolist()])
    return (max(0.0, low - 1.0), min(100.0, high) + 0.5)


def _span(front: np.ndarray, teacher: float) -> tuple[float, float]:
    """A metric without points: the front and the teacher with 5% of their range either side."""
    values = [teacher, *front.tolist()]
    lo, hi = min(values), max(values)
    pad = 0.05 * ((hi - lo) or abs(teacher) or 1.0)
    return (lo - pad, hi + pad)


def render_pareto_png(info: dict[str, Any], path: str | Path, *, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    lo, hi = info["ylim"]
    worse = info.get("lower_is_better", False)
    below = sum((a > hi) if worse else (a < lo) for a in info["others"]["acc"])
    others_label = "other trials" + (f" ({below} worse than {hi if worse else lo:.3g} not shown)" if below else "")
    for ax, key, xlabel in ((axes[0], "latency_ms", "latency (ms, measured; log scale)"), (axes[1], "size_kb", "size (KB, log scale)")):
        ax.set_xscale("log")
        ax.set_ylim((hi, lo) if worse else (lo, hi))
        ax.scatter(info["others"][key], info["others"]["acc"], s=14, c="0.7", label=others_label)
        fx, fy = np.asarray(info["front"][key]), np.asarray(info["front"]["acc"])
        blocks = np.asarray([bool(b) for b in info["front"].get("blocks", [""] * len(fx))], dtype=bool)
        ax.scatter(fx[~blocks], fy[~blocks], s=36, c="tab:red", label="Pareto front", zorder=3)
        if blocks.any():
            ax.scatter(fx[blocks], fy[blocks], s=44, c="tab:red", marker="D", label="Pareto front, substituted blocks", zorder=3)
        for x, y, lab, b in zip(fx, fy, info["front"]["labels"], info["front"].get("blocks", [""] * len(fx))):
            ax.annotate(f"{lab} {b}" if b else lab, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        t = info["teacher"]
        ax.scatter([t[key]], [t["acc"]], marker="*", s=180, c="tab:blue", label="teacher", zorder=4)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(info.get("ylabel", "val accuracy (%)") + (" (lower is better)" if worse else ""))
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
