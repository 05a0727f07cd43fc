"""The conformance suite every registered transform passes, on a residual model: the input
model is untouched, the output shape is kept, the result exports to ONNX and ONNX Runtime
reproduces the torch output."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from autocompress.config import LowRankConfig, PruneConfig
from autocompress.export import export_onnx
from autocompress.tasks.demo import DigitsResNet
from autocompress.techniques import apply
from autocompress.transforms import TransformContext
from tests.helpers import assert_state_equal, state_snapshot

CONFIGS = [
    PruneConfig(0.0),
    PruneConfig(0.5),
    PruneConfig(0.4, criterion="l2", round_to=8),
    PruneConfig(0.5, criterion="act_mean"),
    PruneConfig(0.5, criterion="act_zero"),
    PruneConfig(segment_ratios=(0.0, 0.3, 0.7), exclude=("layer1",)),
    LowRankConfig(1.0),
    LowRankConfig(0.5),
    LowRankConfig(segment_ratios=(1.0, 0.5, 0.25), exclude=("fc",)),
]


@pytest.fixture(scope="module")
def model_and_data():
    torch.manual_seed(0)
    model = DigitsResNet(widths=(16, 32, 64)).eval()
    x = torch.randn(64, 1, 16, 16)
    with torch.no_grad():  # non-trivial BN statistics
        model.train()(x)
    return model.eval(), x


@pytest.mark.parametrize("cfg", CONFIGS, ids=repr)
def test_transform_conformance(cfg, model_and_data, tmp_path):
    model, x = model_and_data
    before = state_snapshot(model)
    modules_before = [type(m) for m in model.modules()]
    out = apply(model, cfg, TransformContext(example_input=x[:2], calibration=x, batch_size=16))
    assert out is not model
    assert_state_equal(model, before)
    assert [type(m) for m in model.modules()] == modules_before
    with torch.no_grad():
        y = out.eval()(x[:8])
    assert y.shape == (8, 10)
    path = export_onnx(out, (1, 16, 16), tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x[:8].numpy()})[0]
    np.testing.assert_allclose(got, y.numpy(), rtol=1e-3, atol=1e-4)
