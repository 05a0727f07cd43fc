"""The nodes ONNX Runtime actually runs for a model, and their costs in context.

A model's latency is not the sum of its layers timed alone: ONNX Runtime fuses and
re-lays-out the graph (Conv+Relu, NCHWc reorders, Q/DQ pairs into QLinearConv, int4
weights dequantized per run), and on a model of a few hundred microseconds every node's
dispatch counts. So the units here are the nodes of ORT's *optimized* graph under the
profile's session options, described by what determines their cost (operator, attributes,
input and weight shapes, element types), and timed *inside* the whole model with ORT's
per-node profiler.

`graph_nodes` describes a model's nodes (one profiled run, for the shapes; its times are not
used). `node_costs` times a model's nodes interleaved with a reference model (the teacher),
in blocks over passes, and returns each node's kernel time as a ratio to the reference's
summed kernel time in the same pass (absolute times drift; these ratios do not), median
over passes. Only this module touches onnxruntime's profiler.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

_CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcFusedConv"}
_MATMUL_OPS = {"Gemm", "QGemm", "MatMul", "FusedGemm", "MatMulInteger", "QLinearMatMul", "FusedMatMul", "MatMulNBits"}
_ATTRS = ("kernel_shape", "strides", "group", "dilations", "transA", "transB", "activation")


@dataclass(frozen=True)
class GraphNode:
    """One node of the optimized graph as it runs: `key` identifies its cost (same key,
    same kernel on the same shapes); `family` groups keys whose cost grows with `size`
    (multiply-accumulates for convolutions and matrix products, elements otherwise)."""

    op: str
    key: str
    family: str
    size: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GraphNode":
        return cls(**d)


def describe_node(op: str, attrs: dict[str, Any], inputs: Sequence[tuple[str, list[int]]],
                  weights: Sequence[list[int] | None], outputs: Sequence[tuple[str, list[int]]], domain: str = "") -> GraphNode:
    """A GraphNode from what ORT reports for a node: `inputs`/`outputs` as (element type,
    shape) from the profiler; `weights` the optimized graph's initializer shape per input
    (None where an input is not an initializer; prepacked weights show only there);
    `domain` the operator's domain in the optimized graph, which tells kernels of one name
    apart (an NCHWc-blocked Conv, taken when the channel counts suit the CPU's vector width,
    runs several times faster than the plain Conv ORT falls back to otherwise). Pure."""
    kind = op
    op = f"{domain}:{op}" if domain else op
    in_types = ",".join(t for t, _ in inputs[:1])
    out_elems = float(np.prod(outputs[0][1])) if outputs and outputs[0][1] else 1.0
    in_elems = float(np.prod(inputs[0][1])) if inputs and inputs[0][1] else 1.0
    const = [list(w) if w is not None else None for w in weights]
    key = json.dumps([op, sorted((k, v) for k, v in attrs.items()), [list(s) for _, s in inputs], [t for t, _ in inputs],
                      const, [list(s) for _, s in outputs]], separators=(",", ":"))
    weight_from_init = any(w is not None for w in const) and kind in ("DequantizeLinear", "QuantizeLinear")
    if kind in _CONV_OPS and "kernel_shape" in attrs:
        shapes = [w for w in const if w is not None and len(w) == 4] + [s for _, s in inputs[1:] if len(s) == 4]
        cin_per_group = shapes[0][1] if shapes else 1
        kernel = [int(k) for k in attrs["kernel_shape"]]
        size = out_elems * cin_per_group * float(np.prod(kernel))
        depthwise = int(attrs.get("group", 1)) > 1 and cin_per_group == 1
        family = f"{op} {in_types} k{'x'.join(map(str, kernel))} s{'x'.join(map(str, attrs.get('strides', [1])))} " \
                 f"{'depthwise' if depthwise else 'dense'}"
    elif kind in _MATMUL_OPS:
        k = inputs[0][1][-1] if inputs and inputs[0][1] else 1
        size = out_elems * float(k)
        family = f"{op} {in_types}"
    else:
        size = out_elems + in_elems
        family = f"{op} {in_types}{' weight' if weight_from_init else ''}"
    return GraphNode(op, key, family, size)


def _profiled_session(profile, path: str | Path, workdir: Path):
    """An ORT session for `path` under `profile` with the profiler on, saving its optimized
    graph to workdir/optimized.onnx (hardware-specific: read here, never deployed)."""
    import onnxruntime as ort

    so = profile.session_options()
    so.optimized_model_filepath = str(workdir / "optimized.onnx")
    so.enable_profiling = True
    so.profile_file_prefix = str(workdir / "profile")
    return ort.InferenceSession(str(path), so, providers=list(profile.providers))


def _end(sess, workdir: Path) -> tuple[list[dict], Any]:
    """(the profiler's events, the optimized graph)."""
    import onnx

    events = json.loads(Path(sess.end_profiling()).read_text())
    return events, onnx.load(str(workdir / "optimized.onnx"))


def _graph_info(model) -> dict[str, tuple[dict[str, Any], list[list[int] | None], str]]:
    import onnx

    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute if a.name in _ATTRS}
        attrs = {k: list(v) if isinstance(v, (list, tuple)) else (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
        out[n.name] = (attrs, [inits.get(i) for i in n.input], n.domain)
    return out


def _typed(entries: Sequence[dict]) -> list[tuple[str, list[int]]]:
    return [next(iter(e.items())) for e in entries]


_SUFFIX = "_kernel_time"


def _kernel_events(events: Sequence[dict]):
    """(node name, event) for each node kernel the profiler timed."""
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith(_SUFFIX):
            yield e["name"][: -len(_SUFFIX)], e


def nodes_by_run(events: Sequence[dict]) -> list[dict[str, float]]:
    """Per run of the model (ORT's 'model_run' events, in order): node name -> kernel time
    (microseconds). Pure."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    nodes = sorted((e["ts"], name, e["dur"]) for name, e in _kernel_events(events))
    out: list[dict[str, float]] = [{} for _ in runs]
    i = 0
    for ts, name, dur in nodes:
        while i < len(runs) and ts > runs[i][1]:
            i += 1
        if i == len(runs):
            break
        if ts >= runs[i][0]:
            out[i][name] = out[i].get(name, 0.0) + float(dur)
    return out


def _describe_all(events: Sequence[dict], model) -> dict[str, GraphNode]:
    info = _graph_info(model)
    described: dict[str, GraphNode] = {}
    for name, e in _kernel_events(events):
        if name in described:
            continue
        args = e.get("args", {})
        attrs, weights, domain = info.get(name, ({}, [], ""))
        described[name] = describe_node(args.get("op_name", "?"), attrs, _typed(args.get("input_type_shape", [])), weights,
                                        _typed(args.get("output_type_shape", [])), domain)
    return described


def graph_nodes(path: str | Path, profile, timing) -> list[GraphNode]:
    """The nodes ORT runs for the model at `path` under `profile`, in run order (from one
    profiled run: its times are not used). `timing`: the task's timing feed, or one
    sample's shape (HardwareProfile.feed_for)."""
    with tempfile.TemporaryDirectory(prefix="autocompress-nodes-") as d:
        sess = _profiled_session(profile, path, Path(d))
        sess.run(None, profile.feed_for(sess, timing))
        return list(_describe_all(*_end(sess, Path(d))).values())


def node_costs(reference_path: str | Path, candidate_path: str | Path, profile, timing, *,
               passes: int = 9, runs: int = 20) -> tuple[list[GraphNode], list[float]]:
    """(the candidate's nodes, each node's kernel time / the reference model's summed kernel
    time), both models profiled in alternating blocks of `runs` runs for `passes` pairs,
    each node's ratio taken per pass (medians within the pass), then the median over
    passes. Run where nothing else computes (a LatencyWorker)."""
    with tempfile.TemporaryDirectory(prefix="autocompress-nodes-") as d:
        dirs = {tag: Path(d) / tag for tag in ("ref", "cand")}
        sessions = {}
        for tag, path in (("ref", reference_path), ("cand", candidate_path)):
            dirs[tag].mkdir()
            sess = _profiled_session(profile, path, dirs[tag])
            sessions[tag] = (sess, profile.feed_for(sess, timing))
        warmup = max(profile.warmup, 3)
        for sess, feed in sessions.values():
            for _ in range(warmup):
                sess.run(None, feed)
        for p in range(passes):
            for tag in (("ref", "cand") if p % 2 == 0 else ("cand", "ref")):
                sess, feed = sessions[tag]
                for _ in range(runs):
                    sess.run(None, feed)
        ref_events, _ = _end(sessions["ref"][0], dirs["ref"])
        cand_events, cand_graph = _end(sessions["cand"][0], dirs["cand"])
        costs = pass_ratios(nodes_by_run(ref_events)[warmup:], nodes_by_run(cand_events)[warmup:], runs)
        described = _describe_all(cand_events, cand_graph)
        return list(described.values()), [costs.get(name, 0.0) for name in described]


def pass_ratios(ref_runs: Sequence[dict[str, float]], cand_runs: Sequence[dict[str, float]], runs: int) -> dict[str, float]:
    """Node name -> median over passes of (the node's median kernel time in the pass's
    candidate block / the sum of the reference's per-node medians in the pass's reference
    block). Blocks are consecutive `runs` runs. Pure."""
    n = min(len(ref_runs), len(cand_runs)) // runs
    if n == 0:
        raise ValueError("no complete pass of profiled runs")
    per_pass: dict[str, list[float]] = {}
    for p in range(n):
        ref_block = ref_runs[p * runs:(p + 1) * runs]
        cand_block = cand_runs[p * runs:(p + 1) * runs]
        ref_total = sum(float(np.median([r.get(k, 0.0) for r in ref_block])) for k in set().union(*ref_block))
        for k in set().union(*cand_block):
            per_pass.setdefault(k, []).append(float(np.median([r.get(k, 0.0) for r in cand_block])) / ref_total)
    return {k: float(np.median(v)) for k, v in per_pass.items()}


__all__ = ["GraphNode", "describe_node", "graph_nodes", "node_costs", "nodes_by_run", "pass_ratios"]
