"""`autocompress export` and the rule behind --best: the pure choice over a hand-made
trials table, then the command on a real run (the session's budget-3 search; tests that
change a run copy it first)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from autocompress import api
from autocompress.cli import main
from autocompress.deploy import eligible, select_best
from tests.helpers import first_trial_off_the_front

COLUMNS = ["number", "state", "metric_drop", "latency_ratio", "size_bytes", "duplicate_of"]
NAN = float("nan")


def table(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


# rows out of number order, so that the tie-break by number cannot come from the frame's order
TRIALS = table([
    (7, "COMPLETE", 0.2, 0.6, 700, NAN),    # ties with 3 on latency and size: 3 wins on number
    (0, "COMPLETE", 0.0, 0.9, 1000, NAN),
    (1, "COMPLETE", 2.0, 0.5, 800, NAN),    # the fastest, 2 points down
    (2, "COMPLETE", 0.8, 0.6, 900, NAN),    # ties with 3 on latency, larger
    (3, "COMPLETE", 1.0, 0.6, 700, NAN),    # exactly at a 1-point limit
    (4, "FAIL", NAN, NAN, NAN, NAN),
    (5, "COMPLETE", 0.5, 0.55, 600, 2.0),   # a duplicate: never chosen (its original is)
    (6, "PRUNED", 0.0, 0.1, 100, NAN),      # stopped at a rung: never chosen
    (8, "COMPLETE", 0.1, 0.7, 700, NAN),    # as small as 3 and 7, slower
    (9, "COMPLETE", NAN, 0.2, 50, NAN),     # no metric recorded: not within any limit
])


@pytest.mark.parametrize("limit, objective, best", [
    (1.0, "latency", 3),   # 2, 3, 7 tie at 0.6: size leaves 3 and 7, the lower number wins; a drop equal to the limit is in
    (0.9, "latency", 7),   # 3 is now beyond; 7 beats 2 on size
    (0.5, "latency", 7),
    (0.15, "latency", 8),
    (0.0, "latency", 0),
    (2.0, "latency", 1),
    (100.0, "latency", 1),
    (1.0, "size", 3),      # 3, 7, 8 tie at 700: latency leaves 3 and 7, the lower number wins
    (0.15, "size", 8),
    (2.0, "size", 3),      # 1 is faster but larger
])
def test_best_is_the_lowest_objective_within_the_limit_with_ties_by_size_then_number(limit, objective, best):
    assert select_best(TRIALS, max_drop=limit, objective=objective) == best
    assert select_best(TRIALS.sample(frac=1.0, random_state=3), max_drop=limit, objective=objective) == best


def test_nothing_within_the_limit_gives_none_and_only_built_complete_trials_are_eligible():
    assert select_best(TRIALS[TRIALS["number"].isin([1, 4, 6])], max_drop=1.0) is None
    assert select_best(TRIALS, max_drop=-0.5) is None  # better than the teacher: nobody here
    assert sorted(eligible(TRIALS, 100.0)["number"]) == [0, 1, 2, 3, 7, 8]
    with pytest.raises(ValueError, match="objective must be one of"):
        select_best(TRIALS, max_drop=1.0, objective="accuracy")


def test_a_table_without_a_duplicate_of_column_has_no_duplicates():
    assert select_best(TRIALS.drop(columns="duplicate_of"), max_drop=1.0) == 5  # now a built trial, and the fastest


# --------------------------------------------------------------------------- on a run


def generic_trials(run) -> pd.DataFrame:
    """trials.csv with the accuracy columns under generic names, read here independently."""
    return pd.read_csv(run / "trials.csv").rename(columns={"val_accuracy": "val_metric", "acc_drop_pts": "metric_drop"})


def expected_best(run, limit: float) -> int:
    """The fastest completed, built trial within `limit`, computed without autocompress."""
    t = generic_trials(run)
    ok = t[t["state"].eq("COMPLETE") & t["duplicate_of"].isna() & (t["metric_drop"] <= limit + 1e-9)]
    fastest = ok[ok["latency_ratio"] == ok["latency_ratio"].min()]
    return int(fastest.sort_values(["size_bytes", "number"])["number"].iloc[0])


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_export_best_copies_the_fastest_within_the_search_limit_and_says_why(search_run, tmp_path, capsys):
    run = search_run.out
    out = tmp_path / "model.onnx"
    capsys.readouterr()
    assert main(["export", str(run), "--best", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    n = expected_best(run, 10.0)  # the search's default limit, as run.json records it
    row = generic_trials(run).set_index("number").loc[n]
    assert out.read_bytes() == (run / row["onnx"]).read_bytes()
    assert leftovers(tmp_path) == ["model.onnx"]  # no temporary file left, nothing else written
    assert f"Exported trial {n} of {run}" in printed
    assert "limit: 10 pt accuracy drop, the search's default (run.json drop_limit)" in printed
    assert f"{row['speedup']:.2f}x" in printed and f"val accuracy {100 * row['val_metric']:.2f}%" in printed


def test_export_with_a_given_limit_names_it_and_the_api_returns_the_same_choice(search_run, tmp_path, capsys):
    run = search_run.out
    front = pd.read_csv(run / "pareto.csv")
    limit = float(front["acc_drop_pts"].min())  # the front's most accurate point is within it
    capsys.readouterr()
    assert main(["export", str(run), "--best", "--max-acc-drop", str(limit), "--out", str(tmp_path / "a.onnx")]) == 0
    assert "given with --max-acc-drop" in capsys.readouterr().out
    e = api.export(run, tmp_path / "b.onnx", best=True, max_acc_drop=limit)
    assert e.number == expected_best(run, limit) and e.limit.value == limit and e.limit.source == "given with --max-acc-drop"
    assert e.metric_drop <= limit + 1e-9 and e.files == (tmp_path / "b.onnx",)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_export_trial_with_torch_writes_the_kept_state_dict(search_run, tmp_path, capsys):
    import torch

    run = search_run.out
    n = int(pd.read_csv(run / "pareto.csv")["number"].iloc[0])
    out = tmp_path / "deploy" / "m.onnx"
    out.parent.mkdir()
    assert main(["export", str(run), "--trial", str(n), "--out", str(out), "--torch"]) == 0
    printed = capsys.readouterr().out
    assert out.read_bytes() == (run / "trials" / str(n) / "model.onnx").read_bytes()
    state = torch.load(out.with_suffix(".pt"), weights_only=True)
    kept = torch.load(run / "trials" / str(n) / "model.pt", weights_only=True)
    assert list(state) == list(kept) and all(state[k].equal(kept[k]) for k in kept)
    assert f"chosen with --trial {n}" in printed and f"state_dict: {out.with_suffix('.pt')}" in printed
    assert leftovers(out.parent) == ["m.onnx", "m.pt"]


def one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for f in fragments:
        assert f in err[0], (f, err[0])
    return err[0]


@pytest.fixture
def run_copy(search_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(search_run.out, run)
    return run


def test_torch_without_a_kept_state_dict_is_refused_and_nothing_is_written(run_copy, tmp_path, capsys):
    n = int(pd.read_csv(run_copy / "pareto.csv")["number"].iloc[0])
    (run_copy / "trials" / str(n) / "model.pt").unlink()
    out = tmp_path / "out"
    out.mkdir()
    capsys.readouterr()
    assert main(["export", str(run_copy), "--trial", str(n), "--out", str(out / "m.onnx"), "--torch"]) == 2
    one_line_error(capsys, "--torch", f"no state_dict for trial {n}", "nothing written")
    assert leftovers(out) == []


def test_no_candidate_within_the_limit_exits_2_and_writes_nothing(run_copy, tmp_path, capsys):
    trials = pd.read_csv(run_copy / "trials.csv")
    trials["acc_drop_pts"] = np.where(trials["state"].eq("COMPLETE"), 3.0, trials["acc_drop_pts"])
    trials.to_csv(run_copy / "trials.csv", index=False)
    capsys.readouterr()
    assert main(["export", str(run_copy), "--best", "--max-acc-drop", "1", "--out", str(tmp_path / "m.onnx")]) == 2
    one_line_error(capsys, "no completed trial within 1 pt accuracy drop (given with --max-acc-drop)", "smallest drop", "3.00 pt")
    assert not (tmp_path / "m.onnx").exists()


def test_a_best_trial_whose_files_are_gone_is_refused_not_replaced(run_copy, tmp_path, capsys):
    n = expected_best(run_copy, 10.0)
    shutil.rmtree(run_copy / "trials" / str(n))
    capsys.readouterr()
    assert main(["export", str(run_copy), "--best", "--out", str(tmp_path / "m.onnx")]) == 2
    one_line_error(capsys, f"trial {n} is the best within 10 pt accuracy drop", "kept no ONNX file")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("args, fragments", [
    (["--trial", "99"], ["trial 99", "has no such trial", "its trials are 0-2"]),
    (["--best", "--max-acc-drop", "-1"], ["--max-acc-drop must be in [0, 100] points, got -1.0"]),
    (["--best", "--max-acc-drop", "1", "--max-metric-drop", "1"], ["give one"]),
    (["--trial", "0", "--objective", "size"], ["go with --best"]),
])
def test_bad_choices_exit_2_with_one_line_and_nothing_written(search_run, tmp_path, capsys, args, fragments):
    capsys.readouterr()
    assert main(["export", str(search_run.out), *args, "--out", str(tmp_path / "m.onnx")]) == 2
    one_line_error(capsys, *fragments)
    assert leftovers(tmp_path) == []


def test_a_trial_whose_files_were_not_kept_is_refused(search_run, tmp_path, capsys):
    n = first_trial_off_the_front(search_run.out)
    capsys.readouterr()
    assert main(["export", str(search_run.out), "--trial", str(n), "--out", str(tmp_path / "m.onnx")]) == 2
    one_line_error(capsys, f"trial {n}", "kept no ONNX file")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["missing", "is_dir", "not_run"])
def test_a_bad_out_or_run_is_refused_before_anything_is_written(search_run, tmp_path, capsys, where):
    run, out = search_run.out, tmp_path / "missing" / "m.onnx"
    if where == "is_dir":
        out = tmp_path / "adir"
        out.mkdir()
    if where == "not_run":
        run, out = tmp_path / "nothing", tmp_path / "m.onnx"
        run.mkdir()
    capsys.readouterr()
    assert main(["export", str(run), "--best", "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert {"missing": "does not exist", "is_dir": "is a directory", "not_run": "not a run directory"}[where] in err
    assert not (tmp_path / "missing").exists() and not (tmp_path / "m.onnx").exists()
    assert where != "is_dir" or leftovers(out) == []


def test_export_needs_a_choice(search_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", str(search_run.out), "--out", str(tmp_path / "m.onnx")])
    assert exc.value.code == 2 and "one of the arguments --trial --best is required" in capsys.readouterr().err


def test_the_search_limit_comes_from_the_manifest(run_copy, tmp_path):
    manifest = json.loads((run_copy / "run.json").read_text())
    manifest.update(max_acc_drop=0.0, drop_limit=0.0)  # as if the search had been given --max-acc-drop 0
    (run_copy / "run.json").write_text(json.dumps(manifest))
    trials = generic_trials(run_copy)
    done = trials[trials["state"].eq("COMPLETE") & trials["duplicate_of"].isna()]
    if not (done["metric_drop"] <= 1e-9).any():
        pytest.skip("no trial of this run is as accurate as the teacher")
    e = api.export(run_copy, tmp_path / "m.onnx", best=True)
    assert e.limit.value == 0.0 and e.limit.source == "given to the search (run.json drop_limit)"
    assert e.number == expected_best(run_copy, 0.0) and not math.isnan(e.metric_drop) and e.metric_drop <= 1e-9


def hand_made_view(metric="accuracy", root=None, **manifest):
    """TRIALS as a run's table; with `root`, each trial's ONNX file kept under root/trials/N/."""
    from pathlib import Path

    from autocompress.evaluation.metrics import BUILTIN
    from autocompress.inspect_run import RunView
    from autocompress.run import RunDir

    trials = TRIALS.assign(onnx=[f"trials/{n}/model.onnx" for n in TRIALS["number"]])
    if root is not None:
        for rel in trials["onnx"]:
            (root / rel).parent.mkdir(parents=True)
            (root / rel).write_bytes(b"onnx")
    return RunView(RunDir(Path(root or "r")), {"drop_limit": 10.0, "max_acc_drop": None, **manifest}, BUILTIN[metric], trials)


def test_the_limit_option_must_suit_the_metric():
    from autocompress.deploy import choose
    from autocompress.errors import ConfigError

    with pytest.raises(ConfigError, match="--max-acc-drop is in points of accuracy; the run's metric is 'mse'"):
        choose(hand_made_view("mse"), best=True, max_acc_drop=1.0)
    with pytest.raises(ConfigError, match=r"--max-metric-drop must be in \[0, inf\)"):
        choose(hand_made_view("mse"), best=True, max_metric_drop=float("inf"))
    with pytest.raises(ConfigError, match="needs one of --trial N or --best"):
        choose(hand_made_view())


def test_the_reason_names_the_tie_and_a_best_without_files_is_refused_naming_the_kept_ones(tmp_path):
    import shutil as sh

    from autocompress.deploy import choose
    from autocompress.errors import RunDirError

    view = hand_made_view(root=tmp_path)
    row, reason, limit = choose(view, best=True, max_acc_drop=1.0)
    assert int(row["number"]) == 3 and limit.source == "given with --max-acc-drop"
    assert reason == ("the fastest (lowest latency) of 5 completed trials within 1 pt accuracy drop; "
                      "tied on latency_ratio with trials 7, 2, broken by size_bytes, then trial number")
    row, reason, limit = choose(view, best=True)
    assert int(row["number"]) == 1 and limit.value == 10.0 and limit.source == "the search's default (run.json drop_limit)"
    assert "tied" not in reason
    sh.rmtree(tmp_path / "trials" / "3")
    with pytest.raises(RunDirError, match=r"trial 3 is the best within 1 pt accuracy drop, .* kept no ONNX file .* --trial N: 7, 2, 8, 0$"):
        choose(view, best=True, max_acc_drop=1.0)


def test_external_data_files_are_copied_beside_the_export(run_copy, tmp_path, capsys):
    import onnx
    import onnxruntime as ort

    n = int(pd.read_csv(run_copy / "pareto.csv")["number"].iloc[0])
    src = run_copy / "trials" / str(n) / "model.onnx"
    original = src.read_bytes()
    proto = onnx.load(str(src))
    onnx.save_model(proto, str(src), save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    out = tmp_path / "out"
    out.mkdir()
    e = api.export(run_copy, out / "m.onnx", trial=n)
    assert e.files == (out / "m.onnx", out / "model.onnx.data") and leftovers(out) == ["m.onnx", "model.onnx.data"]
    (tmp_path / "orig.onnx").write_bytes(original)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    runs = []
    for path in (out / "m.onnx", tmp_path / "orig.onnx"):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        runs.append(sess.run(None, {sess.get_inputs()[0].name: x})[0])
    np.testing.assert_array_equal(runs[0], runs[1])
