"""An exported file is run next to its model (export.faithful) on a full batch and a single
row; a model that cannot be exported fails in one line saying where (export.onnx)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.errors import ExportError
from autocompress.export import export_onnx
from autocompress.export.faithful import ATOL, RTOL, Mismatch, _compare, check_batches, compare_export


class Net(nn.Module):
    """A small classifier on 3x4x4 inputs; `mode` makes its forward leave torch in one of
    the ways a trace records wrongly."""

    def __init__(self, mode: str = "plain"):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16, 5)
        self.mode = mode

    def forward(self, x):
        if self.mode == "numpy":  # the trace records the example's values as a constant
            x = torch.from_numpy(x.numpy() * 2)
        y = self.fc(torch.flatten(torch.relu(self.conv(x)), 1))
        if self.mode == "branch" and x.shape[0] == 1:  # a Python branch on the batch size: the trace takes the example's
            y = y * 3
        return y


def _export(model, tmp_path, rows: int = 2):
    x = torch.randn(32, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    return export_onnx(model, x[:rows], tmp_path / "m.onnx"), x


def test_a_faithful_export_agrees_on_a_full_batch_and_a_single_row(tmp_path):
    model = Net().train()
    path, x = _export(model, tmp_path)
    batches = check_batches(x)
    assert [b.shape[0] for b in batches] == [32, 1] and torch.equal(batches[1][0], x[-1])
    assert compare_export(model, path, batches) is None
    assert model.training  # the mode it was in


def test_a_forward_that_leaves_torch_is_caught_as_a_constant_of_the_examples_shape(tmp_path):
    model = Net("numpy").eval()
    path, x = _export(model, tmp_path)
    bad = compare_export(model, path, check_batches(x))
    assert bad is not None and bad.rows == 32 and bad.output == "logits"
    assert str(bad) == "output 'logits' has shape (2, 5) in ONNX Runtime, (32, 5) in PyTorch on a batch of 32 rows"


def test_a_branch_on_the_batch_size_is_caught_on_the_single_row(tmp_path):
    model = Net("branch").eval()
    path, x = _export(model, tmp_path)
    assert compare_export(model, path, [x]) is None  # the full batch takes the traced branch
    bad = compare_export(model, path, check_batches(x))
    assert bad is not None and bad.rows == 1 and bad.output == "logits" and bad.index[0] == 0
    with torch.no_grad():
        expected = model(x[-1:]).numpy()
    assert bad.torch == pytest.approx(float(expected[bad.index]), rel=1e-6)
    assert bad.onnx == pytest.approx(bad.torch / 3, rel=1e-4, abs=1e-5)
    assert bad.difference == pytest.approx(float(np.abs(expected - expected / 3).max()), rel=1e-4)  # the largest one
    text = str(bad)
    assert text.startswith(f"largest difference {bad.difference:.4g} at output 'logits'[0, {bad.index[1]}] on a batch of 1 row: ")
    assert "in ONNX Runtime" in text and "in PyTorch" in text and "\n" not in text


def test_a_batch_the_file_cannot_run_is_a_mismatch(tmp_path):
    class Fixed(nn.Module):  # int() bakes the example's batch size in: the file adds a (2, 5) constant
        def forward(self, x):
            return x.flatten(1)[:, :5] + torch.ones(int(x.shape[0]), 5)

    model = Fixed()
    x = torch.randn(32, 3, 4, 4)
    path = export_onnx(model, x[:2], tmp_path / "m.onnx")
    bad = compare_export(model, path, check_batches(x))
    assert bad is not None and bad.rows == 32 and str(bad).startswith("ONNX Runtime cannot run it (")


class DictNet(nn.Module):
    """Token ids and an attention mask, a masked mean of embeddings; with `padded_branch`
    a Python branch on whether the batch has padding at all."""

    def __init__(self, padded_branch: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 3)
        self.padded_branch = padded_branch

    def forward(self, input_ids, attention_mask):
        m = attention_mask.unsqueeze(-1).float()
        h = (self.emb(input_ids) * m).sum(1) / m.sum(1).clamp(min=1)
        if self.padded_branch and bool(attention_mask.all()):
            return self.fc(h) + 1.0
        return self.fc(h)


def _dict_inputs():
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 20, (32, 6), generator=gen)
    mask = torch.ones(32, 6, dtype=torch.int64)
    mask[0, 4:] = 0  # the example has padding; the last row has none
    mask[5, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("padded_branch", [False, True])
def test_dict_inputs_are_fed_by_name(padded_branch, tmp_path):
    model = DictNet(padded_branch).eval()
    x = _dict_inputs()
    path = export_onnx(model, {k: v[:2] for k, v in x.items()}, tmp_path / "m.onnx")
    bad = compare_export(model, path, check_batches(x))
    if not padded_branch:
        assert bad is None
    else:  # the full batch has padding (traced branch); the last row has none
        assert bad is not None and bad.rows == 1 and bad.output == "logits"
        assert bad.difference == pytest.approx(1.0, abs=1e-4)


def test_the_comparison_is_allclose():
    b = np.array([[1.0, 100.0, np.nan]], dtype=np.float32)
    within = b + np.array([[ATOL * 0.9, RTOL * 100 * 0.9, 0.0]], dtype=np.float32)
    assert _compare({"y": within}, {"y": b}, 1, atol=ATOL, rtol=RTOL) is None  # NaN where both are NaN agrees
    beyond = b + np.array([[ATOL * 3, RTOL * 100 * 2, 0.0]], dtype=np.float32)
    bad = _compare({"y": beyond}, {"y": b}, 1, atol=ATOL, rtol=RTOL)
    assert bad == Mismatch(1, "y", (0, 1), float(beyond[0, 1]), 100.0)  # the largest of the two
    nan = _compare({"y": np.array([[1.0, 100.0, 0.0]], dtype=np.float32)}, {"y": b}, 1, atol=ATOL, rtol=RTOL)
    assert nan is not None and nan.index == (0, 2) and np.isnan(nan.torch)
    missing = _compare({"z": b}, {"y": b}, 1, atol=ATOL, rtol=RTOL)
    assert missing is not None and "output 'z' of the file is not among the model's outputs ['y']" in str(missing)


class Unsupported(nn.Module):
    """A model whose head calls an operator no ONNX converter handles (aten::fft_fft)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.head = Spectrum()

    def forward(self, x):
        return self.head(self.body(x))


