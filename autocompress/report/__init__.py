"""Reports: trial records -> tables (CSV, terminal) and plots. Compute first, render second."""

from autocompress.report.plot import pareto_plot_info, render_pareto_png
from autocompress.report.tables import TeacherRow, format_summary, front_mask, summary_rows, trials_frame

__all__ = ["TeacherRow", "format_summary", "front_mask", "summary_rows", "pareto_plot_info", "render_pareto_png", "trials_frame"]
