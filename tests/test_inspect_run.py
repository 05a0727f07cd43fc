"""`autocompress show`: the run's summary and one trial's record, read back from a real run
(the session's budget-3 search), and the pure parts (column names, the search's limit)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest

from autocompress import api
from autocompress.cli import main
from autocompress.evaluation.metrics import BUILTIN
from autocompress.inspect_run import WIDTH, RunInfo, RunView, TrialInfo, render_run
from autocompress.run import RunDir
from tests.helpers import first_trial_off_the_front


@pytest.mark.parametrize("manifest, value, source", [
    ({"max_acc_drop": None, "drop_limit": 10.0}, 10.0, "the search's default (run.json drop_limit)"),
    ({"max_acc_drop": 2.0, "drop_limit": 2.0}, 2.0, "given to the search (run.json drop_limit)"),
    ({"max_acc_drop": 3.0}, 3.0, "given to the search (run.json max_acc_drop)"),
    ({}, 10.0, "the default drop limit (run.json records none)"),  # 10 points for accuracy
])
def test_the_search_limit_and_where_it_comes_from(manifest, value, source):
    view = RunView(RunDir(Path("r")), {"teacher": {"val_accuracy": 0.9}, **manifest}, BUILTIN["accuracy"], pd.DataFrame())
    limit = view.search_limit()
    assert (limit.value, limit.source) == (value, source)


def test_the_default_limit_of_a_metric_without_points_is_a_share_of_the_teacher():
    view = RunView(RunDir(Path("r")), {"teacher": {"val_mse": 4.0}}, BUILTIN["mse"], pd.DataFrame())
    assert view.search_limit().value == pytest.approx(0.4)


def test_unknown_trial_names_the_valid_numbers():
    view = RunView(RunDir(Path("r")), {}, BUILTIN["accuracy"], pd.DataFrame({"number": [0, 1, 3]}))
    with pytest.raises(ValueError, match=r"trial 2: r has no such trial \(its trials are 0, 1, 3\)"):
        view.row(2)


def test_the_summary_stays_within_its_width_however_long_the_candidate():
    info = RunInfo(path=Path("runs/x"), task="a.py:model on a.py:data" + "x" * 200, profile="cpu-1thread", sampler="tpe", seed=0, budget=9,
                   backend="optuna", states={"COMPLETE": 8, "FAIL": 1}, limit=api_limit(), teacher={"val_metric": 0.9, "test_metric": 0.91,
                   "latency_ms": 12.5, "size_bytes": 4 * 1024**2}, metric=BUILTIN["accuracy"],
                   front=[{"number": 12, "description": "prune 0.5 l1 · lowrank 0.5 · kd 300 a=0.5 T=4 · int8 qdq/s8 per-channel · blocks 3",
                           "speedup": 3.1, "latency_ms": 4.03, "latency_ratio": 0.32, "size_bytes": 900_000, "size_reduction": 4.6,
                           "val_metric": 0.88, "test_metric": 0.87, "metric_drop": 2.0}])
    text = render_run(info)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    assert "per-channel" in text and "blocks 3" in text  # wrapped, not cut
    assert "9 trials (8 complete, 1 failed)" in text and "3.10x" in text and "4.030ms" in text and "879 KB" in text and "4.0 MB" in text


def test_the_summary_names_a_point_by_its_label_as_the_search_summary_does_else_by_its_description():
    point = {"speedup": 2.0, "latency_ms": 1.0, "latency_ratio": 0.5, "size_bytes": 1000, "size_reduction": 2.0,
             "val_metric": 0.9, "test_metric": None, "metric_drop": 0.5}
    front = [{"number": 1, "label": "p.5 q8", "description": "prune 0.5 l1 · int8 qop/u8", **point},
             {"number": 2, "label": None, "description": "lowrank 0.25", **point}]
    info = RunInfo(path=Path("r"), task="t", profile=None, sampler=None, seed=None, budget=None, backend=None, states={"COMPLETE": 2},
                   limit=api_limit(), teacher={"val_metric": 0.9, "test_metric": None, "latency_ms": 2.0, "size_bytes": 2000},
                   metric=BUILTIN["accuracy"], front=front)
    rows = {line.split()[0]: line for line in render_run(info).splitlines() if line.split() and line.split()[0] in ("1", "2")}
    assert rows["1"].endswith("  p.5 q8") and "prune" not in rows["1"]
    assert rows["2"].endswith("  lowrank 0.25")


def test_the_summary_gives_the_speedup_against_each_baseline_and_the_baseline_itself():
    """A transformer's run has a fused fp32 teacher as a baseline: a 'vs fused' column, and
    the baseline's own row (its speedup against the teacher as exported)."""
    point = {"speedup": 2.0, "latency_ms": 1.0, "latency_ratio": 0.5, "size_bytes": 1000, "size_reduction": 2.0,
             "val_metric": 0.9, "test_metric": 0.9, "metric_drop": 0.5}
    info = RunInfo(path=Path("r"), task="t", profile=None, sampler=None, seed=None, budget=None, backend=None, states={"COMPLETE": 1},
                   limit=api_limit(), teacher={"val_metric": 0.9, "test_metric": 0.91, "latency_ms": 2.0, "size_bytes": 2000,
                                               "baselines": {"fused": 0.8}},
                   metric=BUILTIN["accuracy"], front=[{"number": 1, "label": "p.5 q8", "description": "d", **point}])
    lines = render_run(info).splitlines()
    header = next(line for line in lines if line.startswith("trial"))
    assert header.split()[:4] == ["trial", "speedup", "vs", "fused"]
    assert next(line for line in lines if line.startswith("    1")).split()[:3] == ["1", "2.00x", "1.60x"]  # 2 x 0.8
    baseline = next(line for line in lines if line.endswith("teacher, fused (baseline)"))
    assert baseline.split()[:3] == ["1.25x", "1.00x", "1.600ms"]
    assert max(len(line) for line in lines) <= WIDTH


