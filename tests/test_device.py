"""Where fine-tunes run (--device / search(device=)): checked before any work, recorded in
run.json; the CPU path as before; the CUDA path in tests marked gpu, which run where torch
sees a CUDA device (CI has none)."""

from __future__ import annotations

import json

import pytest
import torch

import autocompress as ac
from autocompress.cli import main
from autocompress.errors import ConfigError
from autocompress.training import distill_, teacher_logits
from autocompress.training.plan import TrainPlan

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def tiny(tiny_module):
    return tiny_module.build_model(), tiny_module.build_data()


@pytest.mark.parametrize("device, fragment", [
    ("gpu", "--device must be one of ['auto', 'cpu', 'cuda'] or cuda:N, got 'gpu'"),
    ("cuda:x", "--device must be one of ['auto', 'cpu', 'cuda'] or cuda:N, got 'cuda:x'"),
    ("cuda", "--device cuda: no CUDA device is available here (torch.cuda.is_available() is False); use --device cpu or auto"),
])
def test_a_device_that_is_not_there_is_refused_in_one_line_before_any_work(device, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU machine's answer, wherever this runs
    out = tmp_path / "run"
    assert main(["search", "--budget", "1", "--device", device, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(fragment) and "\n" not in err
    assert not out.exists()


def test_device_cuda_is_for_the_local_backend(tiny):
    model, (train, val, _) = tiny
    with pytest.raises(ConfigError, match="--device cuda: fine-tuning on a GPU runs with the local backend"):
        ac.search("tests/fixtures/tiny_task.py:build_task", device="cuda", backend="ray", progress=lambda s: None)


def test_the_device_is_recorded_and_auto_is_the_cpu_without_cuda(tiny, cli_inputs, tmp_path):
    model, (train, val, test) = tiny
    result = ac.search(ac.Task(model, train=train, val=val, test=test), space=cli_inputs.space, profile=cli_inputs.profile, budget=1,
                       out=tmp_path / "run", progress=lambda s: None)
    assert json.loads((result.path / "run.json").read_text())["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def _fine_tune(tiny_task, device: str):
    import copy

    student = copy.deepcopy(tiny_task.teacher)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(0.5)  # something to recover
    soft = teacher_logits(tiny_task.teacher, tiny_task.train)
    distill_(student, tiny_task.train, soft, TrainPlan(steps=20), TrainPlan(steps=20), teacher=tiny_task.teacher, seed=0, device=device)
    return student


@pytest.mark.gpu
@needs_cuda
def test_a_fine_tune_on_cuda_comes_back_to_the_cpu_and_learns_like_the_cpu_one(tiny_task):
    from autocompress.pipeline import torch_accuracy

    on_gpu, on_cpu = _fine_tune(tiny_task, "cuda"), _fine_tune(tiny_task, "cpu")
    assert all(p.device.type == "cpu" for p in on_gpu.parameters()) and next(tiny_task.teacher.parameters()).device.type == "cpu"
    assert abs(torch_accuracy(on_gpu, tiny_task.val) - torch_accuracy(on_cpu, tiny_task.val)) <= 0.05


@pytest.mark.gpu
@needs_cuda
def test_a_search_fine_tunes_on_cuda_and_its_front_reproduces_on_onnx_runtime(tiny, cli_inputs, tmp_path):
    from autocompress.evaluation import split_accuracy

    model, (train, val, test) = tiny
    task = ac.Task(model, train=train, val=val, test=test)
    result = ac.search(task, space=cli_inputs.space, profile=cli_inputs.profile, budget=3, device="cuda", out=tmp_path / "run",
                       progress=lambda s: None)
    assert result.manifest["device"] == "cuda" and set(result.trials["state"]) == {"COMPLETE"}
    loaded = task.load()
    for _, row in result.front.iterrows():
        assert abs(split_accuracy(result.path / row["onnx"], loaded.val) - row["val_accuracy"]) <= 0.001
