"""Reports on hand-made trial records: derived columns, the front, the plot data, the PNG
and the terminal summary."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from autocompress.report import TeacherRow, format_summary, pareto_plot_info, render_pareto_png, trials_frame

TEACHER = TeacherRow(val_metric=0.90, test_metric=0.88, latency_ms=2.0, size_bytes=1000)


def _done(number, acc, ratio, size, **extra):
    return {"number": number, "state": "COMPLETE", "description": f"cand {number}", "val_metric": acc,
            "latency_ratio": ratio, "size_bytes": size, **extra}


RECORDS = [
    _done(0, 0.90, 0.50, 500),  # front: no accuracy lost
    _done(1, 0.85, 0.25, 250),  # front
    _done(2, 0.80, 0.50, 600),  # dominated by 0
    {"number": 3, "state": "FAIL", "description": "cand 3", "failure_reason": "export: boom"},
    _done(4, 0.90, 0.50, 500, duplicate_of=0),  # same as 0: never on the front itself
    _done(5, 0.60, 0.10, 100),  # front, but loses 30 points
]


def by_number(df: pd.DataFrame) -> dict[int, pd.Series]:
    return {int(r["number"]): r for _, r in df.iterrows()}


def test_derived_columns():
    rows = by_number(trials_frame(RECORDS, TEACHER))
    assert rows[0]["speedup"] == pytest.approx(2.0)
    assert rows[1]["speedup"] == pytest.approx(4.0)
    assert rows[0]["latency_ms"] == pytest.approx(1.0)
    assert rows[1]["latency_ms"] == pytest.approx(0.5)
    assert rows[0]["size_reduction"] == pytest.approx(2.0)
    assert rows[5]["size_reduction"] == pytest.approx(10.0)
    assert rows[0]["metric_drop"] == pytest.approx(0.0, abs=1e-9)
    assert rows[1]["metric_drop"] == pytest.approx(5.0)
    assert rows[5]["metric_drop"] == pytest.approx(30.0)
    failed = rows[3]
    assert math.isnan(failed["speedup"]) and math.isnan(failed["latency_ms"])
    assert not failed["feasible"] and not failed["pareto"]
    assert failed["failure_reason"] == "export: boom"


def test_feasible_and_pareto_without_a_limit():
    rows = by_number(trials_frame(RECORDS, TEACHER))
    assert {n: bool(r["feasible"]) for n, r in rows.items()} == {0: True, 1: True, 2: True, 3: False, 4: True, 5: True}
    assert {n: bool(r["pareto"]) for n, r in rows.items()} == {0: True, 1: True, 2: False, 3: False, 4: False, 5: True}


def test_max_acc_drop_excludes_a_point_from_the_front():
    rows = by_number(trials_frame(RECORDS, TEACHER, max_acc_drop=10.0))
    assert not rows[5]["feasible"] and not rows[5]["pareto"]
    assert {n for n, r in rows.items() if r["pareto"]} == {0, 1}
    rows = by_number(trials_frame(RECORDS, TEACHER, max_acc_drop=5.0))  # the limit itself is allowed
    assert rows[1]["feasible"] and rows[1]["pareto"]
    rows = by_number(trials_frame(RECORDS, TEACHER, max_acc_drop=0.0))
    assert {n for n, r in rows.items() if r["pareto"]} == {0}


def test_a_duplicate_is_not_on_the_front_even_when_it_would_be():
    records = [_done(0, 0.9, 0.5, 500), _done(1, 0.9, 0.4, 400, duplicate_of=0)]
    rows = by_number(trials_frame(records, TEACHER))
    assert rows[0]["pareto"] and not rows[1]["pareto"]


def test_all_failed_and_empty_record_sets():
    failed = trials_frame([{"number": 0, "state": "FAIL", "failure_reason": "x"}], TEACHER)
    assert len(failed) == 1 and not failed["pareto"].any() and not failed["feasible"].any()
    empty = trials_frame([], TEACHER)
    assert len(empty) == 0 and "pareto" in empty


def test_pareto_plot_info():
    df = trials_frame(RECORDS, TEACHER)
    info = pareto_plot_info(df, TEACHER)
    front = info["front"]
    assert front["labels"] == ["5", "1", "0"]  # sorted by latency
    assert front["latency_ms"] == pytest.approx([0.2, 0.5, 1.0])
    assert front["size_kb"] == pytest.approx([100 / 1024, 250 / 1024, 500 / 1024])
    assert front["acc"] == pytest.approx([60.0, 85.0, 90.0])
    others = info["others"]  # complete, not on the front: 2 and the duplicate 4; the failure is left out
    assert sorted(others["acc"]) == pytest.approx([80.0, 90.0])
    assert sorted(others["latency_ms"]) == pytest.approx([1.0, 1.0])
    assert info["teacher"] == {"latency_ms": 2.0, "size_kb": pytest.approx(1000 / 1024), "acc": pytest.approx(90.0)}
    # no limit given: the search's default (10 pt); y from 30% of it below the limit line to just above the best
    lo, hi = info["ylim"]
    assert lo == pytest.approx(90.0 - 10.0 - 3.0) and 90.0 < hi < 91.0
    assert info["outside"]["count"] == 1 and info["outside"]["front"] == 1  # trial 5 at 60%


def test_render_pareto_png(tmp_path):
    df = trials_frame(RECORDS, TEACHER)
    out = render_pareto_png(pareto_plot_info(df, TEACHER), tmp_path / "pareto.png", title="test run")
    data = out.read_bytes()
    assert out == tmp_path / "pareto.png" and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # nothing complete: still a valid plot with just the teacher
    empty = trials_frame([{"number": 0, "state": "FAIL"}], TEACHER)
    out2 = render_pareto_png(pareto_plot_info(empty, TEACHER), tmp_path / "empty.png")
    assert out2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def candidate_rows(text: str) -> dict[int, tuple[str, str]]:
    """The summary's candidate rows: trial number -> (its mark, '*' or '', the line)."""
    out = {}
    for line in text.splitlines():
        head = line[:6].split()
        if head and head[-1].isdigit():
            out[int(head[-1])] = (head[0] if len(head) == 2 else "", line)
    return out


