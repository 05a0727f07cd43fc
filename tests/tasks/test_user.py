"""User tasks from Python files: the happy path on the fixture, and every malformed input
giving a TaskError with a clear message."""

from __future__ import annotations

import textwrap

import pytest
import torch

from autocompress.errors import ConfigError, TaskError
from autocompress.tasks import load_task
from autocompress.tasks.user import load_callable, user_task
from tests.helpers import TINY_DATA_SPEC, TINY_MODEL_SPEC, TINY_TASK

HEADER = """\
import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

X = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
Y = torch.arange(12) % 3

def model():
    torch.manual_seed(0)
    return nn.Linear(4, 3)

def data():
    return TensorDataset(X, Y), TensorDataset(X, Y)
"""


def write_task(tmp_path, body: str = "", name: str = "task.py"):
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body))
    return path


# --------------------------------------------------------------------------- happy path


def test_fixture_task_loads(tiny_task):
    t = tiny_task
    assert t.name == "tiny_task"
    assert t.input_shape == (3, 8, 8) and t.num_classes == 4
    assert (len(t.train), len(t.val), len(t.test)) == (300, 100, 100)
    x, y = t.train.head(300)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.tolist()) == {0, 1, 2, 3}
    assert not t.teacher.training
    assert t.spec == {"kind": "user", "model": TINY_MODEL_SPEC, "data": TINY_DATA_SPEC}


def test_fingerprint_is_stable_and_tracks_the_data(tiny_task, tmp_path):
    again = user_task(TINY_MODEL_SPEC, TINY_DATA_SPEC)
    assert again.fingerprint == tiny_task.fingerprint
    path = write_task(tmp_path)
    a = user_task(f"{path}:model", f"{path}:data")
    other = tmp_path / "other"
    other.mkdir()
    b_path = write_task(other, "\nX[0, 0] += 1.0\n")
    b = user_task(f"{b_path}:model", f"{b_path}:data")
    assert a.fingerprint != b.fingerprint


def test_two_splits_mean_no_test_split(tmp_path):
    path = write_task(tmp_path)
    task = user_task(f"{path}:model", f"{path}:data")
    assert task.test is None and len(task.train) == len(task.val) == 12
    assert task.num_classes == 3 and task.input_shape == (4,)


def test_plain_list_datasets_and_int_labels_work(tmp_path):
    path = write_task(tmp_path, """
        def lists():
            rows = [(X[i], int(Y[i])) for i in range(12)]
            return rows, rows[:6], rows[6:]
        """)
    task = user_task(f"{path}:model", f"{path}:lists")
    assert len(task.test) == 6 and task.train.head(12)[1].tolist() == [i % 3 for i in range(12)]


def test_checkpoint_is_loaded_and_recorded(tmp_path):
    path = write_task(tmp_path)
    ckpt = tmp_path / "w.pt"
    lin = torch.nn.Linear(4, 3)
    torch.nn.init.constant_(lin.weight, 0.5)
    torch.save(lin.state_dict(), ckpt)
    task = user_task(f"{path}:model", f"{path}:data", str(ckpt))
    assert torch.all(task.teacher.weight == 0.5)
    assert len(task.spec["checkpoint_sha1"]) == 12


# --------------------------------------------------------------------------- errors


def test_spec_without_colon(tmp_path):
    with pytest.raises(TaskError, match=r"--model must look like FILE.py:FUNCTION, got 'model.py'"):
        load_callable("model.py", flag="--model")


def test_missing_file(tmp_path):
    with pytest.raises(TaskError, match=r"--model: no such file .*nope.py"):
        user_task(f"{tmp_path / 'nope.py'}:model", TINY_DATA_SPEC)


def test_missing_function(tmp_path):
    path = write_task(tmp_path, "\nNOT_CALLABLE = 3\n")
    with pytest.raises(TaskError, match=r"--model: .*task.py' has no function 'build'"):
        user_task(f"{path}:build", f"{path}:data")
    with pytest.raises(TaskError, match="has no function 'NOT_CALLABLE'"):
        load_callable(f"{path}:NOT_CALLABLE", flag="--data")


def test_file_that_fails_to_import(tmp_path):
    path = write_task(tmp_path, "\nraise ImportError('no module named foo')\n")
    with pytest.raises(TaskError, match=r"--model: importing .* raised ImportError: no module named foo"):
        user_task(f"{path}:model", f"{path}:data")


def test_model_function_that_raises(tmp_path):
    path = write_task(tmp_path, """
        def broken():
            raise RuntimeError("weights not found")
        """)
    with pytest.raises(TaskError, match=r"--model: .*:broken raised RuntimeError: weights not found"):
        user_task(f"{path}:broken", f"{path}:data")


@pytest.mark.parametrize("returned, shown", [("3", "int"), ("nn.Linear", "type"), ("{'w': 1}", "dict")])
def test_model_function_returning_a_non_module(tmp_path, returned, shown):
    path = write_task(tmp_path, f"""
        def not_a_model():
            return {returned}
        """)
    with pytest.raises(TaskError, match=rf"must return a torch.nn.Module, got {shown}"):
        user_task(f"{path}:not_a_model", f"{path}:data")


@pytest.mark.parametrize(
    "returned",
    ["TensorDataset(X, Y)", "(TensorDataset(X, Y),)", "(TensorDataset(X, Y),) * 4", "None", "{'train': 1, 'val': 2}"],
)
def test_data_returning_the_wrong_tuple(tmp_path, returned):
    path = write_task(tmp_path, f"""
        def bad():
            return {returned}
        """)
    with pytest.raises(TaskError, match=r"--data: .*:bad must return \(train, val\) or \(train, val, test\)"):
        user_task(f"{path}:model", f"{path}:bad")


