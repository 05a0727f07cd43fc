"""Multi-fidelity searches end to end on the tiny task (local backend): candidates that
are not promoted are PRUNED with their rung results and never reach the front; a resumed
run ranks against the rungs measured before it."""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest
import yaml

from autocompress.cli import main
from tests.helpers import SPACE_YAML, search_args


@pytest.fixture(scope="module")
def fidelity_run(cli_inputs, tmp_path_factory):
    d = tmp_path_factory.mktemp("fidelity")
    space = d / "space.yaml"  # a searched learning rate: few duplicates among a handful of trials
    space.write_text(SPACE_YAML.replace("  batch_size: 32\n", "  batch_size: 32\n  lr: {low: 1.0e-4, high: 3.0e-3, log: true}\n"))
    inputs = type(cli_inputs)(dir=d, space=space, profile=cli_inputs.profile)
    rc = main(search_args(inputs, "--budget", 8, "--fidelity", "4,10", "--reduction-factor", 2, "--seed", 1, "--out", d / "run"))
    assert rc == 0
    return d / "run"


def _study(out):
    return optuna.load_study(study_name="autocompress", storage=f"sqlite:///{out / 'study.db'}")


def test_the_fine_tune_length_leaves_the_space_and_the_run_records_the_rungs(fidelity_run):
    space = yaml.safe_load((fidelity_run / "space.yaml").read_text())
    assert space["finetune"]["steps"] == [0, 10]  # the full rung, or no fine-tune (the space had 0)
    manifest = json.loads((fidelity_run / "run.json").read_text())
    assert manifest["fidelity"] == {"rungs": [4, 10], "reduction_factor": 2}
    assert {t.params.get("finetune.steps") for t in _study(fidelity_run).trials} <= {0, 10}
    recipes = {t.user_attrs.get("recipe"): t for t in _study(fidelity_run).trials}
    int8 = recipes["int8 teacher"]  # a hand recipe without a fine-tune is still tried: no rungs, complete
    assert int8.params["finetune.steps"] == 0 and int8.state.name == "COMPLETE" and not int8.user_attrs.get("rung_results")


def test_stopped_candidates_are_pruned_and_only_full_fidelity_results_are_complete(fidelity_run):
    trials = _study(fidelity_run).trials
    states = [t.state.name for t in trials if t.state.name != "WAITING"]
    assert len(states) == 8 and "PRUNED" in states and "COMPLETE" in states
    for t in trials:
        rungs = t.user_attrs.get("rung_results")
        if t.state.name == "PRUNED":
            assert t.values is None and rungs[-1]["promoted"] is False and t.user_attrs["stop_reason"].startswith("stopped at rung 0 (4 steps)")
        elif t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs and t.params["finetune.steps"] == 10:
            assert [r["promoted"] for r in rungs] == [True] and rungs[0]["steps"] == 4  # went through every rung
        elif t.state.name == "COMPLETE":
            assert not rungs  # no fine-tune: no rungs
    table = pd.read_csv(fidelity_run / "trials.csv")
    pruned = table[table["state"] == "PRUNED"]
    assert not pruned["pareto"].any() and pruned["val_accuracy"].isna().all()
    assert pruned["rung0_val_accuracy"].between(0, 1).all() and (pruned["rung0_latency_ratio"] > 0).all()
    front = pd.read_csv(fidelity_run / "pareto.csv")
    assert set(front["number"]) <= set(table.loc[table["state"] == "COMPLETE", "number"])
    for n in table.loc[table["state"] == "PRUNED", "number"]:
        assert not (fidelity_run / "trials" / str(n)).exists()
    assert "stopped at a rung" in (fidelity_run / "summary.txt").read_text()


def test_the_promotion_rule_holds_for_every_decision(fidelity_run):
    """Replaying the decisions in order: each candidate was promoted iff it was within the
    top ceil(n/eta) of the rung's results so far."""
    from autocompress.fidelity import Fidelity, RungBoard

    board = RungBoard(Fidelity((4, 10), 2))
    decided = [t for t in _study(fidelity_run).trials if t.user_attrs.get("rung_results") and "duplicate_of" not in t.user_attrs]
    assert len(decided) >= 3
    for t in sorted(decided, key=lambda t: t.datetime_complete):
        (r,) = t.user_attrs["rung_results"]
        assert board.decide(0, t.number, r["score"], r["latency_ratio"]).promote == r["promoted"]


def test_a_resumed_fidelity_run_ranks_against_the_earlier_rungs(fidelity_run, cli_inputs, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(fidelity_run, out)
    before = sum(1 for t in _study(out).trials if t.user_attrs.get("rung_results") and "duplicate_of" not in t.user_attrs)
    assert main(["search", "--resume", str(out), "--budget", "10"]) == 0
    new = [t for t in _study(out).trials if t.number >= 8 and t.user_attrs.get("rung_results") and "duplicate_of" not in t.user_attrs]
    assert new
    for t in new:  # ranked among n results: n counts the earlier run's rung results too
        assert t.user_attrs["rung_results"][0]["of"] > before
        reason = t.user_attrs.get("stop_reason")
        if reason:
            assert f"of {t.user_attrs['rung_results'][0]['of']} " in reason
    assert main(["search", "--resume", str(out), "--budget", "11", "--fidelity", "5,10"]) == 2  # a different fidelity is refused
