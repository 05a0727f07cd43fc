"""The Python API (autocompress.api): a Task built in Python searched, read back from disk,
resumed, exported and rebuilt; DataLoaders as splits; bad input refused in one line before
any work. Real searches on the tiny task (real ORT sessions, Optuna storage)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.utils.data import DataLoader

import autocompress as ac
from autocompress.cli import main
from autocompress.errors import ConfigError, RunDirError, TaskError


@pytest.fixture(scope="module")
def tiny(tiny_module):
    """The tiny fixture's trained model and splits, as a user holds them in Python."""
    return tiny_module.build_model(), tiny_module.build_data()


def make_task(tiny, **kw) -> ac.Task:
    model, (train, val, test) = tiny
    return ac.Task(model, train=train, val=val, test=test, **{"name": "tiny", **kw})


@pytest.fixture(scope="module")
def api_run(tiny, cli_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    lines: list[str] = []
    result = ac.search(make_task(tiny), space=cli_inputs.space, profile=cli_inputs.profile, budget=3, out=out, progress=lines.append)
    return result, lines


def test_a_python_task_searches_and_reads_back_the_same_from_disk(api_run, tiny):
    result, lines = api_run
    assert any(line.startswith("Teacher: val") for line in lines)
    assert len(result.trials) == 3 and set(result.trials["state"]) == {"COMPLETE"}
    assert len(result.front) >= 1 and result.front["val_accuracy"].between(0, 1).all()
    assert 0 < result.teacher["val_accuracy"] <= 1
    again = ac.load_run(result.path)
    assert again.front.equals(result.front) and again.trials.equals(result.trials)
    assert result.manifest["task"] == {"kind": "python", "name": "tiny", "model_class": "TinyResNet", "version": None}


def test_a_front_point_exports_to_a_file_that_reproduces_its_accuracy(api_run, tiny, tmp_path):
    result, _ = api_run
    row = result.front.iloc[0]
    path = result.export(row, tmp_path / "deploy" / "model.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, y = tiny[1][1].tensors  # the val split
    logits = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert float((logits.argmax(1) == y.numpy()).mean()) == pytest.approx(row["val_accuracy"], abs=1e-3)  # within 0.1 pt


def test_load_model_needs_the_task_of_a_python_run(api_run, tiny):
    result, _ = api_run
    n = int(result.front.iloc[0]["number"])
    with pytest.raises(RunDirError, match=r"built in Python.*task=task"):
        ac.load_run(result.path).load_model(n)
    model = ac.load_run(result.path, task=make_task(tiny)).load_model(n)
    assert isinstance(model, torch.nn.Module) and model(tiny[1][1].tensors[0][:2]).shape == (2, 4)


def test_a_python_run_resumes_with_its_task_and_not_from_the_command_line(api_run, tiny, tmp_path, capsys):
    import shutil

    result, _ = api_run
    copy = tmp_path / "run"
    shutil.copytree(result.path, copy)
    assert main(["search", "--resume", str(copy)]) == 2
    assert "built in Python: resume it with autocompress.search(task, resume=...)" in capsys.readouterr().err
    resumed = ac.search(make_task(tiny), resume=copy, budget=4, progress=lambda s: None)
    assert len(resumed.trials) == 4 and resumed.trials["number"].tolist() == [0, 1, 2, 3]
    changed = make_task(tiny, version="v2")  # the fingerprint covers the user's version string
    with pytest.raises(RunDirError, match="model or data changed"):
        ac.search(changed, resume=copy, budget=5, progress=lambda s: None)


def test_a_dataloader_with_its_own_collate_gives_the_same_task_as_its_dataset(tiny):
    model, (train, val, test) = tiny
    seen = []

    def collate(samples):  # the user's collate: counted, so the test knows it ran
        seen.append(len(samples))
        xs, ys = zip(*samples)
        return torch.stack(xs), torch.tensor(ys)

    from_loader = ac.Task(model, train=DataLoader(train, batch_size=64, collate_fn=collate), val=val, test=test).load()
    from_dataset = ac.Task(model, train=train, val=val, test=test).load()
    assert 64 in seen  # its batches went through the user's collate
    (x1, y1), (x2, y2) = from_loader.train.head(len(train)), from_dataset.train.head(len(train))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(from_loader.calibration, from_dataset.calibration)  # the same seeded draw, through the user's collate
    assert from_loader.fingerprint == from_dataset.fingerprint


class Unreadable(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        raise AssertionError("the data was read before the options were checked")


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"budgett": 3}, ConfigError, "unknown option 'budgett'"),
        ({"budget": 0}, ConfigError, "--budget must be >= 1, got 0"),
        ({"workers": 2}, ConfigError, "workers=2: a Task built in Python runs one trial at a time"),
        ({"backend": "ray"}, ConfigError, "a Task built in Python runs locally"),
        ({"model": "m.py:f", "data": "d.py:f"}, ConfigError, "give a Task or files (--model/--data, --task), not both"),
    ],
)
def test_bad_options_are_refused_before_the_data_is_read(tiny, tmp_path, kwargs, error, fragment):
    model, (train, _, _) = tiny
    task = ac.Task(model, train=train, val=Unreadable())
    with pytest.raises(error) as info:
        ac.search(task, out=tmp_path / "run", progress=lambda s: None, **kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_an_out_directory_in_use_is_refused_before_the_data_is_read(tiny, tmp_path):
    model, (train, _, _) = tiny
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    with pytest.raises(RunDirError, match="already exists and is not empty"):
        ac.search(ac.Task(model, train=train, val=Unreadable()), out=tmp_path / "run", progress=lambda s: None)


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"metric": "f1"}, ConfigError, "Task.metric must be one of ['accuracy', 'top5', 'mse', 'mae'] or a callable metric(outputs, targets) -> float, got 'f1'"),
        ({"metric": "mse"}, ConfigError, "Task.loss: the metric 'mse' is not a classification one (accuracy, top5), so the fine-tune needs "
                                         "your loss(outputs, targets) -> scalar tensor, got None"),
        ({"metric": lambda o, t: 0.0}, ConfigError, "Task.metric: a callable metric needs higher_is_better=True or False, got None"),
        ({"metric": "mse", "higher_is_better": True}, ConfigError, "Task.metric: 'mse' is lower-is-better; higher_is_better=True contradicts it"),
        ({"loss": "mse"}, ConfigError, "Task.loss must be a callable (outputs, targets) -> scalar tensor, got str"),
        ({"name": ""}, ConfigError, "Task.name must be a non-empty string"),
        ({"version": 2}, ConfigError, "Task.version must be a string, got 2"),
    ],
)
def test_bad_task_fields_are_refused_when_the_task_is_made(tiny, kwargs, error, fragment):
    with pytest.raises(error) as info:
        make_task(tiny, **kwargs)
    assert fragment in str(info.value)


