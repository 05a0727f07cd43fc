"""Hardware profiles: built-ins, validation, ORT session options."""

from __future__ import annotations

import dataclasses

import onnxruntime as ort
import pytest
import yaml

from autocompress.errors import ConfigError
from autocompress.hardware import PROFILES_DIR, HardwareProfile, builtin_profiles, check_available, load_profile, profile_from_dict, read_profile


def test_builtin_cpu_1thread_loads_as_documented():
    assert "cpu-1thread" in builtin_profiles()
    p = load_profile("cpu-1thread")
    assert p == load_profile()  # the default
    assert p.name == "cpu-1thread"
    assert p.providers == ("CPUExecutionProvider",)
    assert (p.intra_op_threads, p.inter_op_threads, p.batch_size) == (1, 1, 1)
    assert (p.warmup, p.repeats, p.passes, p.graph_optimization) == (20, 40, 7, "all")
    assert p.to_dict() == {**yaml.safe_load((PROFILES_DIR / "cpu-1thread.yaml").read_text()), "providers": ["CPUExecutionProvider"]}


def test_profile_from_a_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nwarmup: 0\nrepeats: 3\npasses: 1\nbatch_size: 8\ngraph_optimization: basic\n")
    p = load_profile(str(path))
    assert (p.name, p.warmup, p.repeats, p.passes, p.batch_size, p.graph_optimization) == ("mine", 0, 3, 1, 8, "basic")
    assert p.intra_op_threads == 1  # default


@pytest.mark.parametrize(
    "data, fragments",
    [
        ({"name": "x", "threads": 2}, ["unknown hardware-profile key 'threads'"]),
        ({"warmup": 2}, ["profile name must be a non-empty string"]),
        ({"name": ""}, ["profile name must be a non-empty string"]),
        ({"name": 3}, ["profile name must be a non-empty string", "3"]),
        ({"name": "x", "description": 5}, ["description must be a string"]),
        ({"name": "x", "repeats": "40"}, ["repeats must be an integer in [1, 100000]", "'40'"]),
        ({"name": "x", "repeats": 0}, ["repeats must be an integer in [1, 100000]", "0"]),
        ({"name": "x", "passes": 2.0}, ["passes must be an integer", "2.0"]),
        ({"name": "x", "warmup": True}, ["warmup must be an integer", "True"]),
        ({"name": "x", "batch_size": -1}, ["batch_size must be an integer in [1, 65536]"]),
        ({"name": "x", "intra_op_threads": 2000}, ["intra_op_threads must be an integer in [0, 1024]", "2000"]),
        ({"name": "x", "graph_optimization": "max"}, ["graph_optimization must be one of", "'max'"]),
        ({"name": "x", "providers": "CPUExecutionProvider"}, ["providers must be a non-empty list"]),
        ({"name": "x", "providers": []}, ["providers must be a non-empty list"]),
        ({"name": "x", "providers": [1]}, ["providers must be a non-empty list"]),
        ({"name": "x", "input_shape": [3, 0]}, ["input_shape must be a non-empty list of sizes >= 1", "[3, 0]"]),
        ({"name": "x", "input_shape": "3x32x32"}, ["input_shape must be a non-empty list", "'3x32x32'"]),
        ({"name": "x", "cpu_affinity": [0, 0]}, ["cpu_affinity must be a non-empty list of distinct core numbers", "[0, 0]"]),
        ({"name": "x", "cpu_affinity": [-1]}, ["cpu_affinity must be a non-empty list", "[-1]"]),
        ({"name": "x", "target_ci": 0}, ["target_ci must be a number in (0, 1)", "0"]),
        ({"name": "x", "target_ci": "3%"}, ["target_ci must be a number in (0, 1)", "'3%'"]),
        ({"name": "x", "passes": 9, "max_passes": 5}, ["max_passes must be >= passes", "5 < passes 9"]),
        ({"name": "x", "search_max_passes": 3}, ["search_max_passes must be between passes and max_passes", "got 3", "passes 7"]),
        ({"name": "x", "search_max_passes": 40}, ["search_max_passes must be between passes and max_passes", "got 40", "max_passes 31"]),
        ({"name": "x", "search_max_passes": 7.5}, ["search_max_passes must be an integer"]),
        (["name", "x"], ["hardware profile must be a mapping"]),
    ],
)
def test_invalid_profiles_raise_config_error(data, fragments):
    with pytest.raises(ConfigError) as info:
        profile_from_dict(data)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "NoSuchExecutionProvider"])