def test_format_summary():
    df = trials_frame(RECORDS, TEACHER)
    front = df[df["pareto"]].copy()
    front["test_metric"] = [0.87, 0.80, np.nan]
    text = format_summary(front, TEACHER, title="My front")
    lines = text.splitlines()
    assert lines[0] == "My front"
    teacher_line = next(line for line in lines if "teacher" in line)
    assert "1.00x" in teacher_line and "90.00" in teacher_line and "88.00" in teacher_line and "2.000ms" in teacher_line
    assert teacher_line.split()[-1] == "teacher" and lines.index(teacher_line) == 3  # the first row, after the header and rule
    rows = candidate_rows(text)
    assert list(rows) == [5, 1, 0]  # every front trial, fastest first
    assert all(mark == "*" for mark, _ in rows.values())  # all within the (absent) limit
    row1 = rows[1][1]
    assert row1.endswith("cand 1") and "4.00x" in row1 and "85.00" in row1 and "0.500ms" in row1
    assert "n/a" in rows[5][1]
    assert max(map(len, lines)) <= 100
    no_test = format_summary(front.drop(columns="test_metric"), TeacherRow(0.9, None, 2.0, 1000))
    assert no_test.count("n/a") == 4  # teacher + three front rows


def test_summary_marks_points_that_need_onnx_runtime():
    df = trials_frame(RECORDS, TEACHER)
    front = df[df["pareto"]].copy()
    front["ort_only"] = [True] + [False] * (len(front) - 1)
    text = format_summary(front, TEACHER)
    marked = [line for line in text.splitlines() if "†" in line]
    assert len(marked) == 2 and marked[-1].startswith("† uses com.microsoft operators")
    assert "†" not in format_summary(front.assign(ort_only=False), TEACHER)


def test_plot_info_shows_block_choices_per_front_point(tmp_path):
    records = [dict(r) for r in RECORDS]
    for r in records:
        r["param.blocks.layer1"], r["param.blocks.layer2"] = "keep", "keep"
    records[0]["param.blocks.layer1"], records[0]["param.blocks.layer2"] = "skip", "mbconv_e3_k5"
    records[1]["param.blocks.layer2"] = "dwsep_k3"
    info = pareto_plot_info(trials_frame(records, TEACHER), TEACHER)
    by_label = dict(zip(info["front"]["labels"], info["front"]["blocks"]))
    assert by_label["0"] == "sk/mb3k5" and by_label["1"] == "-/dw3" and by_label["5"] == ""
    assert render_pareto_png(info, tmp_path / "p.png").stat().st_size > 0