def _nan_metric(outputs, targets):
    return float("nan")


def _vector_metric(outputs, targets):
    return outputs[:, 0]


def _broken_metric(outputs, targets):
    raise KeyError("scores")


def _ok_metric(outputs, targets):
    return 0.5


@pytest.mark.parametrize("metric, loss, fragment", [
    (_nan_metric, None, "Task.metric: on the teacher's outputs for the first 16 val samples: metric '_nan_metric' returned nan"),
    (_vector_metric, None, "Task.metric: on the teacher's outputs for the first 16 val samples: metric '_vector_metric' must return one number, "
                           "got ndarray of shape (16,)"),
    (_broken_metric, None, "Task.metric: _broken_metric(outputs, targets) on the teacher's outputs for the first val samples raised KeyError: 'scores'"),
    (_ok_metric, lambda out, y: out.sum(dim=1), "Task.loss: loss(outputs, targets) must return one finite scalar tensor, got a tensor of shape (16,)"),
    (_ok_metric, lambda out, y: out.mean() * float("nan"), "Task.loss: loss(outputs, targets) must return one finite scalar tensor, got nan"),
])
def test_a_metric_or_loss_that_does_not_give_one_number_is_refused_at_load(tiny, metric, loss, fragment):
    """Tried on the teacher's outputs for a few samples before any work: a one-line error."""
    model, (train, val, _) = tiny
    with pytest.raises(TaskError) as info:
        ac.Task(model, train=train, val=val, metric=metric, higher_is_better=True, loss=loss or (lambda out, y: out.mean())).load()
    assert str(info.value) == fragment


