"""Nodes of ONNX Runtime's optimized graph and their in-context costs: the pure parts
(describing a node, grouping profiler events by run, per-pass ratios) on hand-made
events, and the real profiler on small exported models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.config import QuantizeConfig
from autocompress.evaluation.graph_profile import GraphNode, describe_node, graph_nodes, node_costs, nodes_by_run, pass_ratios
from autocompress.export import export_onnx, quantize_onnx


def test_a_convolution_is_sized_by_its_multiply_accumulates_from_the_graphs_weight_shape():
    # QLinearConv's weight is prepacked: the profiler shows [16], the optimized graph's initializer [16, 8, 3, 3]
    node = describe_node("QLinearConv", {"kernel_shape": [3, 3], "strides": [1, 1], "group": 1},
                         [("uint8", [1, 8, 8, 8]), ("float", []), ("uint8", []), ("float", [16]), ("int8", [16])],
                         [None, [], [], [16, 8, 3, 3], [16]], [("uint8", [1, 8, 8, 16])])
    assert node.size == 8 * 8 * 16 * 8 * 9
    assert node.family == "QLinearConv uint8 k3x3 s1x1 dense"
    depthwise = describe_node("Conv", {"kernel_shape": [3, 3], "strides": [2, 2], "group": 16},
                              [("float", [1, 16, 8, 8]), ("float", [16, 1, 3, 3])], [None, None], [("float", [1, 16, 4, 4])])
    assert depthwise.size == 16 * 4 * 4 * 9 and depthwise.family == "Conv float k3x3 s2x2 depthwise"


def test_keys_tell_apart_what_changes_the_cost_and_only_that():
    def relu(shape, dtype="float"):
        return describe_node("Relu", {}, [(dtype, shape)], [None], [(dtype, shape)])

    assert relu([1, 8, 4, 4]).key == relu([1, 8, 4, 4]).key
    assert len({relu([1, 8, 4, 4]).key, relu([1, 16, 4, 4]).key, relu([1, 8, 4, 4], "uint8").key}) == 3
    assert relu([1, 8, 4, 4]).family == relu([1, 16, 4, 4]).family != relu([1, 8, 4, 4], "uint8").family
    assert relu([1, 8, 4, 4]).size == 2 * 128
    gemm = describe_node("Gemm", {"transB": 1}, [("float", [1, 32]), ("float", [10, 32])], [None, [10, 32]], [("float", [1, 10])])
    assert gemm.size == 10 * 32 and gemm.family == "Gemm float"
    weight_dq = describe_node("DequantizeLinear", {}, [("Int4x2", [16, 8, 1, 1])], [[16, 8, 1, 1]], [("float", [16, 8, 1, 1])])
    assert weight_dq.family == "DequantizeLinear Int4x2 weight"
    assert GraphNode.from_dict(json.loads(json.dumps(gemm.to_dict()))) == gemm


def test_the_domain_tells_an_nchwc_blocked_conv_from_the_plain_one():
    args = ({"kernel_shape": [5, 5], "strides": [2, 2], "group": 64}, [("float", [1, 64, 16, 16]), ("float", [64, 1, 5, 5])],
            [None, [64, 1, 5, 5]], [("float", [1, 64, 8, 8])])
    blocked, plain = describe_node("Conv", *args, domain="com.microsoft.nchwc"), describe_node("Conv", *args)
    assert blocked.op == "com.microsoft.nchwc:Conv" and plain.op == "Conv"
    assert blocked.key != plain.key and blocked.family != plain.family and blocked.size == plain.size == 64 * 64 * 25


def _run(ts, dur):
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}


def _node(name, ts, dur):
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": "Relu"}}


def test_profiler_events_are_grouped_by_run():
    events = [_run(0, 100), _node("a", 5, 10), _node("b", 20, 30), _run(200, 100), _node("a", 210, 12), _node("b", 230, 28),
              {"cat": "Node", "name": "a_fence_before", "ts": 4, "dur": 0}, _node("late", 500, 5)]  # outside any run: dropped
    assert nodes_by_run(events) == [{"a": 10.0, "b": 30.0}, {"a": 12.0, "b": 28.0}]


def test_pass_ratios_take_each_node_over_the_references_total_in_the_same_pass_then_the_median():
    # pass 0: the machine is fast (reference total 100); pass 1: twice as slow (200), so is the candidate
    ref = [{"x": 60.0, "y": 40.0}] * 2 + [{"x": 120.0, "y": 80.0}] * 2 + [{"x": 60.0, "y": 40.0}] * 2
    cand = [{"c": 30.0}] * 2 + [{"c": 60.0}] * 2 + [{"c": 45.0}] * 2  # pass 2: an outlier
    assert pass_ratios(ref, cand, 2) == {"c": pytest.approx(0.3)}
    with pytest.raises(ValueError, match="no complete pass"):
        pass_ratios(ref[:1], cand[:1], 2)


@pytest.fixture(scope="module")
def small_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("graphs")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    fp32 = export_onnx(model, (1, 8, 8), d / "fp32.onnx")
    calib = torch.randn(8, 1, 8, 8).numpy()
    int8 = d / "int8.onnx"
    quantize_onnx(fp32, int8, calib, QuantizeConfig("int8", "uint8", "qoperator", "minmax"))
    return fp32, int8


def test_graph_nodes_describe_what_onnxruntime_runs(small_models, fast_profile):
    fp32, int8 = small_models
    nodes = graph_nodes(fp32, fast_profile, (1, 8, 8))
    convs = [n for n in nodes if "k3x3" in n.family]
    assert len(convs) == 2 and {n.family.split()[-1] for n in convs} == {"dense", "depthwise"}
    # 1 -> 8 dense and 8 depthwise: the same MACs, at least (ORT's NCHWc layout may pad channels to its block)
    assert convs[0].size == convs[1].size >= 8 * 64 * 9
    assert next(n for n in nodes if n.op == "Gemm").size == 8 * 4
    quantized = graph_nodes(int8, fast_profile, (1, 8, 8))
    assert any(n.op.endswith("QLinearConv") for n in quantized) and not any(n.op.endswith("QLinearConv") for n in nodes)
    assert [n.key for n in graph_nodes(fp32, fast_profile, (1, 8, 8))] == [n.key for n in nodes]  # deterministic


def test_a_model_against_itself_costs_about_one_reference(small_models, fast_profile):
    fp32, int8 = small_models
    nodes, units = node_costs(fp32, fp32, fast_profile, (1, 8, 8), passes=5, runs=10)
    assert [n.key for n in nodes] == [n.key for n in graph_nodes(fp32, fast_profile, (1, 8, 8))]
    assert all(u >= 0 for u in units) and 0.6 < sum(units) < 1.6  # medians per node, over the reference's summed medians
    q_nodes, q_units = node_costs(fp32, int8, fast_profile, (1, 8, 8), passes=3, runs=10)
    assert len(q_units) == len(q_nodes) and np.isfinite(q_units).all() and sum(q_units) > 0