def test_unavailable_provider_is_refused(tmp_path, provider):
    if provider in ort.get_available_providers():
        pytest.skip(f"{provider} is available here")
    path = tmp_path / "gpu.yaml"
    path.write_text(f"name: gpu\nproviders: [{provider}, CPUExecutionProvider]\n")
    with pytest.raises(ConfigError, match=f"execution provider '{provider}' is not available"):
        load_profile(str(path))
    with pytest.raises(ConfigError):
        check_available(HardwareProfile(name="gpu", providers=(provider,)))


def test_load_profile_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown profile 'no-such-profile'.*cpu-1thread"):
        load_profile("no-such-profile")
    with pytest.raises(ConfigError, match="no such file"):
        load_profile(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [oops\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(str(broken))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("name: u\nrepeat: 3\n")
    with pytest.raises(ConfigError, match=f"unknown hardware-profile key 'repeat'.*{unknown.name}"):
        load_profile(str(unknown))


def test_dict_round_trip_and_fingerprint():
    p = load_profile()
    assert profile_from_dict(p.to_dict()) == p
    assert profile_from_dict(p.to_dict()).fingerprint == p.fingerprint
    assert dataclasses.replace(p, repeats=41).fingerprint != p.fingerprint
    assert dataclasses.replace(p, name="other").fingerprint != p.fingerprint


def test_session_options_follow_the_profile(tmp_path):
    p = HardwareProfile(name="t", intra_op_threads=2, inter_op_threads=1, graph_optimization="basic")
    so = p.session_options()
    assert so.intra_op_num_threads == 2
    assert so.inter_op_num_threads == 1
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert HardwareProfile(name="t", graph_optimization="disable").session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def test_every_builtin_profile_loads_or_is_refused_with_the_reason():
    assert {"cpu-1thread", "cpu-all-cores", "cpu-batch32", "cuda"} <= set(builtin_profiles())
    assert load_profile("cpu-all-cores").intra_op_threads == 0
    assert load_profile("cpu-batch32").batch_size == 32
    cuda = read_profile("cuda")
    assert cuda.providers[0] == "CUDAExecutionProvider"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ConfigError, match="profile 'cuda': execution provider 'CUDAExecutionProvider' is not available here"):
            load_profile("cuda")
    for name in builtin_profiles():  # every built-in documents itself and round-trips
        p = read_profile(name)
        assert p.description and profile_from_dict(p.to_dict()) == p


def test_profiles_command_lists_every_builtin_and_whether_it_runs_here(capsys):
    from autocompress.cli import main

    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line and not line.startswith(("Use", " "))}
    for name in builtin_profiles():
        assert name in rows
    assert rows["cpu-1thread"].split()[4] == "yes"
    cuda_here = "CUDAExecutionProvider" in ort.get_available_providers()
    assert rows["cuda"].split()[4] == ("yes" if cuda_here else "no")
    assert cuda_here or "cuda: execution provider 'CUDAExecutionProvider' is not available here" in out


def test_cpu_affinity_outside_this_machine_is_refused(tmp_path):
    import os

    usable = sorted(os.sched_getaffinity(0))
    path = tmp_path / "pinned.yaml"
    path.write_text(f"name: pinned\ncpu_affinity: [{usable[0]}, {max(usable) + 64}]\n")
    with pytest.raises(ConfigError, match=f"cpu_affinity core {max(usable) + 64} is not available here"):
        load_profile(str(path))
    path.write_text(f"name: pinned\ncpu_affinity: [{usable[0]}]\ninput_shape: [3, 32, 32]\n")
    p = load_profile(str(path))
    assert p.cpu_affinity == (usable[0],) and p.timing_shape((1, 8, 8)) == (3, 32, 32)
    assert load_profile().timing_shape((1, 8, 8)) == (1, 8, 8)
    assert "cpu_affinity" not in load_profile().to_dict()  # unset fields leave older fingerprints alone


def test_the_search_time_protocol_caps_the_passes_and_leaves_older_fingerprints_alone():
    full = HardwareProfile(name="p", passes=5, max_passes=20)
    assert full.screening() is full  # unset: the search times with the full protocol
    capped = HardwareProfile(name="p", passes=5, max_passes=20, search_max_passes=8)
    screen = capped.screening()
    assert (screen.passes, screen.max_passes, screen.search_max_passes) == (5, 8, None)
    assert "search_max_passes" not in full.to_dict() and capped.to_dict()["search_max_passes"] == 8
    assert capped.fingerprint != full.fingerprint
    assert load_profile("cpu-1thread").screening().max_passes == 7  # the default profile screens
