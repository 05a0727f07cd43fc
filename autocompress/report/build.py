"""`autocompress report RUN_DIR`: pareto.png, pareto.html and report.md written into a run
directory from what it recorded (run.json, trials.csv, pareto.csv); nothing is measured."""

from __future__ import annotations

from pathlib import Path

from autocompress.atomic import write_text_atomic
from autocompress.report.read import RunRecords, read_run

FILES = ("pareto.png", "pareto.html", "report.md")


def report_title(run: RunRecords) -> str:
    note = " · latency PREDICTED from a device table, not measured" if run.latency_predicted else ""
    return f"{run.path.name}: {len(run.completed)} trials{note}"


def write_report(run_dir: str | Path, *, field: str = "RUN_DIR") -> list[Path]:
    """Write the report files into the run at `run_dir`; their paths. RunDirError (naming
    `field`) when it is not a run or has no finished trial yet."""
    from autocompress.report.html import write_pareto_html
    from autocompress.report.markdown import report_markdown
    from autocompress.report.plot import pareto_plot_info, render_pareto_png

    run = read_run(run_dir, field=field)
    png, page, text = (run.path / name for name in FILES)
    info = pareto_plot_info(run.trials, run.teacher, drop_limit=run.drop_limit, limit_given=run.limit_given)
    render_pareto_png(info, png, title=report_title(run))
    write_pareto_html(run, page, title=report_title(run))
    write_text_atomic(text, report_markdown(run))
    return [png, page, text]


__all__ = ["FILES", "write_report"]