def test_a_callable_metric_sees_the_outputs_and_names_the_columns(tiny, cli_inputs, tmp_path):
    """A metric of the user's (lower is better here): called on the outputs of a split as the
    model returns them, the CSVs name it, the drop is value - teacher, and the fine-tune takes
    the task's loss."""
    model, (train, val, _) = tiny
    seen = []

    def error_rate(outputs, targets):
        seen.append((type(outputs).__name__, outputs.shape[0]))
        return float((outputs.argmax(axis=1) != targets).mean())

    calls = []

    def loss(outputs, targets):
        calls.append(outputs.shape)
        return torch.nn.functional.cross_entropy(outputs, targets)

    task = ac.Task(model, train=train, val=val, metric=error_rate, higher_is_better=False, loss=loss)
    result = ac.search(task, space=cli_inputs.space, profile=cli_inputs.profile, budget=2, out=tmp_path / "run", progress=lambda s: None)
    assert ("ndarray", len(val)) in seen and calls  # whole split on ONNX Runtime; the loss in the fine-tune
    assert result.metric.name == "error_rate" and not result.metric.higher_is_better
    trials = result.trials
    done = trials[trials["state"].eq("COMPLETE")]
    assert "val_error_rate" in trials and "error_rate_drop" in trials
    assert (done["error_rate_drop"] - (done["val_error_rate"] - result.teacher["val_error_rate"])).abs().max() < 1e-12


def test_bad_task_contents_are_refused_with_the_field_named(tiny):
    model, (train, val, _) = tiny
    with pytest.raises(TaskError, match="Task.model must be a torch.nn.Module, got str"):
        ac.Task("resnet", train=train, val=val).load()
    with pytest.raises(TaskError, match=r"Task: the val split's batch 0 must be an \(inputs, target\) pair or a dict with a 'labels' key"):
        ac.Task(model, train=train, val=[np.zeros(3)]).load()
    bad_labels = DataLoader(torch.utils.data.TensorDataset(train.tensors[0], train.tensors[0][:, 0, 0, 0]), batch_size=50)
    with pytest.raises(TaskError, match="Task: train labels must be integer classes, one per sample, got torch.float32"):
        ac.Task(model, train=bad_labels, val=val).load()
    with pytest.raises(ConfigError, match="task must be an autocompress.Task or .FILE.py:FN., got dict"):
        ac.search({"model": model})


def test_the_cli_searches_a_task_file_and_resumes_it_from_the_file(cli_inputs, tmp_path, capsys):
    from tests.helpers import TINY_TASK

    out = tmp_path / "run"
    base = ["search", "--task", f"{TINY_TASK}:build_task", "--space", str(cli_inputs.space), "--profile", str(cli_inputs.profile)]
    assert main([*base, "--budget", "2", "--out", str(out)]) == 0
    result = ac.load_run(out)
    assert result.manifest["task"] == {"kind": "task", "task": f"{TINY_TASK}:build_task", "name": "tiny", "model_class": "TinyResNet", "version": "1"}
    assert main(["search", "--resume", str(out), "--budget", "3"]) == 0  # the task is loaded from its file again
    assert len(ac.load_run(out).trials) == 3
    n = int(result.front.iloc[0]["number"])
    assert isinstance(result.load_model(n), torch.nn.Module)  # no task= needed: the file is named in the run
    capsys.readouterr()
    assert main([*base, "--model", "m.py:f", "--data", "d.py:f", "--out", str(tmp_path / "other")]) == 2
    assert "--task goes alone" in capsys.readouterr().err
    assert main(["search", "--task", f"{TINY_TASK}:build_data", "--out", str(tmp_path / "other")]) == 2
    assert "must return an autocompress.Task, got tuple" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
