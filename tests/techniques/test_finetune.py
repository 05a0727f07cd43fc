"""finetune: the learning-rate range follows the model. A model with attention modules
samples `finetune.attention_lr` under the name `finetune.lr`; a convolutional model, or a
space without `attention_lr`, samples `finetune.lr` as given."""

from __future__ import annotations

import math

import optuna
import pytest

from autocompress.schema import Range
from autocompress.space import load_space
from autocompress.techniques._registry import technique
from autocompress.testing import conformance_model

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def space():
    return load_space("default")


def _bound(space, kind):
    model, x = conformance_model(kind)
    return technique("finetune").bind(space.spec("finetune"), model, x)


def test_a_model_with_attention_samples_the_attention_range(space):
    spec, notes = _bound(space, "transformer")
    attention = space.spec("finetune").params["attention_lr"]
    assert spec.params["lr"] == attention and attention != space.spec("finetune").params["lr"]
    assert isinstance(attention, Range) and attention.high <= 3e-4  # the rate measured to keep a trained encoder
    assert notes == ["finetune: attention modules found; the fine-tune lr is finetune.attention_lr (3e-05..0.0003, log), not finetune.lr"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        lr = spec.get(study.ask(), "lr")
        assert attention.low <= lr <= attention.high


@pytest.mark.parametrize("kind", ["cnn", "stack"])
def test_a_model_without_attention_keeps_lr(space, kind):
    spec, notes = _bound(space, kind)
    assert spec.params["lr"] == space.spec("finetune").params["lr"]
    assert not [n for n in notes if n.startswith("finetune")]


def test_a_space_without_attention_lr_keeps_lr_everywhere_and_its_fingerprint(tmp_path):
    body = "finetune:\n  steps: [0, 50]\n  lr: {low: 1.0e-3, high: 2.0e-3, log: true}\n"
    path = tmp_path / "space.yaml"
    path.write_text(body)
    mine = load_space(str(path))
    assert "attention_lr" not in mine.to_dict()["finetune"]  # spaces from before the key hash as they did
    spec, notes = _bound(mine, "transformer")
    assert spec.params["lr"] == Range(float, 1e-3, 2e-3, log=True) and notes == []


def test_the_structured_start_uses_the_attention_range_middle(space):
    """The climb's first fine-tuned step takes a range's geometric middle: ~9.5e-5 on a
    transformer, where the convolutional range gives ~9.5e-4."""
    from autocompress.climb import complete

    model, x = conformance_model("transformer")
    bound, _ = space.bind(model, x)
    params, cfg = complete(bound, {"finetune.steps": 150, "distill.alpha": 0.5, "distill.temperature": 4.0}, {})
    assert math.isclose(cfg.finetune.lr, math.sqrt(3e-5 * 3e-4), rel_tol=1e-6)


def test_attention_lr_is_checked_like_lr(tmp_path):
    from autocompress.errors import ConfigError

    path = tmp_path / "space.yaml"
    path.write_text("finetune:\n  attention_lr: {low: 0.0, high: 1.0e-4, log: true}\n")
    with pytest.raises(ConfigError, match="finetune.attention_lr"):
        load_space(str(path))
