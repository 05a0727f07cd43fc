"""The device table end to end on the tiny task: profile-device makes it here, a measured
search records its predictions and FLOPs next to the measurements, audit compares them,
and a predicted-latency search labels everything predicted."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from autocompress.cli import main
from tests.helpers import TINY_DATA_SPEC, TINY_MODEL_SPEC, search_args


@pytest.fixture(scope="module")
def table(cli_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("table") / "table.json"
    rc = main(["profile-device", "--out", str(out), "--profile", str(cli_inputs.profile), "--model", TINY_MODEL_SPEC,
               "--data", TINY_DATA_SPEC, "--space", str(cli_inputs.space), "--samples", "4"])
    assert rc == 0
    return out


def test_profile_device_writes_a_table_of_node_ratios(table):
    from autocompress.evaluation.graph_profile import GraphNode
    from autocompress.evaluation.predictor import LatencyTable

    t = LatencyTable.load(table)
    assert t.profile == "fast" and t.teacher_ms > 0
    assert t.entries and all(v >= 0 for v in t.entries.values()) and sum(t.entries.values()) > 0
    assert set(t.entries) == set(t.nodes) and all(GraphNode.from_dict(d).key == k for k, d in t.nodes.items())
    assert t.fit["samples"] == 4 and len(t.fit["sample_ratios"]) == 4
    ops = {d["op"].split(":")[-1] for d in t.nodes.values()}  # without the domain
    assert ops & {"QLinearConv", "QuantizeLinear", "DequantizeLinear"} and ops & {"Conv", "FusedConv"}  # the space's bit widths
    a, b, c = t.combine
    assert np.isfinite([a, b, c]).all() and a > 0


def test_a_measured_search_with_a_table_records_predictions_and_audit_compares(table, cli_inputs, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(search_args(cli_inputs, "--budget", 5, "--table", table, "--out", out)) == 0
    trials = pd.read_csv(out / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"]
    assert (done["latency_source"] == "measured").all()
    assert (done["latency_ratio_predicted"] > 0).all() and (done["macs_ratio"] > 0).all()
    assert json.loads((out / "run.json").read_text())["latency"]["mode"] == "measured"
    capsys.readouterr()
    assert main(["audit", str(out)]) == 0
    printed = capsys.readouterr().out
    stats = json.loads((out / "audit.json").read_text())
    assert stats["trials"] == int((done["duplicate_of"].isna()).sum())
    assert -1.0 <= stats["predictor_spearman"] <= 1.0 and 0.0 <= stats["predictor_within_10pct"] <= 1.0
    assert 0.0 <= stats["flops_within_10pct"] <= 1.0
    assert (out / "audit.png").read_bytes()[:4] == b"\x89PNG"
    per_trial = pd.read_csv(out / "audit.csv")
    assert len(per_trial) == stats["trials"] and set(per_trial["number"]) <= set(done["number"])
    assert "device-table predictor: Spearman" in printed and "FLOPs (MACs ratio):" in printed


def test_audit_predicts_a_runs_trials_from_their_parameters(table, cli_inputs, tmp_path, capsys):
    """audit --table rebuilds each trial's architecture: the same predictions as the ones
    recorded during a search with that table (latency depends on the graph only)."""
    out = tmp_path / "run"
    assert main(search_args(cli_inputs, "--budget", 4, "--table", table, "--out", out)) == 0
    recorded = pd.read_csv(out / "trials.csv").set_index("number")
    assert main(["audit", str(out), "--table", str(table)]) == 0
    from autocompress.audit import predict_trials
    from autocompress.run import RunDir

    again = predict_trials(RunDir(out), recorded.reset_index(), str(table), progress=lambda s: None).set_index("number")
    done = recorded["state"] == "COMPLETE"
    assert again.loc[done, "latency_ratio_predicted"].to_numpy() == pytest.approx(recorded.loc[done, "latency_ratio_predicted"].to_numpy())
    assert again.loc[done, "macs_ratio"].to_numpy() == pytest.approx(recorded.loc[done, "macs_ratio"].to_numpy())
    stats = json.loads((out / "audit.json").read_text())
    assert stats["table"] == str(table)


def test_a_predicted_search_times_nothing_and_says_so(table, cli_inputs, tmp_path, capsys):
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(search_args(cli_inputs, "--budget", 4, "--latency", "predicted", "--table", table, "--out", out)) == 0
    printed = capsys.readouterr().out
    trials = pd.read_csv(out / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"]
    assert (done["latency_source"] == "predicted").all() and (done["latency_passes"] == 0).all()
    assert (done["latency_ratio"] == done["latency_ratio_predicted"]).all()
    assert "latency PREDICTED" in (out / "summary.txt").read_text() and "latency PREDICTED" in printed
    assert (pd.read_csv(out / "pareto.csv")["latency_source"] == "predicted").all()
    assert main(["audit", str(out)]) == 2  # nothing measured to audit against: verify it on the device instead
    assert "latency was predicted" in capsys.readouterr().err
    assert main(["verify", str(out), "--repeats", "1"]) in (0, 1)  # a predicted run can be measured later
    assert len(pd.read_csv(out / "verify.csv")) == len(pd.read_csv(out / "pareto.csv"))


@pytest.mark.parametrize("extra, fragment", [
    (["--latency", "predicted"], "--latency predicted needs --table"),
    (["--table", "/nonexistent/t.json"], "--table: no such file"),
])
def test_bad_latency_options_are_refused(cli_inputs, tmp_path, capsys, extra, fragment):
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(search_args(cli_inputs, "--budget", 2, "--out", out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and not out.exists()


def test_a_table_for_another_profile_is_refused(table, cli_inputs, tmp_path, capsys):
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["search", "--model", TINY_MODEL_SPEC, "--data", TINY_DATA_SPEC, "--space", str(cli_inputs.space),
                 "--budget", "2", "--table", str(table), "--out", str(out)]) == 2  # default profile cpu-1thread, table for 'fast'
    err = capsys.readouterr().err
    assert "was made for profile 'fast'" in err and "cpu-1thread" in err and not out.exists()


def test_multi_fidelity_with_predicted_latency_ranks_rungs_on_predictions(table, cli_inputs, tmp_path):
    import optuna

    out = tmp_path / "run"
    assert main(search_args(cli_inputs, "--budget", 5, "--latency", "predicted", "--table", table,
                            "--fidelity", "4,10", "--reduction-factor", 2, "--out", out)) == 0
    study = optuna.load_study(study_name="autocompress", storage=f"sqlite:///{out / 'study.db'}")
    decided = [t for t in study.trials if t.user_attrs.get("rung_results") and "duplicate_of" not in t.user_attrs]
    assert decided and {t.state.name for t in decided} <= {"COMPLETE", "PRUNED"}
    for t in decided:
        if t.state.name == "COMPLETE":  # the rung's latency is the prediction for the same graph as the final one
            assert t.user_attrs["rung_results"][0]["latency_ratio"] == pytest.approx(t.user_attrs["latency_ratio"])
