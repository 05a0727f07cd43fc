"""The device latency table and its predictor: pure prediction on a tiny hand-made node
table, the combination fit, building a table from samples, layer extraction (the FLOPs
proxy) from a torch model, and the table file."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.config import QuantizeConfig
from autocompress.errors import ConfigError
from autocompress.evaluation.graph_profile import GraphNode
from autocompress.evaluation.predictor import LatencyTable, LayerConfig, fit_combination, layer_configs, spearman, within

CONV = GraphNode("Conv", "conv-16-32", "Conv float k3x3 s1x1 dense", 100.0)
RELU = GraphNode("Relu", "relu-32", "Relu float", 10.0)
FC = GraphNode("Gemm", "fc-32-10", "Gemm float", 5.0)
FC_LAYER = LayerConfig("linear", 32, 10)


def tiny_table(combine=(0.9, -0.01, 0.05)) -> LatencyTable:
    nodes = [CONV, RELU, FC]
    return LatencyTable("p", "fp", {CONV.key: 0.4, RELU.key: 0.05, FC.key: 0.02}, {n.key: n.to_dict() for n in nodes},
                        combine=combine, teacher_ms=0.5)


def test_prediction_combines_the_sum_of_entries_and_the_node_count():
    t = tiny_table()
    ratio, missing = t.predict_ratio([CONV, RELU, FC])
    assert ratio == pytest.approx(0.9 * (0.4 + 0.05 + 0.02) - 0.01 * 3 + 0.05) and missing == 0
    assert tiny_table((1.0, 0.0, 0.0)).predict_ratio([CONV, CONV])[0] == pytest.approx(0.8)


def test_a_missing_node_comes_from_its_family_else_its_operator_else_the_median_entry():
    t = tiny_table()
    wider = GraphNode("Conv", "conv-16-64", CONV.family, 200.0)  # one entry in the family: its value
    units, hit = t.node_units(wider)
    assert not hit and units == pytest.approx(0.4)
    assert t.predict_ratio([wider])[1] == 1
    strided = GraphNode("Conv", "conv-s2", "Conv float k3x3 s2x2 dense", 50.0)  # a family not in the table: the operator's
    assert t.node_units(strided) == (pytest.approx(0.4), False)
    unknown = GraphNode("QLinearConv", "q", "QLinearConv uint8 k3x3 s1x1 dense", 100.0)  # nothing alike: the median entry
    assert t.node_units(unknown) == (pytest.approx(0.05), False)


def test_a_family_with_several_sizes_follows_a_sublinear_power_law_in_size():
    small = GraphNode("Conv", "small", "fam", 100.0)
    big = GraphNode("Conv", "big", "fam", 400.0)
    t = LatencyTable("p", "fp", {small.key: 1.0, big.key: 2.5}, {n.key: n.to_dict() for n in (small, big)})
    mid = GraphNode("Conv", "mid", "fam", 200.0)
    units, hit = t.node_units(mid)
    assert not hit and units == pytest.approx(2 ** (np.log(2.5) / np.log(4)))  # through both points: k * size ** e
    assert t.node_units(GraphNode("Conv", "huge", "fam", 1600.0))[0] == pytest.approx(2.5 ** 2)
    assert t.node_units(small) == (1.0, True)
    falling = LatencyTable("p", "fp", {small.key: 2.0, big.key: 1.0}, {n.key: n.to_dict() for n in (small, big)})
    assert falling.node_units(GraphNode("Conv", "x", "fam", 10_000.0))[0] == pytest.approx(np.sqrt(2.0))  # e clipped to 0


def test_fit_combination_recovers_a_known_combination():
    sums = [0.5, 1.0, 0.3, 0.8, 0.6]
    counts = [30, 13, 40, 25, 52]
    measured = [0.9 * s - 0.004 * n + 0.03 for s, n in zip(sums, counts)]
    assert fit_combination(sums, counts, measured) == (pytest.approx(0.9), pytest.approx(-0.004), pytest.approx(0.03))
    assert fit_combination([2.0], [3], [1.0]) == (pytest.approx(0.5), 0.0, 0.0)
    assert fit_combination([], [], []) == (1.0, 0.0, 0.0)


def test_a_table_from_samples_keeps_medians_and_fits_the_measured_ratios():
    profile = SimpleNamespace(name="p", fingerprint="fp")
    other = GraphNode("Add", "add", "Add float", 3.0)
    samples = [([CONV, RELU], [0.40, 0.05], 0.42), ([CONV, FC, other], [0.44, 0.02, 0.03], 0.47),
               ([CONV, RELU, FC], [0.42, 0.07, 0.02], 0.49), ([RELU], [0.06], 0.09), ([CONV, RELU, FC, other], [0.41, 0.05, 0.02, 0.02], 0.5)]
    t = LatencyTable.from_samples(profile, samples, teacher_ms=0.5, fit={"samples": 5})
    assert t.entries[CONV.key] == pytest.approx(0.415) and t.entries[RELU.key] == pytest.approx(0.055)
    assert set(t.nodes) == {CONV.key, RELU.key, FC.key, other.key} and t.fit == {"samples": 5}
    a, b, c = t.combine
    sums = [sum(u) for _, u, _ in samples]
    assert (a, b, c) == fit_combination(sums, [len(n) for n, _, _ in samples], [r for _, _, r in samples])
    predicted = [t.predict_ratio(n)[0] for n, _, _ in samples]
    assert within(predicted, [r for _, _, r in samples], 0.2) == 1.0  # in-sample, with medians for entries


def test_macs_of_strided_and_grouped_convs():
    assert LayerConfig("conv", 8, 16, (3, 3), (2, 2), 1, (8, 8)).macs == 16 * 8 * 9 * 4 * 4
    assert LayerConfig("conv", 8, 8, (3, 3), (1, 1), 8, (4, 4)).macs == 8 * 1 * 9 * 16
    assert FC_LAYER.macs == 320


def test_spearman_and_within():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert within([1.0, 1.05, 1.2, 0.85], [1.0, 1.0, 1.0, 1.0]) == pytest.approx(0.5)


def test_layer_configs_follow_the_model_and_its_quantization():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    x = torch.randn(2, 3, 12, 12)
    fp32 = layer_configs(model, x, QuantizeConfig())
    assert [l.kind for l in fp32] == ["conv", "conv", "linear"]
    assert fp32[0].hw == (12, 12) and fp32[1].groups == 8 and fp32[1].stride == (2, 2) and fp32[1].hw == (12, 12)
    assert all(l.bits == "fp32" and l.fmt == "" for l in fp32)
    mixed = layer_configs(model, x, QuantizeConfig("int8", "uint8", "qoperator", "minmax", ("int8", "int4", "fp32")))
    assert [(l.bits, l.fmt) for l in mixed] == [("int8", "qoperator"), ("int4", "qdq"), ("fp32", "")]


def test_the_table_file_round_trips_and_bad_files_are_refused(tmp_path):
    t = tiny_table()
    t.save(tmp_path / "t.json")
    back = LatencyTable.load(tmp_path / "t.json")
    assert back == t and back.predict_ratio([CONV, FC])[0] == t.predict_ratio([CONV, FC])[0]
    with pytest.raises(ConfigError, match="no such file"):
        LatencyTable.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"entries": []}))
    with pytest.raises(ConfigError, match="not a latency table of version 3"):
        LatencyTable.load(tmp_path / "bad.json")
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a latency table"):
        LatencyTable.load(tmp_path / "garbage.json")


def test_audit_stats_on_a_small_frame():
    import pandas as pd

    from autocompress.audit import audit_stats

    frame = pd.DataFrame({"measured": [0.2, 0.4, 0.6, 0.8], "predicted": [0.21, 0.38, 0.7, 0.79], "macs_ratio": [0.05, 0.5, 0.3, 0.9]})
    s = audit_stats(frame)
    assert s["trials"] == 4 and s["predictor_spearman"] == pytest.approx(1.0)
    assert s["predictor_within_10pct"] == pytest.approx(0.75)  # 0.7 vs 0.6 is 17% off
    assert s["flops_spearman"] == pytest.approx(0.8) and s["flops_within_10pct"] == pytest.approx(0.0)
    assert s["predictor_median_error"] == pytest.approx(np.median([0.05, -0.05, 0.7 / 0.6 - 1, -0.0125]))
