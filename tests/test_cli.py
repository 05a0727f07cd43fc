"""`autocompress search` end to end, in-process through autocompress.cli.main: a budget-3
search on the tiny user task, resume, and the exit codes of argparse. Bad input to search,
case by case: tests/test_bad_input.py."""

from __future__ import annotations

import argparse
import json
import math
import shutil

import numpy as np
import onnxruntime as ort
import optuna
import pandas as pd
import pytest
import yaml

from autocompress.cli import main, parse_duration
from autocompress.hardware import load_profile
from autocompress.space import load_space
from tests.helpers import TINY_DATA_SPEC, TINY_MODEL_SPEC, search_args

OUTPUTS = ["run.json", "space.yaml", "profile.yaml", "study.db", "trials.csv", "pareto.csv", "pareto.png", "summary.txt"]


def load_study(run):
    return optuna.load_study(study_name="autocompress", storage=f"sqlite:///{run / 'study.db'}")


def finished(study) -> list:
    return [t for t in study.get_trials(deepcopy=False) if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)]


def trial_dirs(run) -> set[int]:
    return {int(p.name) for p in (run / "trials").iterdir()} if (run / "trials").is_dir() else set()


# --------------------------------------------------------------------------- a search


def test_search_writes_every_output(search_run, cli_inputs):
    run = search_run.out
    assert search_run.rc == 0
    for name in OUTPUTS:
        assert (run / name).is_file(), name
    assert (run / "teacher" / "model.onnx").is_file()

    manifest = json.loads((run / "run.json").read_text())
    assert manifest["budget"] == 3 and manifest["seed"] == 0 and manifest["sampler"] == "tpe"
    assert manifest["profile"] == "fast"
    assert manifest["max_acc_drop"] is None and manifest["drop_limit"] == 10.0  # the default limit, recorded
    assert manifest["task"] == {"kind": "user", "model": TINY_MODEL_SPEC, "data": TINY_DATA_SPEC}
    assert manifest["space_fingerprint"] == load_space(str(cli_inputs.space)).fingerprint
    assert manifest["profile_fingerprint"] == load_profile(str(cli_inputs.profile)).fingerprint
    assert 0.8 < manifest["teacher"]["val_accuracy"] <= 1.0
    assert "torch" in manifest["packages"] and "flags" in manifest["cpu"]

    # the resolved space and profile are written back and mean the same thing
    assert load_space(str(run / "space.yaml")).fingerprint == load_space(str(cli_inputs.space)).fingerprint
    assert load_profile(str(run / "profile.yaml")) == load_profile(str(cli_inputs.profile))

    study = load_study(run)
    assert len(finished(study)) == 3
    trials = pd.read_csv(run / "trials.csv")
    assert len(trials) == 3 and sorted(trials["number"]) == [0, 1, 2]
    for t in study.trials:  # trials.csv agrees with the study
        row = trials[trials["number"] == t.number].iloc[0]
        assert row["state"] == t.state.name
        if t.state == optuna.trial.TrialState.COMPLETE:
            # the study keeps the values it was told; the tables use the front's end-of-search re-measurement
            told = row["latency_ratio_recorded"] if pd.notna(row.get("latency_ratio_recorded")) else row["latency_ratio"]
            assert row["val_accuracy"] == t.values[0] and told == t.values[1] and row["size_bytes"] == t.values[2]
    # the first trials are the enqueued hand recipes
    assert trials["recipe"].iloc[0] == "int8 teacher"

    assert (run / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_front_artifacts_are_kept_and_the_rest_deleted(search_run):
    run = search_run.out
    front = pd.read_csv(run / "pareto.csv")
    trials = pd.read_csv(run / "trials.csv")
    assert len(front) >= 1
    assert set(front["number"]) == set(trials.loc[trials["pareto"], "number"])
    for _, row in front.iterrows():
        assert (run / row["onnx"]).is_file() and (run / row["state_dict"]).is_file()
    assert trial_dirs(run) == set(front["number"])  # every non-front trial directory is gone
    assert list(front["latency_ratio"]) == sorted(front["latency_ratio"])

    summary = (run / "summary.txt").read_text()
    assert "teacher" in summary and max(map(len, summary.splitlines())) <= 100
    marked = [int(line[1:6]) for line in summary.splitlines() if line.startswith("* ")]  # within the drop limit: the front
    assert sorted(marked) == sorted(front["number"])
    assert list(front["label"]) == list(trials.set_index("number").loc[front["number"], "label"])  # the short label, in both tables
    assert all(label in " ".join(summary.split()) for label in front["label"])


def test_front_onnx_reproduces_the_recorded_accuracy(search_run, tiny_module):
    _, val, test = tiny_module.build_data()
    front = pd.read_csv(search_run.out / "pareto.csv")
    for _, row in front.iterrows():
        sess = ort.InferenceSession(str(search_run.out / row["onnx"]), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for split, column in ((val, "val_accuracy"), (test, "test_accuracy")):
            x, y = (t.numpy() for t in split.tensors)
            acc = float((sess.run(None, {name: x})[0].argmax(1) == y).mean())
            assert acc == row[column], (row["number"], column)


def test_resume_adds_trials_to_the_same_study(search_run, cli_inputs, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(search_run.out, run)
    first = set(pd.read_csv(run / "trials.csv")["candidate_id"])
    # the same --space and --profile as the run's are accepted
    rc = main(["search", "--resume", str(run), "--budget", "5", "--space", str(cli_inputs.space), "--profile", str(cli_inputs.profile)])
    assert rc == 0
    study = load_study(run)
    assert len(finished(study)) == 5 and len(study.trials) == 5
    assert len(optuna.get_all_study_names(f"sqlite:///{run / 'study.db'}")) == 1
    trials = pd.read_csv(run / "trials.csv")
    assert len(trials) == 5 and sorted(trials["number"]) == [0, 1, 2, 3, 4]
    assert first <= set(trials["candidate_id"])
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["budget"] == 5 and len(manifest["resumed"]) == 1
    front = pd.read_csv(run / "pareto.csv")
    assert trial_dirs(run) == set(front["number"])


# --------------------------------------------------------------------------- bad input


def test_a_failure_after_the_run_dir_was_created_removes_it(cli_inputs, tmp_path, capsys):
    """The teacher passes the task checks (batch 2) but cannot be exported (batch 1):
    prepare() fails after the run directory was made, and it is removed again."""
    model_file = tmp_path / "fussy.py"
    model_file.write_text(
        "import importlib.util, torch\n"
        f"spec = importlib.util.spec_from_file_location('_fussy_base', {str(TINY_MODEL_SPEC.rpartition(':')[0])!r})\n"
        "base = importlib.util.module_from_spec(spec); spec.loader.exec_module(base)\n"
        "class Fussy(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.inner = base.TinyResNet()\n"
        "    def forward(self, x):\n"
        "        if x.shape[0] == 1:\n"
        "            raise ValueError('batch of one')\n"
        "        return self.inner(x)\n"
        "def build_model():\n"
        "    return Fussy().eval()\n"
    )
    out = tmp_path / "run"
    args = ["search", "--model", f"{model_file}:build_model", "--data", TINY_DATA_SPEC, "--profile", str(cli_inputs.profile),
            "--space", str(cli_inputs.space), "--budget", "1", "--out", str(out)]
    try:
        rc = main(args)
    except ValueError:
        rc = None
    assert rc != 0
    assert f"Run directory: {out}" in capsys.readouterr().out  # it got as far as creating it
    assert not out.exists()


def test_argparse_level_errors_exit_2(capsys):
    for argv in (["search", "--sampler", "grid"], ["search", "--time-budget", "soon"], ["search", "--budget", "two"], []):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, seconds",
    [("900", 900), ("900s", 900), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("1.5h", 5400), ("2m30s", 150), (" 45 ", 45)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "15x", "m", "1h-5m"])
def test_parse_duration_rejects_garbage(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("autocompress ")


def test_trials_csv_numbers_are_finite(search_run):
    trials = pd.read_csv(search_run.out / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"]
    for col in ("val_accuracy", "speedup", "latency_ratio", "latency_ms", "size_bytes", "size_reduction"):
        assert np.isfinite(done[col]).all(), col
    assert (done["speedup"] * done["latency_ratio"]).round(9).eq(1.0).all()
    assert yaml.safe_load((search_run.out / "profile.yaml").read_text())["name"] == "fast"


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_the_search_climbs_after_the_hand_recipes_unless_it_is_random(sampler, cli_inputs, tmp_path, capsys):
    from autocompress.climb import CLIMB_SHARE
    from autocompress.cli import main

    out, space = tmp_path / "run", tmp_path / "space.yaml"
    space.write_text(cli_inputs.space.read_text().replace("{low: 0.0, high: 0.5, step: 0.25}", "{low: 0.0, high: 0.8, step: 0.05}"))
    assert "0.8" in space.read_text()  # room above the recipes' 50% for the climb's first move
    args = search_args(cli_inputs, "--budget", 6, "--sampler", sampler, "--max-acc-drop", 100, "--out", out)
    args[args.index("--space") + 1] = str(space)
    assert main(args) == 0
    assert "Drop limit: 100 pt below the teacher's val accuracy: the front" in capsys.readouterr().out
    trials = pd.read_csv(out / "trials.csv")
    climbed = trials["climb_what"].notna() if "climb_what" in trials else pd.Series(False, index=trials.index)
    if sampler == "random":
        assert not climbed.any()
    else:  # right after the recipes, from the fastest one (every recipe is within a 100-pt limit)
        assert climbed.iloc[3] and not climbed.iloc[:3].any()
        recipes = trials.iloc[:3]
        told = recipes["latency_ratio_recorded"].fillna(recipes["latency_ratio"]) if "latency_ratio_recorded" in recipes else recipes["latency_ratio"]
        assert int(trials["climb_base"].iloc[3]) == int(recipes["number"][told.idxmin()])  # what the study was told
        assert climbed.sum() <= math.ceil(6 * CLIMB_SHARE) - 3


@pytest.mark.slow
def test_demo_search_and_resume(cli_inputs, tmp_path, isolated_cache):
    """Without --model/--data the built-in digits demo runs (trains its teacher once into the
    test session's cache; ~30 s)."""
    out = tmp_path / "demo"
    assert main(["search", "--budget", "2", "--out", str(out), "--space", str(cli_inputs.space), "--profile", str(cli_inputs.profile)]) == 0
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["task"]["kind"] == "demo" and manifest["teacher"]["val_accuracy"] > 0.9
    assert list((isolated_cache / "teachers").glob("digits-resnet-*.pt"))
    assert main(["search", "--resume", str(out), "--budget", "3"]) == 0
    assert len(finished(load_study(out))) == 3
    assert len(pd.read_csv(out / "trials.csv")) == 3


# --------------------------------------------------------------------------- re-measurement and verify


def test_the_front_is_remeasured_at_the_end_and_the_tables_use_it(search_run):
    trials = pd.read_csv(search_run.out / "trials.csv")
    front = trials[trials["pareto"]]
    assert len(front) >= 1 and front["remeasured"].eq(True).all()  # every front point, after any recomputation
    assert front["latency_ratio_recorded"].notna().all() and (front["latency_ratio"] > 0).all()
    study = load_study(search_run.out)
    again = study.user_attrs["remeasured"]
    assert {str(n) for n in front["number"]} <= set(again)
    for n in front["number"]:
        t = study.trials[int(n)]
        assert t.values[1] == front.set_index("number").loc[n, "latency_ratio_recorded"]  # the study keeps the original
        assert again[str(n)]["latency_ratio"] == front.set_index("number").loc[n, "latency_ratio"]
    done = trials[trials["state"] == "COMPLETE"]
    assert done["not_faster"].isin([True, False]).all() and done["latency_passes"].ge(1).all()
    pareto = pd.read_csv(search_run.out / "pareto.csv")
    assert {"not_faster", "latency_ratio_recorded"} <= set(pareto.columns)
    # the hand recipes are re-measured with the front: the two compare alike
    recipes = done[done["recipe"].notna() & done["duplicate_of"].isna()]
    assert len(recipes) >= 1 and recipes["remeasured"].eq(True).all()
    # the front holds only candidates within the default drop limit (all trials stay in trials.csv)
    assert (front["acc_drop_pts"] <= 10.0 + 1e-9).all()


def test_verify_remeasures_every_front_point(search_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(search_run.out, run)
    capsys.readouterr()
    rc = main(["verify", str(run), "--repeats", "2"])
    out = capsys.readouterr().out
    table = pd.read_csv(run / "verify.csv")
    front = pd.read_csv(run / "pareto.csv")
    assert sorted(table["number"]) == sorted(front["number"])
    assert rc == (0 if table["reproduced"].all() else 1)
    assert (table["val_accuracy_remeasured"] == table["val_accuracy_recorded"]).all()  # same file, same data, same ORT
    assert table["remeasured_ratios"].str.split().map(len).eq(2).all() and (table["speedup_remeasured"] > 0).all()
    assert table["tolerance"].isin([0.07, 0.15]).all()
    assert f"speedups reproduced within tolerance" in out and "not faster' flag agrees on" in out


def test_verify_refuses_what_it_cannot_check(tmp_path, search_run, capsys):
    capsys.readouterr()
    assert main(["verify", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["verify", str(search_run.out), "--repeats", "0"]) == 2
    assert "--repeats must be >= 1, got 0" in capsys.readouterr().err
    if "CUDAExecutionProvider" not in ort_providers():
        assert main(["verify", str(search_run.out), "--profile", "cuda"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "CUDAExecutionProvider' is not available here" in err[0]


def ort_providers():
    import onnxruntime as ort

    return ort.get_available_providers()
