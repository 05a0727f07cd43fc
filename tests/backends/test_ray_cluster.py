"""The Ray backend on a loopback cluster it did not start: two nodes on 127.0.0.1 with
token authentication, the head carrying the custom resource hw:edge and no CPUs, so the
trials (1 CPU each) run on the worker node, while every latency measurement (the
teacher's reference included) and, with --accuracy-on-device, every val accuracy runs on
the node with hw:edge, shown by node ids. Marked `ray`."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from tests.helpers import FAST_PROFILE_YAML, SPACE_YAML, TINY_DATA_SPEC, TINY_MODEL_SPEC
from tests.ray_cluster import LoopbackCluster

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    with LoopbackCluster(head_cpus=0, worker_cpus=2) as c:  # trials can only run on the worker
        yield c


def test_the_cluster_listens_on_loopback_only(cluster):
    addresses = cluster.listen_addresses()
    assert addresses, "no listening socket found for the cluster's processes"
    assert all(a.startswith(("127.0.0.1:", "::ffff:127.0.0.1:")) for a in addresses), addresses


def test_search_on_the_cluster_times_latency_only_on_the_resource_node(cluster, tmp_path):
    nodes = cluster.nodes()
    (edge,) = [n["id"] for n in nodes if n["resources"].get("hw:edge")]
    (worker,) = [n["id"] for n in nodes if n["id"] != edge]
    space, profile, out = tmp_path / "space.yaml", tmp_path / "profile.yaml", tmp_path / "run"
    space.write_text(SPACE_YAML)
    profile.write_text(FAST_PROFILE_YAML)
    done = subprocess.run(
        [sys.executable, "-m", "autocompress.cli", "search", "--model", TINY_MODEL_SPEC, "--data", TINY_DATA_SPEC,
         "--space", str(space), "--profile", str(profile), "--budget", "6", "--out", str(out), "--backend", "ray",
         "--ray-address", cluster.address, "--latency-resource", "hw:edge", "--accuracy-on-device", "--max-concurrent", "3"],
        capture_output=True, text=True, env={**cluster.env, "AUTOCOMPRESS_CACHE": str(tmp_path / "cache")}, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["teacher"]["latency_node"] == edge and manifest["teacher"]["accuracy_node"] == edge
    trials = pd.read_csv(out / "trials.csv")
    built = trials[(trials["state"] == "COMPLETE") & trials["duplicate_of"].isna()]
    assert len(built) >= 3
    assert set(built["latency_node"]) == {edge}  # measured on the device's node ...
    assert set(built["accuracy_node"]) == {edge}  # (accuracy too, as asked) ...
    assert set(built["trial_node"]) == {worker}  # ... while fine-tuning ran on the other one
    front = pd.read_csv(out / "pareto.csv")
    assert len(front) >= 1 and all((out / rel).is_file() for rel in front["onnx"])
    # the cluster is still up after the run: the run left a cluster it did not start alone
    assert len(cluster.nodes()) == 2


def test_a_missing_resource_is_refused_before_anything_is_written(cluster, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "autocompress.cli", "search", "--model", TINY_MODEL_SPEC, "--data", TINY_DATA_SPEC,
         "--budget", "2", "--out", str(out), "--backend", "ray", "--ray-address", cluster.address, "--latency-resource", "hw:phone"],
        capture_output=True, text=True, env={**cluster.env, "AUTOCOMPRESS_CACHE": str(tmp_path / "cache")}, timeout=300,
    )
    assert done.returncode == 2
    assert "--latency-resource 'hw:phone': no node of the cluster carries it" in done.stderr.strip().splitlines()[-1]
    assert not out.exists()
