"""The device latency table and its predictor: pure prediction on a tiny hand-made table,
the overhead fit, layer extraction from a torch model, and the table file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.config import QuantizeConfig
from autocompress.errors import ConfigError
from autocompress.evaluation.predictor import LatencyTable, LayerConfig, fit_overhead, layer_configs, spearman, within

CONV = LayerConfig("conv", 16, 32, (3, 3), (1, 1), 1, (8, 8))
DW = LayerConfig("conv", 32, 32, (3, 3), (1, 1), 32, (8, 8))
FC = LayerConfig("linear", 32, 10)


def tiny_table() -> LatencyTable:
    layers = [CONV, DW, FC]
    return LatencyTable("p", "fp", {CONV.key: 2.0, DW.key: 0.5, FC.key: 0.1}, {l.key: l.to_dict() for l in layers},
                        teacher_units=10.0, reference_ms=0.05, overhead=(1.0, 0.2))


def test_prediction_is_the_sum_of_entries_plus_the_overhead_over_the_teacher():
    t = tiny_table()
    units, missing = t.predict_units([CONV, DW, FC])
    assert units == pytest.approx(2.0 + 0.5 + 0.1 + 1.0 + 0.2 * 3) and missing == 0
    assert t.predict_ratio([CONV, DW, FC])[0] == pytest.approx(units / 10.0)


def test_a_missing_layer_is_scaled_from_the_nearest_of_its_family_by_macs():
    t = tiny_table()
    wider = LayerConfig("conv", 16, 64, (3, 3), (1, 1), 1, (8, 8))  # twice CONV's MACs
    units, hit = t.layer_units(wider)
    assert not hit and units == pytest.approx(4.0)
    assert wider.macs == 2 * CONV.macs
    int8 = LayerConfig("conv", 16, 32, (3, 3), (1, 1), 1, (8, 8), "int8", "qdq", "int8")  # no int8 entry at all
    assert np.isnan(t.layer_units(int8)[0])
    depthwise_other = LayerConfig("conv", 64, 64, (3, 3), (1, 1), 64, (8, 8))  # depthwise: from DW, not CONV
    assert t.layer_units(depthwise_other)[0] == pytest.approx(0.5 * depthwise_other.macs / DW.macs)


def test_macs_of_strided_and_grouped_convs():
    assert LayerConfig("conv", 8, 16, (3, 3), (2, 2), 1, (8, 8)).macs == 16 * 8 * 9 * 4 * 4
    assert LayerConfig("conv", 8, 8, (3, 3), (1, 1), 8, (4, 4)).macs == 8 * 1 * 9 * 16
    assert FC.macs == 320


def test_fit_overhead_recovers_a_known_overhead():
    sums = [5.0, 10.0, 20.0, 40.0]
    counts = [3, 5, 8, 12]
    measured = [s + 0.7 + 0.05 * n for s, n in zip(sums, counts)]
    c0, c1 = fit_overhead(sums, counts, measured)
    assert (c0, c1) == (pytest.approx(0.7), pytest.approx(0.05))
    assert fit_overhead([2.0], [3], [2.5]) == (pytest.approx(0.5), 0.0)
    assert fit_overhead([], [], []) == (0.0, 0.0)


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
    assert back == t and back.predict_ratio([CONV])[0] == t.predict_ratio([CONV])[0]
    with pytest.raises(ConfigError, match="no such file"):
        LatencyTable.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"entries": []}))
    with pytest.raises(ConfigError, match="not a latency table of version 1"):
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


def test_a_family_with_several_sizes_is_interpolated_affinely_in_macs():
    small = LayerConfig("conv", 8, 8, (3, 3), (1, 1), 1, (8, 8))
    big = LayerConfig("conv", 8, 32, (3, 3), (1, 1), 1, (8, 8))  # 4x the MACs
    t = LatencyTable("p", "fp", {small.key: 1.0, big.key: 2.5}, {l.key: l.to_dict() for l in (small, big)}, teacher_units=10.0)
    mid = LayerConfig("conv", 8, 16, (3, 3), (1, 1), 1, (8, 8))  # 2x small's MACs: on the line through both
    units, hit = t.layer_units(mid)
    assert not hit and units == pytest.approx(1.0 + (2.5 - 1.0) / 3)  # a fixed cost plus a per-MAC cost, not 2 x 1.0
    assert t.layer_units(small) == (1.0, True)
