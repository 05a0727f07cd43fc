"""report.md: a short Markdown account of a run to paste into a pull request: the teacher,
the Pareto front as a table, the command that made the run and the machine it ran on."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from autocompress.report.labels import row_label
from autocompress.report.read import RunRecords
from autocompress.report.tables import flag_column

SHOWN_PACKAGES = ("autocompress", "torch", "onnxruntime", "onnx", "optuna")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def command_line(manifest: dict[str, Any]) -> str:
    """The command recorded in run.json, as a user would type it ('autocompress search ...'
    for the command line; a Python program that called autocompress.search as run)."""
    argv = [str(a) for a in manifest.get("command") or []]
    if not argv:
        return "(not recorded)"
    if Path(argv[0]).name in ("autocompress", "__main__.py"):
        argv = ["autocompress", *argv[1:]]
    else:
        argv = ["python", *argv]
    return shlex.join(argv)


def machine_line(manifest: dict[str, Any]) -> str:
    """'AMD EPYC (x86_64, 2 cores); flags avx, avx2, ...' from run.json's cpu record."""
    cpu = manifest.get("cpu") or {}
    if not cpu:
        return "(not recorded)"
    where = ", ".join(str(p) for p in (cpu.get("machine"), f"{cpu['cores']} cores" if cpu.get("cores") else None) if p)
    flags = cpu.get("flags") or []
    return f"{cpu.get('model') or 'unknown CPU'}" + (f" ({where})" if where else "") + (f"; flags {', '.join(flags)}" if flags else "; no SIMD flags recorded")


def report_markdown(run: RunRecords) -> str:
    m = run.metric
    man = run.manifest
    pct = "%" if m.percent else ""
    drop_unit = " pt" if m.percent else ""
    t = run.teacher
    name = f"val {m.name}"
    lines = [f"## Compression search: {run.path.name}", ""]
    test = f", test {m.show(t.test_metric)}{pct}" if t.test_metric is not None else ""
    lines.append(f"**Teacher**: {name} {m.show(t.val_metric)}{pct}{test}; latency {t.latency_ms:.4g} ms; size {t.size_bytes / 1024:.1f} KB")
    lines.append("")
    done = run.completed
    front = run.front
    side = "below" if m.higher_is_better else "above"
    limit = f"{run.drop_limit:.4g}{drop_unit} {side} the teacher" + ("" if run.limit_given else " (the search's default)")
    lines.append(f"**Pareto front**: {len(front)} of {len(done)} completed trials ({len(run.trials)} in all), drop limit {limit}."
                 + (" Latency is PREDICTED from a device table, not measured." if run.latency_predicted else ""))
    lines.append("")
    has_test = bool(run.test_metric)
    head = ["trial", "candidate", name, *(["test " + m.name] if has_test else []), "drop", "latency", "speedup", "smaller"]
    if front.empty:
        lines.append("No completed trial is within the drop limit.")
    else:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---:", "---", *["---:"] * (len(head) - 2)]) + "|")
    ort_only, slow = flag_column(front, "ort_only"), flag_column(front, "not_faster")
    for i, r in front.iterrows():
        n = int(r["number"])
        label = row_label(r, width=90) or "(no description)"
        cells = [str(n), _cell(label + (" †" if ort_only[i] else "") + (" ‡" if slow[i] else "")), f"{m.show(r['val_metric'])}{pct}"]
        if has_test:
            cells.append(f"{m.show(run.test_metric[n])}{pct}" if n in run.test_metric else "n/a")
        cells += [(f"{r['metric_drop']:.2f} pt" if m.percent else f"{r['metric_drop']:.3g}"), f"{r['latency_ms']:.4g} ms", f"{r['speedup']:.2f}×", f"{r['size_reduction']:.2f}×"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = (["† uses com.microsoft operators: runs on ONNX Runtime only"] if ort_only.any() else []) + \
        (["‡ not faster than the teacher beyond measurement noise"] if slow.any() else [])
    for note in notes:
        lines += ["", note]
    lines += ["", f"Speedup and size are against the teacher, latency under profile `{man.get('profile', '?')}`; "
              "pareto.png and pareto.html in the run directory plot every trial.", ""]
    lines.append(f"- Command: `{command_line(man)}`")
    search = ", ".join(f"{k} {man[k]}" for k in ("sampler", "seed", "budget", "backend", "device") if man.get(k) is not None)
    if search:
        lines.append(f"- Search: {search}" + (f"; resumed {len(man['resumed'])}×" if man.get("resumed") else ""))
    lines.append(f"- Machine: {machine_line(man)}")
    packages = man.get("packages") or {}
    shown = [f"{p} {packages[p]}" for p in ("python", *SHOWN_PACKAGES) if packages.get(p)]
    if shown:
        lines.append(f"- Versions: {', '.join(shown)}")
    return "\n".join(lines) + "\n"


__all__ = ["command_line", "machine_line", "report_markdown"]
