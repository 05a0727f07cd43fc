"""The built-in digits demo. Only the split is tested by default; anything that trains the
demo teacher (~30 s) is marked slow and uses the session's temporary cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from autocompress.tasks.demo import DigitsResNet, cache_dir, demo_task, digits_splits


def test_cache_dir_is_isolated_by_the_test_session(isolated_cache):
    assert cache_dir() == Path(os.environ["AUTOCOMPRESS_CACHE"]) == isolated_cache
    assert Path.home() / ".cache" not in cache_dir().parents


def test_digits_splits_sizes_shapes_and_standardisation():
    train, val, test = digits_splits()
    assert (len(train), len(val), len(test)) == (1078, 359, 360)
    for split in (train, val, test):
        assert split.x.shape[1:] == (1, 16, 16) and split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64 and set(split.y.tolist()) == set(range(10))
    assert abs(train.x.mean().item()) < 1e-4 and abs(train.x.std().item() - 1) < 1e-4


def test_digits_splits_are_seeded_and_stratified():
    a, b = digits_splits(), digits_splits()
    for sa, sb in zip(a, b, strict=True):
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)
    counts = [np.bincount(s.y.numpy(), minlength=10) / len(s) for s in a]
    for c in counts[1:]:
        np.testing.assert_allclose(c, counts[0], atol=0.01)  # class shares agree across splits


def test_digits_resnet_shape_and_size():
    model = DigitsResNet().eval()
    with torch.no_grad():
        assert model(torch.zeros(3, 1, 16, 16)).shape == (3, 10)
    assert 0.6e6 < sum(p.numel() for p in model.parameters()) < 0.8e6  # "0.69M parameters"


@pytest.mark.slow
def test_demo_task_trains_once_then_loads_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))  # empty, whatever ran before
    messages: list[str] = []
    task = demo_task(progress=messages.append)
    assert any("Training the demo teacher" in m for m in messages)
    cached = list((tmp_path / "teachers").glob("digits-resnet-*.pt"))
    assert len(cached) == 1 and task.spec["cache_key"] == cached[0].stem
    with torch.no_grad():
        acc = (task.teacher(task.val.x).argmax(1) == task.val.y).float().mean().item()
    assert acc > 0.9

    messages.clear()
    again = demo_task(progress=messages.append)
    assert messages == []  # loaded, not retrained
    for k, v in task.teacher.state_dict().items():
        assert torch.equal(v, again.teacher.state_dict()[k])
    assert again.fingerprint == task.fingerprint and again.input_shape == (1, 16, 16) and again.num_classes == 10
