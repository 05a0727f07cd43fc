"""The task files in examples/: each is searched for real (`autocompress search --task
FILE:task --budget 3`, the default space), every trial completes, and every front file
runs in a fresh ONNX Runtime session with the task's named inputs and reproduces the val
metric recorded for it (within 0.1 pt of accuracy, 1e-5 relative for another metric)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pandas as pd
import pytest

from autocompress.cli import main
from autocompress.evaluation import split_metric
from autocompress.tasks import load_task

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAST_PROFILE = "name: fast\nwarmup: 2\nrepeats: 5\npasses: 2\nmax_passes: 3\n"


@pytest.mark.parametrize("example, inputs", [
    ("text_classifier", ["input_ids", "attention_mask"]),
    ("image_dataloader", ["pixel_values"]),
    ("regression", ["input_0", "input_1"]),
    ("vision_transformer", ["input"]),
])
def test_an_example_task_is_searched_and_its_front_reproduces(example, inputs, tmp_path):
    profile = tmp_path / "fast.yaml"
    profile.write_text(FAST_PROFILE)
    spec = f"{EXAMPLES / example}.py:task"
    out = tmp_path / "run"
    assert main(["search", "--task", spec, "--budget", "3", "--profile", str(profile), "--out", str(out)]) == 0
    trials = pd.read_csv(out / "trials.csv")
    searched = trials[trials["number"] >= 0]
    assert len(searched) == 3 and searched["state"].eq("COMPLETE").all(), searched[["number", "state"]].to_string()
    task = load_task(task=spec)
    assert task.input_names == inputs
    front = pd.read_csv(out / "pareto.csv")
    assert len(front)
    for _, row in front.iterrows():
        path = out / row["onnx"]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert {i.name for i in session.get_inputs()} <= set(inputs)
        assert [o.name for o in session.get_outputs()] == ["logits"]
        again = split_metric(path, task.val, task.metric, kind=task.output_kind)
        recorded = row[task.metric.column("val")]  # val_accuracy, val_mse
        assert abs(again - recorded) <= (0.001 if task.metric.percent else 1e-5 * abs(recorded))


TRANSFORMER_SPACE = """\
heads:
  ratio: {low: 0.0, high: 0.75, step: 0.25}
  per: segment
  segments: 2
mlp:
  ratio: {low: 0.0, high: 0.8, step: 0.1}
layers:
  stacks: auto
finetune:
  steps: [20]
  batch_size: 32
distill:
  alpha: 0.5
  temperature: 2.0
"""


@pytest.mark.parametrize("example", ["vision_transformer", "text_classifier"])
def test_a_transformer_s_heads_mlp_width_and_layers_are_searched(example, tmp_path):
    """A ViT and a BERT from configs, a space of the transformer techniques alone, random
    sampling: every trial completes with the heads / widths / layers it sampled, and the
    front's files run with fewer MatMul weights than the teacher's where something was pruned."""
    import onnx

    profile, space = tmp_path / "fast.yaml", tmp_path / "space.yaml"
    profile.write_text(FAST_PROFILE)
    space.write_text(TRANSFORMER_SPACE)
    out = tmp_path / "run"
    assert main(["search", "--task", f"{EXAMPLES / example}.py:task", "--budget", "3", "--sampler", "random", "--seed", "1",
                 "--profile", str(profile), "--space", str(space), "--out", str(out)]) == 0
    trials = pd.read_csv(out / "trials.csv")
    searched = trials[trials["number"] >= 0]
    assert len(searched) == 3 and searched["state"].eq("COMPLETE").all(), searched[["number", "state"]].to_string()
    assert searched["description"].str.contains("heads|mlp|drop").any(), searched["description"].to_string()

    def weights(path):
        return sum(int(__import__("numpy").prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)

    teacher = weights(out / "teacher" / "model.onnx") if (out / "teacher" / "model.onnx").exists() else None
    front = pd.read_csv(out / "pareto.csv")
    for _, row in front.iterrows():
        session = ort.InferenceSession(str(out / row["onnx"]), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == ["logits"]
        if teacher is not None and any(k in row["description"] for k in ("heads", "mlp", "drop")):
            assert weights(out / row["onnx"]) < teacher


def test_a_library_model_built_in_python_goes_through_the_api(tmp_path):
    """The text classifier's Task made here, in Python (an object, not a file): ac.search,
    then load_run gives the same front, and the front's files take the named int64 inputs."""
    import sys

    import numpy as np

    import autocompress as ac

    sys.path.insert(0, str(EXAMPLES))
    try:
        from text_classifier import task as make_task
    finally:
        sys.path.remove(str(EXAMPLES))
    task = make_task()
    profile = tmp_path / "fast.yaml"
    profile.write_text(FAST_PROFILE)
    result = ac.search(task, budget=3, profile=str(profile), out=str(tmp_path / "run"), progress=lambda s: None)
    again = ac.load_run(tmp_path / "run")
    pd.testing.assert_frame_equal(result.front, again.front)
    path = tmp_path / "run" / result.front.iloc[0]["onnx"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert all(i.type == "tensor(int64)" for i in session.get_inputs())
    batch = task.val[0]
    feed = {i.name: batch[i.name][None].numpy() for i in session.get_inputs()}
    assert session.run(None, feed)[0].shape == (1, 2) and np.isfinite(session.run(None, feed)[0]).all()


def test_the_regression_front_is_in_the_metric_s_units(tmp_path):
    """A lower-is-better metric: the CSVs name its columns, the drop is value - teacher (in
    the metric's units, not points), the front stays within the limit given, and the summary
    says mse."""
    import json

    profile = tmp_path / "fast.yaml"
    profile.write_text(FAST_PROFILE)
    out = tmp_path / "run"
    limit = 0.5
    assert main(["search", "--task", f"{EXAMPLES / 'regression'}.py:task", "--budget", "3", "--profile", str(profile),
                 "--out", str(out), "--max-metric-drop", str(limit)]) == 0
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["metric"] == {"name": "mse", "higher_is_better": False, "percent": False, "classification": False}
    teacher = manifest["teacher"]["val_mse"]
    trials = pd.read_csv(out / "trials.csv")
    assert "val_accuracy" not in trials and "acc_drop_pts" not in trials
    done = trials[trials["state"].eq("COMPLETE")]
    assert (done["mse_drop"] - (done["val_mse"] - teacher)).abs().max() < 1e-12
    front = pd.read_csv(out / "pareto.csv")
    assert len(front) and (front["mse_drop"] <= limit + 1e-9).all() and front["test_mse"].notna().all()
    summary = (out / "summary.txt").read_text()
    assert "val mse" in summary and "mse drop" in summary