@pytest.mark.parametrize(
    "labels, split, shown",
    [
        ("Y + 1", "train", "1..3"),  # label 3 with 3 outputs
        ("Y - 1", "train", "-1..1"),
    ],
)
def test_labels_out_of_range(tmp_path, labels, split, shown):
    path = write_task(tmp_path, f"""
        def bad():
            return TensorDataset(X, {labels}), TensorDataset(X, Y)
        """)
    with pytest.raises(TaskError) as info:
        user_task(f"{path}:model", f"{path}:bad")
    msg = str(info.value)
    assert f"{split} labels must be in [0, 2]" in msg and "3 outputs" in msg and shown in msg


def test_labels_out_of_range_in_the_test_split(tmp_path):
    path = write_task(tmp_path, """
        def bad():
            return TensorDataset(X, Y), TensorDataset(X, Y), TensorDataset(X, Y * 5)
        """)
    with pytest.raises(TaskError, match=r"--data: test labels must be in \[0, 2\].*got 0\.\.10"):
        user_task(f"{path}:model", f"{path}:bad")


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("return [], TensorDataset(X, Y)", "the train split is empty"),
        ("return iter([]), TensorDataset(X, Y)", "the train split must be a sized Dataset"),
        ("return [(X[0],)], TensorDataset(X, Y)", "train split's batch 0 must be an (inputs, target) pair or a dict with a 'labels' key"),
        ("return [({'x': 'text'}, 1)], TensorDataset(X, Y)", "input 'x' must be a torch.Tensor, got list"),
        ("return [(X[0], 1.5)], TensorDataset(X, Y)", "train labels must be integer classes, one per sample, got torch.float64"),
        ("return [(X[0], True)], TensorDataset(X, Y)", "labels must be integer classes, one per sample, got torch.bool"),
        ("return TensorDataset(X, Y), [(X[0], 0), (torch.zeros(5), 1)]", "reading the val split's first samples raised RuntimeError: stack expects"),
    ],
)
def test_malformed_samples(tmp_path, body, fragment):
    path = write_task(tmp_path, f"""
        def bad():
            {body}
        """)
    with pytest.raises(TaskError) as info:
        user_task(f"{path}:model", f"{path}:bad")
    assert fragment in str(info.value)


def test_model_that_does_not_fit_the_data(tmp_path):
    path = write_task(tmp_path, """
        def wrong_width():
            return nn.Linear(5, 3)

        class Flat(nn.Module):
            def forward(self, x):
                return x.sum(1)

        def flat():
            return Flat()
        """)
    with pytest.raises(TaskError, match=r"forward pass on the val split's first inputs \(input float32 \(2, 4\)\) failed"):
        user_task(f"{path}:wrong_width", f"{path}:data")
    with pytest.raises(TaskError, match=r"must return logits of shape \(batch, classes\)"):
        user_task(f"{path}:flat", f"{path}:data")


def test_checkpoint_errors(tmp_path):
    path = write_task(tmp_path)
    with pytest.raises(TaskError, match="--checkpoint: no such file"):
        user_task(f"{path}:model", f"{path}:data", str(tmp_path / "missing.pt"))
    wrong = tmp_path / "wrong.pt"
    torch.save(torch.nn.Linear(7, 2).state_dict(), wrong)
    with pytest.raises(TaskError, match=r"--checkpoint: '.*wrong.pt' does not match the model \(\w+\): weight has shape \(2, 7\) in the file, "):
        user_task(f"{path}:model", f"{path}:data", str(wrong))


def test_model_and_data_go_together(tmp_path):
    with pytest.raises(TaskError, match="--model and --data go together"):
        user_task(TINY_MODEL_SPEC, None)
    with pytest.raises(ConfigError, match="--checkpoint needs --model and --data"):
        load_task(checkpoint=str(TINY_TASK))


def test_numpy_integer_labels_are_accepted(tmp_path):
    path = write_task(tmp_path, """
        def np_labels():
            rows = [(X[i], np.int64(Y[i])) for i in range(12)]
            return rows, rows
        """)
    task = user_task(f"{path}:model", f"{path}:np_labels")
    assert task.train.head(12)[1].tolist() == [i % 3 for i in range(12)]


def test_fractional_tensor_labels_are_rejected(tmp_path):
    path = write_task(tmp_path, """
        def float_labels():
            return TensorDataset(X, Y.float() + 0.7), TensorDataset(X, Y)
        """)
    with pytest.raises(TaskError, match="train labels must be integer classes"):
        user_task(f"{path}:model", f"{path}:float_labels")


def test_numpy_inputs_are_collated_into_tensors(tmp_path):
    path = write_task(tmp_path, """
        def np_inputs():
            rows = [(X[i].numpy(), int(Y[i])) for i in range(12)]
            return rows, rows
        """)
    task = user_task(f"{path}:model", f"{path}:np_inputs")
    assert task.example.dtype == torch.float32 and task.input_shape == (4,)


def test_outputs_whose_structure_changes_between_batches_are_refused(tmp_path):
    path = write_task(tmp_path, """
        class Moody(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 3)

            def forward(self, x):
                out = {"logits": self.fc(x)}
                if x[0, 0] > 0:  # the train split's first sample, not the val split's
                    out["extra"] = x
                return out

        def moody():
            return Moody()

        def data():
            return TensorDataset(X.abs(), Y), TensorDataset(-X.abs(), Y)
        """)
    with pytest.raises(TaskError, match=r"outputs change between batches: \['logits', 'extra'\] on the train split's first, \['logits'\] on"):
        user_task(f"{path}:moody", f"{path}:data")