def test_a_trials_long_description_and_details_are_wrapped_not_cut():
    from autocompress.inspect_run import render_trial

    words = ["heads [0.25 0.25]", "mlp [0.2 0.3]", "kd 150 a=0.5 T=4", "int8 dynamic quantization of the MatMul weights"] * 4
    metrics = dict.fromkeys(("val_metric", "test_metric", "metric_drop", "latency_ms", "latency_ratio", "speedup", "size_bytes",
                             "size_reduction"))
    info = TrialInfo(run=Path("r"), number=3, state="FAIL", description=" · ".join(words), details="; ".join(words), params={},
                     metrics=metrics, on_front=False, feasible=False, limit=api_limit(), failure_reason=None, stop_reason=None,
                     recipe=None, duplicate_of=None, stage_seconds={}, files=[], recorded_files={},
                     teacher={"val_metric": 0.9, "test_metric": 0.9, "latency_ms": 1.0, "size_bytes": 10}, metric=BUILTIN["accuracy"])
    lines = render_trial(info).splitlines()
    start = [i for i, line in enumerate(lines) if line.startswith(("  candidate: ", "  details:   "))]
    assert len(start) == 2 and all(len(line) <= WIDTH for line in lines[:start[1] + 6])
    described = " ".join(line.strip() for line in lines[start[0]:start[1]]).removeprefix("candidate: ")
    assert described == " · ".join(words)  # every word kept, in order
    assert lines[start[0] + 1].startswith(" " * 13) and not lines[start[0] + 1].startswith(" " * 14)


def api_limit():
    from autocompress.inspect_run import Limit

    return Limit(10.0, "the search's default (run.json drop_limit)")


# --------------------------------------------------------------------------- on a run


