"""Accuracy measured on the ONNX file with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.evaluation import onnx_accuracy, onnx_predict
from autocompress.export import export_onnx


@pytest.fixture(scope="module")
def identity_onnx(tmp_path_factory):
    """A 4-class linear model whose prediction is argmax of the input row."""
    model = nn.Linear(4, 4)
    with torch.no_grad():
        model.weight.copy_(torch.eye(4))
        model.bias.zero_()
    return export_onnx(model, (4,), tmp_path_factory.mktemp("acc") / "identity.onnx")


def test_predictions_and_accuracy_by_hand(identity_onnx):
    x = np.array([[5, 0, 0, 0], [0, 0, 3, 1], [0, 2, 0, 0], [1, 0, 0, 9]], dtype=np.float64)  # cast to float32 inside
    assert onnx_predict(identity_onnx, x).tolist() == [0, 2, 1, 3]
    assert onnx_accuracy(identity_onnx, x, np.array([0, 2, 1, 0])) == pytest.approx(0.75)
    assert onnx_accuracy(identity_onnx, x, [0, 2, 1, 3]) == 1.0


def test_batching_does_not_change_predictions(identity_onnx):
    x = np.random.default_rng(0).standard_normal((23, 4)).astype(np.float32)
    expected = x.argmax(1)
    for batch in (1, 5, 23, 256):
        assert onnx_predict(identity_onnx, x, batch=batch).tolist() == expected.tolist()
    assert onnx_predict(identity_onnx, x, threads=1).tolist() == expected.tolist()


def test_empty_inputs(identity_onnx):
    assert onnx_predict(identity_onnx, np.zeros((0, 4), dtype=np.float32)).shape == (0,)
    with pytest.raises(ValueError, match="empty split"):
        onnx_accuracy(identity_onnx, np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int64))


def test_onnx_accuracy_of_the_tiny_teacher_matches_torch(tiny_task, tmp_path):
    path = export_onnx(tiny_task.teacher, tiny_task.input_shape, tmp_path / "t.onnx")
    with torch.no_grad():
        torch_pred = tiny_task.teacher(tiny_task.test.x).argmax(1).numpy()
    onnx_pred = onnx_predict(path, tiny_task.test.x.numpy())
    assert (onnx_pred == torch_pred).mean() >= 0.99
    assert onnx_accuracy(path, tiny_task.test.x.numpy(), tiny_task.test.y.numpy()) == pytest.approx(
        float((onnx_pred == tiny_task.test.y.numpy()).mean())
    )
