"""Label placement as pure geometry: boxes inside the axes, clear of each other and of the
labelled points; the short text where the long one does not fit; None where nothing fits."""

from __future__ import annotations

import itertools

from autocompress.report.layout import Axes, overlaps, place_labels, text_size

AXES = Axes(360.0, 270.0)


def _pt(box):
    return (box[0] * AXES.width_pt, box[1] * AXES.height_pt, box[2] * AXES.width_pt, box[3] * AXES.height_pt)


def test_text_size_grows_with_the_text_and_the_font():
    w1, h1 = text_size("#1", 8)
    w2, h2 = text_size("#1 prune 0.5 · int8", 8)
    w3, _ = text_size("#1 prune 0.5 · int8", 16)
    assert w2 > w1 and h1 == h2 and w3 > 1.9 * w2 - 1e-9


def test_points_on_top_of_each_other_get_separate_boxes():
    points = [(0.5, 0.5)] * 6 + [(0.51, 0.5)] * 6
    texts = [[f"#{i} a longer label", f"#{i}"] for i in range(12)]
    placed = place_labels(points, texts, AXES, fontsize=7.5)
    boxes = [_pt(p["box"]) for p in placed if p is not None]
    assert len(boxes) == 12
    for a, b in itertools.combinations(boxes, 2):
        assert not overlaps(a, b)
    for box in boxes:
        assert 0 <= box[0] and box[2] <= AXES.width_pt and 0 <= box[1] and box[3] <= AXES.height_pt
        for x, y in {(0.5 * AXES.width_pt, 0.5 * AXES.height_pt), (0.51 * AXES.width_pt, 0.5 * AXES.height_pt)}:
            assert not overlaps(box, (x - 4.5, y - 4.5, x + 4.5, y + 4.5))  # no label covers a point
    assert any(p["leader"] for p in placed)  # the far ones are tied to their point by a line


def test_the_short_text_is_used_where_the_long_one_cannot_fit_and_none_where_nothing_fits():
    small = Axes(60.0, 40.0)
    placed = place_labels([(0.5, 0.5)], [["#7 far too long a label for this", "#7"]], small, fontsize=7.5)
    assert placed[0]["text"] == "#7"
    assert place_labels([(0.5, 0.5)], [["#7 far too long"]], Axes(12.0, 10.0), fontsize=7.5) == [None]


def test_an_obstacle_is_never_covered():
    star = (0.55, 0.5, 40.0)  # a 40 pt square right of the point
    placed = place_labels([(0.5, 0.5)], [["#1 label"]], AXES, fontsize=7.5, obstacles=[star])
    x, y = AXES.to_pt(star[0], star[1])
    assert not overlaps(_pt(placed[0]["box"]), (x - 20, y - 20, x + 20, y + 20))