def test_show_prints_the_teacher_and_the_front_by_latency(search_run, capsys):
    run = search_run.out
    capsys.readouterr()
    assert main(["show", str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    front = pd.read_csv(run / "pareto.csv").sort_values("latency_ratio")
    header = next(i for i, line in enumerate(lines) if line.startswith("trial"))
    rows = [line.split() for line in lines[header + 2:] if line.split() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == list(front["number"])
    assert lines[header + 2].split()[-1] == "teacher"
    teacher = json.loads((run / "run.json").read_text())["teacher"]
    assert f"{100 * teacher['val_accuracy']:.2f}" in lines[header + 2] and f"{100 * teacher['test_accuracy']:.2f}" in lines[header + 2]
    for r, (_, p) in zip(rows, front.iterrows()):
        assert r[1] == f"{p['speedup']:.2f}x" and r[6] == f"{100 * p['val_accuracy']:.2f}" and r[7] == f"{100 * p['test_accuracy']:.2f}"
        name = p["label"] if isinstance(p["label"], str) else p["description"]  # as the end-of-search summary names it
        assert r[9:] == name.split()
    assert "drop limit: 10 pt accuracy drop, the search's default (run.json drop_limit)" in lines

    info = api.show(run)
    assert isinstance(info, RunInfo) and [p["number"] for p in info.front] == list(front["number"])
    assert sum(info.states.values()) == 3


def test_show_trial_gives_its_configuration_metrics_stage_times_and_files(search_run, capsys):
    run = search_run.out
    front = pd.read_csv(run / "pareto.csv")
    n = int(front["number"].iloc[0])
    row = pd.read_csv(run / "trials.csv").set_index("number").loc[n]
    capsys.readouterr()
    assert main(["show", str(run), "--trial", str(n)]) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="autocompress", storage=f"sqlite:///{run / 'study.db'}")
    params = study.trials[n].params
    assert params
    for k, v in params.items():  # every parameter of the candidate, with the study's value
        assert any(line.split() == [k, str(v)] for line in out.splitlines()), (k, v)
    assert f"Trial {n} of {run}: COMPLETE, on the front" in out
    assert f"val accuracy    {100 * row['val_accuracy']:.2f}%" in out
    assert f"{row['speedup']:.2f}x" in out and f"{int(row['size_bytes'])} bytes" in out
    assert "Stage times:" in out and f"{row['t_total']:.3f} s in all" in out
    assert f"trials/{n}/model.onnx" in out and f"trials/{n}/model.pt" in out

    info = api.show(run, trial=n)
    assert isinstance(info, TrialInfo) and info.params == params and info.on_front
    assert info.metrics["val_metric"] == row["val_accuracy"] and info.metrics["metric_drop"] == row["acc_drop_pts"]
    assert info.metrics["test_metric"] == float(front.set_index("number").loc[n, "test_accuracy"])
    assert {"total", "export"} <= set(info.stage_seconds) and info.stage_seconds["total"] == row["t_total"]
    assert dict(info.files) == {f"trials/{n}/model.onnx": (run / "trials" / str(n) / "model.onnx").stat().st_size,
                                f"trials/{n}/model.pt": (run / "trials" / str(n) / "model.pt").stat().st_size}


def test_show_a_trial_off_the_front_says_its_files_were_not_kept(search_run, capsys):
    n = first_trial_off_the_front(search_run.out)
    capsys.readouterr()
    assert main(["show", str(search_run.out), "--trial", str(n)]) == 0
    out = capsys.readouterr().out
    assert f"trials/{n}/model.onnx: not kept" in out and "test accuracy   n/a" in out
    assert api.show(search_run.out, trial=n).files == []


@pytest.mark.parametrize("trial", ["3", "-1"])
def test_show_an_unknown_trial_exits_2_with_one_line_naming_the_range(search_run, capsys, trial):
    capsys.readouterr()
    assert main(["show", str(search_run.out), "--trial", trial]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and f"trial {trial}:" in err[0] and "its trials are 0-2" in err[0] and captured.out == ""


def test_show_of_something_that_is_not_a_run(tmp_path, capsys):
    capsys.readouterr()
    assert main(["show", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run directory" in err[0]
