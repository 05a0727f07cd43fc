"""pareto.html: the interactive view of a run (plotly, the library inlined so the file opens
offline). One point per completed trial, val metric against latency, coloured by how much
smaller it is; hovering shows the trial's whole configuration. The initial view is the one
of pareto.png; double-click shows every trial."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

from autocompress.atomic import write_text_atomic
from autocompress.report.labels import row_label
from autocompress.report.plot import pareto_plot_info
from autocompress.report.read import RunRecords

MAX_HOVER_VALUE = 60  # characters of one configuration value in the hover box


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))[:MAX_HOVER_VALUE]


def _present(v: Any) -> bool:
    return not (v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()))


def hover_text(row: pd.Series, run: RunRecords) -> str:
    """The hover box of one trial: name, metric, speedup, size, then every searched setting."""
    m = run.metric
    unit = "%" if m.percent else ""
    lines = [f"<b>#{int(row['number'])}</b> {html.escape(row_label(row, width=80))}"]
    if _present(row.get("description")) and str(row.get("description")) != row_label(row, width=80):
        lines.append(html.escape(str(row["description"])))
    drop = f"{row['metric_drop']:.2f} pt" if m.percent else f"{row['metric_drop']:.3g}"
    lines.append(f"val {m.name} {m.show(row['val_metric'])}{unit} (drop {drop})"
                 + (" · on the front" if row.get("pareto") else ""))
    lines.append(f"speedup {row['speedup']:.2f}× · latency {row['latency_ms']:.4g} ms")
    lines.append(f"size {row['size_bytes'] / 1024:.1f} KB · {row['size_reduction']:.2f}× smaller")
    if _present(row.get("details")):
        lines.append(html.escape(str(row["details"])))
    params = [(c[len("param."):], row[c]) for c in row.index if c.startswith("param.") and _present(row[c])]
    if params:
        lines.append("<i>configuration</i>")
        lines += [f"{k} = {_value(v)}" for k, v in params]
    return "<br>".join(lines)


def pareto_figure(run: RunRecords, *, title: str = ""):
    """The plotly Figure: a trace of front points and one of the other completed trials
    (their trial numbers as customdata), the front's line, the teacher and the drop limit."""
    import plotly.graph_objects as go

    m = run.metric
    scale = 100.0 if m.percent else 1.0
    info = pareto_plot_info(run.trials, run.teacher, drop_limit=run.drop_limit, limit_given=run.limit_given)
    done = run.completed
    done = done[pd.to_numeric(done["val_metric"], errors="coerce").notna() & pd.to_numeric(done["latency_ms"], errors="coerce").notna()]
    smaller = [float(v) for v in done["size_reduction"]] or [1.0]
    # one colour scale over both traces (per trace, not a shared coloraxis: plotly.js cannot
    # draw a legend symbol for a coloraxis and warns on the console)
    colour = {"colorscale": "Viridis", "cmin": min(smaller), "cmax": max(smaller), "size": 10, "line": {"width": 1, "color": "white"}}
    fig = go.Figure()
    for name, rows, marker in (("other trials", done[~done["pareto"]], {"symbol": "circle", "opacity": 0.75, "showscale": False}),
                               ("Pareto front", done[done["pareto"]], {"symbol": "diamond", "size": 13, "line": {"width": 1.5, "color": "black"},
                                                                       "showscale": True, "colorbar": {"title": {"text": "smaller ×"}}})):
        fig.add_trace(go.Scatter(
            x=[float(v) for v in rows["latency_ms"]], y=[scale * float(v) for v in rows["val_metric"]], mode="markers", name=name,
            marker={**colour, **marker, "color": [float(v) for v in rows["size_reduction"]]},
            customdata=[int(n) for n in rows["number"]], hovertext=[hover_text(r, run) for _, r in rows.iterrows()], hoverinfo="text",
        ))
    line = info["panels"][0]["line"]
    fig.add_trace(go.Scatter(x=line["x"], y=line["y"], mode="lines", line={"shape": "hv", "color": "crimson", "width": 1.5},
                             name="front line (best at each latency)", hoverinfo="skip"))
    t = run.teacher
    fig.add_trace(go.Scatter(
        x=[t.latency_ms], y=[scale * t.val_metric], mode="markers", name="teacher",
        marker={"symbol": "star", "size": 18, "color": "royalblue", "line": {"width": 1, "color": "white"}},
        hovertext=[f"<b>teacher</b><br>val {m.name} {m.show(t.val_metric)}{'%' if m.percent else ''}<br>latency {t.latency_ms:.4g} ms"
                   f"<br>size {t.size_bytes / 1024:.1f} KB"], hoverinfo="text",
    ))
    fig.add_hline(y=info["limit"]["y"], line={"dash": "dash", "color": "darkorange", "width": 1.5},
                  annotation_text=info["limit"]["text"], annotation_position="bottom right")
    lo, hi = info["ylim"]
    out = info["outside"]
    note = (f"{out['count']} trial{'s' if out['count'] != 1 else ''} {'below' if m.higher_is_better else 'above'} {out['edge']:.4g}"
            f"{'%' if m.percent else ''} outside this view: double-click the plot to show all") if out["count"] else ""
    fig.update_layout(
        title={"text": title + (f"<br><sup>{note}</sup>" if note else "")},
        template="plotly_white", hovermode="closest", height=640,
        xaxis={"type": "log", "title": {"text": info["panels"][0]["xlabel"]}, "range": [math.log10(v) for v in info["panels"][0]["xlim"]]},
        yaxis={"title": {"text": info["ylabel"] + (" (lower is better: axis inverted)" if not m.higher_is_better else "")},
               "range": [hi, lo] if not m.higher_is_better else [lo, hi]},
        legend={"orientation": "h", "y": -0.15},
        hoverlabel={"align": "left", "font": {"size": 11}},
    )
    return fig


def write_pareto_html(run: RunRecords, path: str | Path, *, title: str = "") -> Path:
    """pareto.html, self-contained (plotly.js inlined: nothing is fetched when it is opened)."""
    fig = pareto_figure(run, title=title)
    path = Path(path)
    write_text_atomic(path, fig.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False, "responsive": True}))
    return path


__all__ = ["hover_text", "pareto_figure", "write_pareto_html"]
