"""pareto.html: a self-contained page (plotly.js inlined, nothing fetched) whose figure has
exactly one point per completed trial, each hover showing the trial's configuration; and,
where Chromium is installed, the page renders those points without a console message."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from autocompress.evaluation.metrics import BUILTIN
from autocompress.report.html import write_pareto_html
from autocompress.report.read import read_run
from tests.report.runs import done, make_run

RECORDS = [
    done(0, 0.90, 0.50, 50_000, **{"param.prune.ratio": 0.0, "param.quantize.mode": "int8"}),
    done(1, 0.88, 0.25, 25_000, **{"param.prune.ratio": 0.5, "param.quantize.mode": "int8"}),
    done(2, 0.60, 0.10, 10_000, **{"param.prune.ratio": 0.9, "param.quantize.mode": "fp32"}),  # below the view
    done(3, 0.86, 0.80, 90_000, **{"param.prune.ratio": 0.25, "param.quantize.mode": "fp32"}),
    {"number": 4, "state": "FAIL", "description": "prune 0.7 l1 · fp32", "failure_reason": "export: boom", "param.prune.ratio": 0.7},
    {"number": 5, "state": "PRUNED", "description": "prune 0.6 l1 · fp32", "stop_reason": "rung 0", "param.prune.ratio": 0.6},
]
COMPLETED = {0, 1, 2, 3}


class _Page(HTMLParser):
    """The page's script elements: their src attributes and their text."""

    def __init__(self):
        super().__init__()
        self.sources: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._in_script = True
            self.scripts.append("")
            src = dict(attrs).get("src")
            if src:
                self.sources.append(src)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def _array(value) -> list:
    """A plotly JSON array: a list, or a typed array {"dtype", "bdata"} (base64)."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).tolist()
    return list(value)


def figure_data(page: str) -> tuple[list[dict], dict]:
    """The traces and layout of the one figure on the page, as the page embeds them."""
    parser = _Page()
    parser.feed(page)
    calls = [s for s in parser.scripts if "Plotly.newPlot(" in s and "window.PLOTLYENV" in s]
    assert len(calls) == 1
    text = calls[0]
    start = text.index("[", text.index("Plotly.newPlot("))
    decoder = json.JSONDecoder()
    traces, end = decoder.raw_decode(text, start)
    layout, _ = decoder.raw_decode(text, text.index("{", end))
    return traces, layout


@pytest.fixture
def page(tmp_path):
    run = read_run(make_run(tmp_path / "run", RECORDS, max_acc_drop=5.0))
    return write_pareto_html(run, tmp_path / "run" / "pareto.html", title="hand-made")


def test_the_page_is_self_contained(page):
    text = page.read_text()
    parser = _Page()
    parser.feed(text)
    assert parser.sources == []  # no script is fetched: plotly.js is inlined
    assert max(len(s) for s in parser.scripts) > 1_000_000 and "plotly.js" in text[:200_000]


def test_one_point_per_completed_trial_with_its_configuration_in_the_hover(page):
    traces, layout = figure_data(page.read_text())
    trial_traces = [t for t in traces if "customdata" in t]
    numbers = [int(n) for t in trial_traces for n in _array(t["customdata"])]
    assert sorted(numbers) == sorted(COMPLETED)  # every completed trial once; the failed and the stopped ones not at all
    assert all(len(_array(t["x"])) == len(_array(t["customdata"])) == len(t["hovertext"]) for t in trial_traces)
    front = next(t for t in trial_traces if t["name"] == "Pareto front")
    assert sorted(int(n) for n in _array(front["customdata"])) == [0, 1]
    hover = {int(n): h for t in trial_traces for n, h in zip(_array(t["customdata"]), t["hovertext"])}
    assert "prune.ratio = 0.5" in hover[1] and "quantize.mode = int8" in hover[1]
    assert "speedup 4.00×" in hover[1] and "4.00× smaller" in hover[1] and "val accuracy 88.00%" in hover[1]
    assert "prune.ratio = 0.25" in hover[3] and "speedup 1.25×" in hover[3]
    colours = {int(n): c for t in trial_traces for n, c in zip(_array(t["customdata"]), _array(t["marker"]["color"]))}
    assert colours[1] == pytest.approx(4.0) and colours[2] == pytest.approx(10.0)  # colour: size reduction
    assert any(t.get("name") == "teacher" for t in traces)
    lo, hi = layout["yaxis"]["range"]
    assert lo == pytest.approx(90 - 5 - 1.5) and 90 < hi < 91  # the initial view is pareto.png's
    assert "1 trial below" in layout["title"]["text"]  # trial 2, reachable by zooming out
    assert any("drop limit: 5 pt below the teacher" in a.get("text", "") for a in layout.get("annotations", []))


def test_a_metric_where_lower_is_better_has_an_inverted_axis(tmp_path):
    records = [done(0, 0.10, 0.5, 500), done(1, 0.105, 0.3, 300), done(2, 0.2, 0.2, 200)]
    run = read_run(make_run(tmp_path / "run", records, metric=BUILTIN["mse"], teacher_value=0.1))
    traces, layout = figure_data(write_pareto_html(run, tmp_path / "p.html").read_text())
    lo, hi = layout["yaxis"]["range"]
    assert lo > hi  # reversed: lower (better) values up
    assert sorted(int(n) for t in traces if "customdata" in t for n in _array(t["customdata"])) == [0, 1, 2]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not on PATH: the page is not rendered in a browser")
def test_the_page_renders_in_headless_chromium_without_console_messages(page, tmp_path):
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert console == []
    dom = proc.stdout
    assert 'class="main-svg"' in dom  # plotly.js ran and drew the figure
    assert dom.count('class="point plotly-customdata"') == len(COMPLETED)  # one drawn point per completed trial
