"""The quantizer's chatter is silenced in the quantizing thread only, and nothing about
logging or stdout outlives the call."""

from __future__ import annotations

import logging
import sys
import threading

import numpy as np
import pytest
import torch

from autocompress.export import export_onnx, quantize_onnx
from autocompress.export.quantize import _quiet_ort
from autocompress.techniques.quantize import QuantizeConfig


def test_other_threads_keep_their_output_and_nothing_is_left_behind(capsys):
    root = logging.getLogger()
    handlers, level, filters, stdout = list(root.handlers), root.level, list(root.filters), sys.stdout
    seen = {}
    with _quiet_ort():
        print("from the quantizing thread")
        logging.warning("advice from the quantizing thread")

        def other():
            print("from another thread")
            seen["other"] = True

        t = threading.Thread(target=other)
        t.start()
        t.join()
    out, err = capsys.readouterr()
    assert seen["other"] and "from another thread" in out
    assert "quantizing thread" not in out + err
    assert (list(root.handlers), root.level, list(root.filters), sys.stdout) == (handlers, level, filters, stdout)


@pytest.mark.parametrize("calibration", ["minmax", "entropy"])  # entropy prints histogram progress
def test_quantize_leaves_root_logger_and_stdout_as_they_were(calibration, tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)).eval()
    fp32 = export_onnx(model, (1, 8, 8), tmp_path / "m.onnx")
    root = logging.getLogger()
    handlers, level, stdout = list(root.handlers), root.level, sys.stdout
    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    quantize_onnx(fp32, tmp_path / "q.onnx", x, QuantizeConfig("int8", "uint8", "qdq", calibration))
    assert (list(root.handlers), root.level, sys.stdout) == (handlers, level, stdout)
    out, _ = capsys.readouterr()
    assert "histogram" not in out.lower() and "Number of tensors" not in out
