"""The terminal summary on a realistic trials table: 100 candidates sampled from the default
space bound to the demo's architecture (short labels as a search writes them), with the
objectives of tests.backends.test_trial_sequence, a few failures, duplicates, flagged
points and a baseline column: it fits 100 columns, the teacher comes first, rows run by
latency, the front is marked and the limit is named."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest

from autocompress.evaluation.metrics import BUILTIN
from autocompress.report import TeacherRow, format_summary, summary_rows, trials_frame
from autocompress.report.tables import SUMMARY_WIDTH, summary_title
from autocompress.techniques import short_label

LIMIT = 10.0
TEACHER = TeacherRow(0.97, 0.96, 0.455, 700_000, baselines={"fused": 0.6})  # a baseline column: the narrowest label column


@pytest.fixture(scope="module")
def trials() -> pd.DataFrame:
    from autocompress.space import load_space
    from tests.backends.test_trial_sequence import _demo_binding, fake_objectives

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    model, x = _demo_binding()
    space, _ = load_space("default").bind(model, x)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3), directions=["maximize", "minimize", "minimize"])
    records = []
    for n in range(100):
        cfg = space.suggest(study.ask())
        if n % 17 == 5:
            records.append({"number": n, "state": "FAIL", "label": short_label(cfg), "description": cfg.describe(), "failure_reason": "export: boom"})
            continue
        acc, ratio, size = fake_objectives(cfg.to_dict())
        records.append({"number": n, "state": "COMPLETE", "label": short_label(cfg), "description": cfg.describe(), "val_metric": acc,
                        "latency_ratio": ratio, "size_bytes": size, "ort_only": n % 3 == 0, "not_faster": ratio > 0.95})
    records.append({**records[1], "number": 100, "duplicate_of": 1})
    return trials_frame(records, TEACHER, max_acc_drop=LIMIT)


def _rows(text: str) -> list[tuple[str, int, str]]:
    """(mark, trial number, label with its continuation lines joined) per candidate row."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith("candidate"))
    indent = lines[start].index("candidate")
    out: list[tuple[str, int, str]] = []
    for line in lines[start + 2:]:
        head = line[:6].split()
        if head and head[-1].isdigit():
            out.append((head[0] if len(head) == 2 else "", int(head[-1]), line[indent:]))
        elif out and line.startswith(" " * indent) and line.strip():
            mark, number, label = out[-1]
            out[-1] = (mark, number, f"{label} {line.strip()}")
    return out


def test_the_summary_of_a_realistic_run_fits_100_columns_and_marks_the_front(trials):
    rows = summary_rows(trials, TEACHER)
    beyond = int((~rows["feasible"]).sum())
    text = format_summary(rows, TEACHER, title=summary_title(trials, TEACHER, limit=LIMIT, default_limit=True, beyond=beyond), trials=trials)
    lines = text.splitlines()
    assert max(map(len, lines)) <= SUMMARY_WIDTH
    assert lines[0].startswith(f"Pareto front: {int(trials['pareto'].sum())} of 101 trials within the drop limit of 10 pt accuracy drop")
    assert "(the default; set it with --max-acc-drop)" in " ".join(text.split())
    assert "\n6 failed. * within the limit (pareto.csv); unmarked: the 3 nearest trade-offs beyond it" in text
    header = next(i for i, line in enumerate(lines) if line.rstrip().endswith("candidate"))
    assert lines[header + 2].endswith("  teacher") and lines[header + 3].endswith("teacher, fused (baseline)")  # the teacher first

    got = _rows(text)
    front = trials[trials["pareto"]]
    assert {n for mark, n, _ in got if mark == "*"} == set(front["number"])
    outside = [n for mark, n, _ in got if mark == ""]
    assert 1 <= len(outside) <= 3 and 0 < beyond == len(outside)
    by_number = trials.set_index("number")
    assert all(by_number.loc[n, "metric_drop"] > LIMIT for n in outside)
    assert [n for _, n, _ in got] == list(by_number.loc[[n for _, n, _ in got]].sort_values("latency_ratio").index)  # by latency
    for _, n, label in got:  # the whole short label, wrapped where long, with its flags
        want = by_number.loc[n, "label"] + (" †" if by_number.loc[n, "ort_only"] else "") + (" ‡" if by_number.loc[n, "not_faster"] else "")
        assert label == want
    assert any(len(label) > SUMMARY_WIDTH - text.splitlines()[header].index("candidate") for _, _, label in got)  # some did wrap


def test_summary_rows_add_the_nearest_points_beyond_the_limit():
    records = [{"number": n, "state": "COMPLETE", "label": f"c{n}", "val_metric": acc, "latency_ratio": ratio, "size_bytes": 100.0}
               for n, acc, ratio in [(0, 0.95, 0.8), (1, 0.92, 0.5), (2, 0.80, 0.3), (3, 0.70, 0.2), (4, 0.60, 0.1), (5, 0.50, 0.05),
                                     (6, 0.85, 0.9)]]  # 6: dominated by 0 and beyond the limit
    df = trials_frame(records, TeacherRow(1.0, None, 1.0, 100), max_acc_drop=10.0)
    rows = summary_rows(df, TeacherRow(1.0, None, 1.0, 100))
    assert list(rows["number"]) == [4, 3, 2, 1, 0]  # the front (0, 1) and the three nearest beyond it (2, 3, 4), by latency
    assert dict(zip(rows["number"], rows["feasible"])) == {0: True, 1: True, 2: False, 3: False, 4: False}
    assert list(summary_rows(df, TeacherRow(1.0, None, 1.0, 100), beyond=0)["number"]) == [1, 0]


def test_the_title_names_the_limit_given_and_the_metric():
    mse = TeacherRow(0.2, 0.25, 1.0, 1000, metric=BUILTIN["mse"])
    df = trials_frame([{"number": 0, "state": "COMPLETE", "val_metric": 0.3, "latency_ratio": 0.5, "size_bytes": 500.0},
                       {"number": 1, "state": "PRUNED"}], mse, max_acc_drop=0.5)
    title = summary_title(df, mse, limit=0.5, default_limit=False)
    assert title.splitlines() == ["Pareto front: 1 of 2 trials within the drop limit of 0.5 mse drop (given with --max-metric-drop)",
                                  "0 failed, 1 stopped at a rung. * within the limit (pareto.csv)"]
    assert summary_title(df, mse, limit=None).startswith("Pareto front: 1 of 2 trials, no drop limit")


def test_trials_without_a_label_are_named_by_their_description_in_rows_and_notes():
    """A run resumed from a version before labels: its older trials have no label (a gap
    in the column), and are named by their description, never 'nan'."""
    teacher = TeacherRow(0.9, None, 1.0, 1000)
    records = [{"number": 0, "state": "COMPLETE", "description": "prune 0.5 l1 · fp32", "val_metric": 0.9, "latency_ratio": 0.99,
                "size_bytes": 900.0, "not_faster": True},
               {"number": 1, "state": "COMPLETE", "label": "p.3 q8", "description": "prune 0.3 l1 · int8 qop/u8", "val_metric": 0.89,
                "latency_ratio": 0.5, "size_bytes": 300.0, "not_faster": False}]
    df = trials_frame(records, teacher, max_acc_drop=5.0)
    text = format_summary(summary_rows(df, teacher), teacher, trials=df)
    assert "nan" not in text
    assert "prune 0.5 l1 · fp32 ‡" in text and "p.3 q8" in text
    assert "e.g. #0 prune 0.5 l1 · fp32 (1.01x)" in " ".join(text.split())