class Spectrum(nn.Module):
    def forward(self, x):
        return torch.fft.fft(x).real


class FailsWhenTraced(nn.Module):
    def forward(self, x):
        if torch.jit.is_tracing():
            raise IndexError("list index out of range")
        return x


def test_an_operator_without_a_converter_fails_in_one_line_naming_its_module(tmp_path, capfd):
    with pytest.raises(ExportError) as info:
        export_onnx(Unsupported(), torch.randn(2, 8), tmp_path / "m.onnx")
    text = str(info.value)
    assert text.startswith("the model could not be exported to ONNX: in module 'head' (Spectrum, test_faithful.py:")
    assert text.endswith("UnsupportedOperatorError: Exporting the operator 'aten::fft_fft' to ONNX opset version 17 is not supported")
    assert "\n" not in text and info.value.detail in text
    out, err = capfd.readouterr()
    assert "Torch IR graph" not in out + err  # the exporter's graph dump is not printed
    assert not (tmp_path / "m.onnx").exists()


def test_an_error_raised_while_tracing_names_the_innermost_module(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), FailsWhenTraced()))
    with pytest.raises(ExportError) as info:
        export_onnx(model, torch.randn(2, 4), tmp_path / "m.onnx")
    assert str(info.value).startswith("the model could not be exported to ONNX: in module '1.1' (FailsWhenTraced, test_faithful.py:")
    assert str(info.value).endswith("): IndexError: list index out of range")
    assert model.training  # left in the mode it was in
