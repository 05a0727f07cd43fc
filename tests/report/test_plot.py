"""pareto.png's data on hand-made trials: the focused view and the trials outside it, the
front's order and line, the drop limit (given or the search's default), label boxes that
never overlap, and a rendering whose labels stay inside their boxes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from autocompress.evaluation.metrics import BUILTIN
from autocompress.report.layout import overlaps
from autocompress.report.plot import draw_pareto, log_ticks, pareto_plot_info, render_pareto_png
from autocompress.report.tables import TeacherRow, trials_frame
from tests.report.runs import done

TEACHER = TeacherRow(val_metric=0.90, test_metric=None, latency_ms=2.0, size_bytes=1000)

RECORDS = [
    done(0, 0.90, 0.50, 500),
    done(1, 0.88, 0.25, 250),
    done(2, 0.86, 0.20, 400),
    done(3, 0.70, 0.05, 100),  # fastest, but 20 pt down: beyond the limit and below the view
    done(4, 0.50, 0.90, 900),  # below the view
    done(5, 0.87, 0.60, 800),  # dominated by 0
    {"number": 6, "state": "FAIL", "description": "x", "failure_reason": "export: boom"},
    done(7, 0.91, 1.10, 1100),  # better than the teacher, slower
]


def info_for(records=RECORDS, teacher=TEACHER, **kw):
    limit = kw.get("drop_limit")
    return pareto_plot_info(trials_frame(records, teacher, max_acc_drop=limit), teacher, **kw)


def test_the_view_runs_from_below_the_limit_to_just_above_the_best_and_counts_what_it_leaves_out():
    info = info_for(drop_limit=5.0)
    lo, hi = info["ylim"]
    assert lo == pytest.approx(90.0 - 5.0 - 0.3 * 5.0)
    assert 91.0 < hi < 91.5  # trial 7 (91%) is the best point
    assert info["outside"] == {"count": 2, "front": 0, "edge": pytest.approx(lo)}  # trials 3 and 4
    assert "2 below 83.5%" in info["legend"]["others"]
    shown = [a for a in info["others"]["acc"] + info["front"]["acc"] if lo <= a <= hi]
    assert len(shown) == 7 - 2  # seven complete trials, two outside


def test_without_a_limit_the_plot_uses_the_searchs_default_and_says_so():
    info = info_for()
    assert info["limit"]["drop"] == pytest.approx(BUILTIN["accuracy"].drop_reference(0.90)) == pytest.approx(10.0)
    assert info["limit"]["y"] == pytest.approx(80.0)
    assert not info["limit"]["given"] and "the search's default" in info["limit"]["text"]
    given = info_for(drop_limit=10.0)
    assert given["limit"]["given"] and "default" not in given["limit"]["text"]
    recorded_default = info_for(drop_limit=10.0, limit_given=False)
    assert "the search's default" in recorded_default["limit"]["text"]


def test_front_order_and_its_line_per_panel():
    info = info_for(drop_limit=5.0)
    front = info["front"]
    assert front["labels"] == ["2", "1", "0", "7"]  # by latency; 3 is beyond the limit, 5 dominated
    assert front["latency_ms"] == sorted(front["latency_ms"])
    for panel in info["panels"]:
        xs = np.asarray(front[panel["key"]])
        ys = np.asarray(front["acc"])
        # the line holds exactly the front points no other front point beats in both x and metric
        expected = {i for i in range(len(xs)) if not any((xs[j] <= xs[i]) and (ys[j] >= ys[i]) and (xs[j] < xs[i] or ys[j] > ys[i])
                                                          for j in range(len(xs)))}
        got = {i for i in range(len(xs)) for x, y in zip(panel["line"]["x"], panel["line"]["y"]) if x == xs[i] and y == ys[i]}
        assert got == expected
        assert panel["line"]["x"] == sorted(panel["line"]["x"]) and panel["line"]["y"] == sorted(panel["line"]["y"])
    assert len(info["panels"][0]["line"]["x"]) == 4  # by latency each faster point is worse: all four are steps
    assert info["panels"][1]["line"]["y"] == pytest.approx([88.0, 90.0, 91.0])  # by size 1 (250 B, 88%) beats 2 (400 B, 86%)


def _boxes(panel):
    return [lab["box"] for lab in panel["labels"]]


def test_every_front_point_in_view_gets_a_label_and_no_two_labels_overlap():
    info = info_for(drop_limit=5.0)
    for panel in info["panels"]:
        assert sorted(lab["number"] for lab in panel["labels"]) == [0, 1, 2, 7] and panel["unlabelled"] == []
        for box in _boxes(panel):
            assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1
        for a, b in itertools.combinations(_boxes(panel), 2):
            assert not overlaps(a, b)
        texts = {lab["number"]: lab["text"] for lab in panel["labels"]}
        assert texts[1].startswith("#1 prune 0.1 l1")  # the description, shortened


def test_labels_of_a_crowded_front_do_not_overlap():
    """Twenty front points on a tight curve: every label placed is clear of every other."""
    records = [done(n, 0.90 - 0.002 * n, 0.5 - 0.01 * n, 500 - 5 * n, f"prune 0.{n} l1 · kd 10 a=0.5 T=4 · int8 qop/u8") for n in range(20)]
    info = info_for(records, drop_limit=5.0)
    for panel in info["panels"]:
        boxes = _boxes(panel)
        assert len(boxes) + len(panel["unlabelled"]) == 20 and len(boxes) >= 10
        for a, b in itertools.combinations(boxes, 2):
            assert not overlaps(a, b), (a, b)
        for lab in panel["labels"]:  # and no label covers a front point
            fx, fy = lab["anchor"]
            x0, y0, x1, y1 = lab["box"]
            assert not (x0 < fx < x1 and y0 < fy < y1)


def test_a_label_column_names_the_points():
    records = [dict(r, label=f"p.{r['number']}_q8") for r in RECORDS]
    info = info_for(records, drop_limit=5.0)
    texts = {lab["number"]: lab["text"] for lab in info["panels"][0]["labels"]}
    assert texts[1] == "#1 p.1_q8"


def test_a_metric_where_lower_is_better_inverts_the_axis_and_puts_the_limit_above():
    mse = BUILTIN["mse"]
    teacher = TeacherRow(val_metric=0.10, test_metric=None, latency_ms=2.0, size_bytes=1000, metric=mse)
    records = [done(0, 0.10, 0.5, 500), done(1, 0.104, 0.3, 300), done(2, 0.30, 0.1, 100), done(3, 0.09, 1.2, 900)]
    info = info_for(records, teacher, drop_limit=0.01)
    assert info["lower_is_better"]
    assert info["limit"]["y"] == pytest.approx(0.11) and "above the teacher" in info["limit"]["text"]
    lo, hi = info["ylim"]
    assert hi == pytest.approx(0.11 + 0.3 * 0.01) and lo < 0.09  # worst edge above the limit; the best point (0.09) inside
    assert info["outside"]["count"] == 1 and "above" in info["legend"]["others"]  # trial 2
    for panel in info["panels"]:  # on the inverted axis a better (lower) value sits higher
        anchors = {lab["number"]: lab["anchor"][1] for lab in panel["labels"]}
        assert anchors[3] > anchors[0] > anchors[1]


def test_rendered_labels_stay_inside_their_boxes(tmp_path):
    """The sizes estimated before rendering hold: each label's drawn text lies in its box."""
    records = RECORDS + [done(10 + n, 0.89 - 0.003 * n, 0.45 - 0.02 * n, 480 - 10 * n, "block1=mbconv_e3_k3 · prune [0.5 0.5 0.5] l1 · WWW%%%")
                         for n in range(8)]
    info = info_for(records, drop_limit=5.0)
    fig = draw_pareto(info, title="t")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    checked = 0
    for ax, panel in zip(fig.axes, info["panels"]):
        boxes = {lab["number"]: lab["box"] for lab in panel["labels"]}
        to_axes = ax.transAxes.inverted()
        for text in ax.texts:
            gid = text.get_gid() or ""
            if not gid.startswith("label:"):
                continue
            (x0, y0), (x1, y1) = to_axes.transform(text.get_window_extent(renderer).get_points())
            bx0, by0, bx1, by1 = boxes[int(gid.split(":")[2])]
            tol = 1.0 / 400  # about a pixel
            assert bx0 - tol <= x0 and x1 <= bx1 + tol and by0 - tol <= y0 and y1 <= by1 + tol, (text.get_text(), (x0, y0, x1, y1), boxes)
            checked += 1
    assert checked == sum(len(p["labels"]) for p in info["panels"]) > 8
    import matplotlib.pyplot as plt

    plt.close(fig)
    out = render_pareto_png(info, tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_complete_still_plots_the_teacher_and_the_limit(tmp_path):
    info = info_for([{"number": 0, "state": "FAIL"}])
    assert info["front"]["labels"] == [] and info["outside"]["count"] == 0
    assert info["ylim"][0] < info["limit"]["y"] < info["teacher"]["acc"] < info["ylim"][1]
    assert render_pareto_png(info, tmp_path / "e.png").stat().st_size > 0


@pytest.mark.parametrize("lim", [(11.0, 26.0), (0.012, 0.03), (0.04, 0.11), (1.0, 1000.0), (1e-3, 1e4), (0.5, 3.0), (100.0, 130.0)])
def test_log_ticks_are_few_and_inside_the_axis(lim):
    ticks = log_ticks(lim)
    assert 2 <= len(ticks) <= 7 and all(lim[0] <= t <= lim[1] for t in ticks) and ticks == sorted(ticks)
