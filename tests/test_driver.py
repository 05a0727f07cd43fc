"""The search driver beyond the CLI: the manifest, rebuilding a run's task and a trial's model."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from autocompress.errors import RunDirError
from autocompress.evaluation import onnx_accuracy
from autocompress.export import export_onnx
from autocompress.driver import load_trial_model
from autocompress.run import RunDir, load_run_task


def test_manifest_records_shape_and_timing(search_run):
    m = json.loads((search_run.out / "run.json").read_text())
    assert m["input_shape"] == [3, 8, 8]
    (timing,) = m["timing"]
    assert timing["trials"] == 3 and timing["search_s"] > 0 and timing["finalize_s"] > 0
    assert 0 < timing["trial_s"] <= timing["search_s"]


def test_load_run_task_reloads_the_same_task(search_run):
    task = load_run_task(RunDir(search_run.out))
    m = json.loads((search_run.out / "run.json").read_text())
    assert task.fingerprint == m["task_fingerprint"]
    assert task.input_shape == (3, 8, 8) and task.num_classes == 4


def test_load_trial_model_rebuilds_each_front_point(search_run, tiny_task, tmp_path):
    run = search_run.out
    front = pd.read_csv(run / "pareto.csv")
    for _, row in front.iterrows():
        n = int(row["number"])
        model = load_trial_model(run, n, task=tiny_task)
        assert not model.training
        saved = torch.load(run / row["state_dict"], weights_only=True)
        state = model.state_dict()
        assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
        with torch.no_grad():
            assert model(tiny_task.val.x[:3]).shape == (3, 4)
        if row["param.quantize.mode"] == "fp32":  # the float model is exactly what was deployed
            path = export_onnx(model, tiny_task.input_shape, tmp_path / f"{n}.onnx")
            assert onnx_accuracy(path, tiny_task.val.x.numpy(), tiny_task.val.y.numpy()) == row["val_accuracy"]
    # without a teacher it is rebuilt from the run's own task files
    n = int(front["number"].iloc[0])
    again = load_trial_model(run, n)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in load_trial_model(run, n, task=tiny_task).state_dict().items())


def test_load_trial_model_without_saved_weights(search_run):
    with pytest.raises(RunDirError, match="trial 99 has no saved model"):
        load_trial_model(search_run.out, 99)


def test_search_with_block_substitution_end_to_end(tmp_path, tiny_task):
    """A user model with residual blocks, `targets: auto`: the blocks are found, searched,
    and a front point that uses a substituted block rebuilds from its state_dict."""
    from autocompress.cli import main
    from tests.helpers import FAST_PROFILE_YAML, TINY_DATA_SPEC, TINY_MODEL_SPEC

    space, profile, out = tmp_path / "space.yaml", tmp_path / "profile.yaml", tmp_path / "run"
    space.write_text(
        "prune:\n  ratio: [0.0, 0.5]\nfinetune:\n  steps: [10]\n  batch_size: 32\n"
        "blocks:\n  targets: auto\n  choices: [keep, mbconv_e3_k3, shuffle_v2, dwsep_k3, skip]\n"
    )
    profile.write_text(FAST_PROFILE_YAML)
    rc = main(["search", "--model", TINY_MODEL_SPEC, "--data", TINY_DATA_SPEC, "--space", str(space),
               "--profile", str(profile), "--budget", "8", "--seed", "3", "--out", str(out)])
    assert rc == 0
    trials = pd.read_csv(out / "trials.csv")
    assert {"param.blocks.block1", "param.blocks.block2"} <= set(trials.columns)
    assert (trials["state"] == "COMPLETE").all()
    assert (trials.loc[trials["recipe"].notna(), "param.blocks.block1"] == "keep").all()  # hand recipes keep the blocks
    assert "skip" not in set(trials["param.blocks.block2"])  # block2 changes shape: skip was excluded
    used = trials[(trials["param.blocks.block1"] != "keep") | (trials["param.blocks.block2"] != "keep")]
    assert len(used) > 0
    front = pd.read_csv(out / "pareto.csv")
    for n in front["number"]:
        model = load_trial_model(out, int(n), task=tiny_task)
        ref = onnx_accuracy(out / f"trials/{n}/model.onnx", tiny_task.val.x.numpy(), tiny_task.val.y.numpy())
        with torch.no_grad():
            acc = (model(tiny_task.val.x).argmax(1) == tiny_task.val.y).float().mean().item()
        row = trials.set_index("number").loc[int(n)]
        if row["description"].endswith("fp32"):
            assert acc == pytest.approx(ref, abs=0.02)