def test_summary_flags_points_that_are_not_faster_and_counts_them():
    front = pd.DataFrame([
        {"number": 1, "description": "int8 qdq/s8", "speedup": 0.95, "latency_ratio": 1.05, "latency_ms": 1.0, "size_bytes": 100,
         "size_reduction": 4.0, "val_metric": 0.99, "not_faster": True},
        {"number": 2, "description": "prune 0.5", "speedup": 2.0, "latency_ratio": 0.5, "latency_ms": 0.5, "size_bytes": 200,
         "size_reduction": 2.0, "val_metric": 0.98, "not_faster": False},
    ])
    trials = front.assign(state="COMPLETE", duplicate_of=float("nan"))
    text = format_summary(front, TeacherRow(1.0, None, 1.0, 400), trials=trials)
    lines = text.splitlines()
    assert any("int8 qdq/s8 ‡" in line for line in lines) and not any("prune 0.5 ‡" in line for line in lines)
    assert "‡ not faster than the teacher beyond measurement noise" in text
    assert "Not faster than the teacher on this profile: 1 of 2 built candidates, e.g. #1 int8 qdq/s8 (0.95x)" in text


AT_ONE = TeacherRow(val_metric=1.0, test_metric=1.0, latency_ms=2.0, size_bytes=1000)  # a teacher at 100% val


def _with_recipes(rows):
    """trials_frame over records with (number, val accuracy, latency ratio, recipe or None)."""
    records = [{"number": n, "state": "COMPLETE", "val_metric": acc, "latency_ratio": ratio, "size_bytes": 100.0,
                "description": f"c{n}", "recipe": recipe} for n, acc, ratio, recipe in rows]
    return trials_frame(records, AT_ONE)


def test_the_summary_compares_the_fastest_point_within_1_pt_with_the_fastest_hand_recipe():
    from autocompress.report.tables import recipe_comparison

    df = _with_recipes([(0, 0.995, 0.30, "int8 teacher"), (1, 0.99, 0.20, "prune 50% + KD + int8"), (2, 0.98, 0.05, None),
                        (3, 0.992, 0.10, None)])
    line = recipe_comparison(df)
    assert line == ("Within 1 pt of the teacher (val): fastest 10.00x (#3); fastest hand recipe 5.00x "
                    "(#1 'prune 50% + KD + int8'): 2.00x faster than it")  # #2 is 10x but 2 pt below the teacher
    assert line in " ".join(format_summary(df[df["pareto"]], AT_ONE, trials=df).split())  # wrapped to fit 100 columns
    same = recipe_comparison(_with_recipes([(0, 0.995, 0.30, "int8 teacher"), (1, 0.99, 0.40, None)]))
    assert same.endswith("the hand recipe 'int8 teacher': the search found nothing faster")
    assert recipe_comparison(_with_recipes([(0, 0.9, 0.3, "int8 teacher")])) == "Within 1 pt of the teacher (val): no candidate"
    assert recipe_comparison(trials_frame([{"number": 0, "state": "FAIL"}], AT_ONE)) is None  # no recipe column: nothing to say


def test_speedups_against_a_baseline_of_the_teacher_are_a_column_and_a_row():
    """A teacher with a baseline (the fused fp32 teacher at 0.8 of its latency): every
    trial's speedup against it is the speedup times 0.8, in the frame and in the summary,
    and the baseline has a row of its own."""
    teacher = TeacherRow(0.90, 0.88, 2.0, 1000, baselines={"fused": 0.8})
    df = trials_frame(RECORDS, teacher)
    rows = by_number(df)
    assert rows[0]["speedup_vs_fused"] == pytest.approx(1.6) and rows[1]["speedup_vs_fused"] == pytest.approx(3.2)
    assert "speedup_vs_fused" not in trials_frame(RECORDS, TEACHER)
    text = format_summary(df[df["pareto"]].assign(test_metric=0.85), teacher)
    lines = text.splitlines()
    assert "vs fused" in lines[1]
    row = next(line for line in lines if line.endswith("teacher, fused (baseline)"))
    assert row.split()[:3] == ["1.25x", "1.00x", "1.600ms"]
    cand1 = candidate_rows(text)[1][1]
    assert "4.00x    3.20x" in cand1
