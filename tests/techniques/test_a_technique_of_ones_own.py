"""A technique registered from one file (tests/fixtures/toy_technique.py) and nothing
else: it is validated in the YAML, sampled, applied, described in trials.csv, covered by
the conformance suite and switched off in the hand recipes."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from autocompress.errors import ConfigError
from autocompress.space import SearchSpace
from autocompress.techniques import techniques, unregister_technique
from tests.helpers import FAST_PROFILE_YAML, FIXTURES, search_args

TOY = FIXTURES / "toy_technique.py"


@pytest.fixture(scope="module")
def toy():
    """The file imported (which registers the technique), and the registration undone after."""
    spec = importlib.util.spec_from_file_location("_toy_technique", TOY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        unregister_technique("scale")
        del sys.modules[spec.name]


def test_its_section_is_validated_like_any_other(toy):
    space = SearchSpace.from_dict({"scale": {"factor": {"low": 0.5, "high": 2.0, "step": 0.5}}})
    assert "scale.factor" in space.searched()
    assert SearchSpace.from_dict(space.to_dict()).fingerprint == space.fingerprint
    with pytest.raises(ConfigError, match=r"scale.factor.high must be in \[0.1, 10\], got 50.0 \(<dict>\)"):
        SearchSpace.from_dict({"scale": {"factor": {"low": 0.5, "high": 50}}})
    with pytest.raises(ConfigError, match=r"unknown key scale.fator; allowed: \['factor'\]"):
        SearchSpace.from_dict({"scale": {"fator": 2}})
    assert SearchSpace.from_dict({}).params["scale.factor"].value == 1.0  # absent: off


def test_it_is_covered_by_the_conformance_suite(toy, tmp_path):
    from autocompress.testing import check_technique, conformance_cases

    cases = [(t, cfg) for t, cfg in conformance_cases() if t.name == "scale"]
    assert len(cases) == 2 and "scale" in [t.name for t in techniques()]
    for i, (t, cfg) in enumerate(cases):
        check_technique(t, cfg, tmp_path / str(i))


def test_it_is_applied_by_the_pipeline(toy, prepared, tmp_path):
    from autocompress.config import CandidateConfig
    from autocompress.pipeline import build_candidate

    res = build_candidate(CandidateConfig(scale=toy.ScaleConfig(2.0)), prepared, tmp_path / "c")
    x = prepared.task.val.x[:16].numpy()

    def logits(path):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: x})[0]

    np.testing.assert_allclose(logits(res.onnx_path), 2 * logits(prepared.teacher.onnx_path), rtol=1e-4, atol=1e-5)
    from autocompress.pipeline import stage_names

    assert res.val_metric == prepared.teacher.val_metric and "scale" in res.stage_seconds
    assert stage_names().index("scale") == stage_names().index("lowrank") + 1
    assert res.config.describe() == "no prune · scale x2 · no fine-tune · fp32"  # in pipeline order: a model-stage technique


def test_a_search_samples_it_describes_it_and_switches_it_off_in_the_recipes(toy, tmp_path):
    from autocompress.cli import main

    space = tmp_path / "space.yaml"
    space.write_text("prune:\n  ratio: [0.0, 0.5]\nfinetune:\n  steps: [0, 5]\n  batch_size: 32\nquantize:\n  mode: [fp32, int8]\n"
                     "scale:\n  factor: {low: 0.5, high: 2.0, step: 0.5}\n")
    profile = tmp_path / "profile.yaml"
    profile.write_text(FAST_PROFILE_YAML)
    inputs = type("Inputs", (), {"space": space, "profile": profile})
    out = tmp_path / "run"
    assert main(search_args(inputs, "--budget", 8, "--seed", 3, "--out", out)) == 0
    trials = pd.read_csv(out / "trials.csv")
    recipes = trials[trials["recipe"].notna()]
    assert len(recipes) == 3 and (recipes["param.scale.factor"] == 1.0).all()  # off in every hand recipe
    assert not recipes["description"].str.contains("scale").any()
    searched = trials[trials["recipe"].isna()]
    assert searched["param.scale.factor"].notna().all() and (searched["param.scale.factor"] != 1.0).any()
    for _, row in searched.iterrows():
        assert ("scale x" in row["description"]) == (row["param.scale.factor"] != 1.0)
        if row["param.scale.factor"] != 1.0:
            assert f"scale x{row['param.scale.factor']:g}" in row["description"]
    assert "scale:\n  factor:" in (out / "space.yaml").read_text()


def test_registering_it_leaves_every_existing_id_and_label_as_it_was(toy):
    """Against the ids and labels recorded before this technique (or the registry) existed.
    trials.csv rounds float params to 10 digits, so a recorded trial with a sampled learning
    rate does not rebuild its exact config: the ids are compared where nothing is rounded."""
    import json

    from autocompress.space import load_space

    golden = json.loads((FIXTURES / "trial_sequence.json").read_text())
    compared = 0
    for case, name in (("global-tpe", "global"), ("default-nsga2", "default"), ("rich-random", str(FIXTURES / "space_rich.yaml"))):
        space = load_space(name).bind(*_demo_binding())[0]  # no scale section: off in every candidate
        for t in golden[case]["trials"]:
            cfg = space.config_from_params(t["params"])
            assert cfg.scale == toy.ScaleConfig() and "scale" not in cfg.to_dict()
            assert cfg.describe() == t["description"]
            if "finetune.lr" not in t["params"] and not any(isinstance(v, float) and "temperature" in k for k, v in t["params"].items()):
                assert cfg.id == t["candidate_id"]
                compared += 1
    assert compared >= 10


def _demo_binding():
    from tests.backends.test_trial_sequence import _demo_binding

    return _demo_binding()
