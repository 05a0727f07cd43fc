"""The layers technique: stacks found when the space is bound (auto or named, with the
layers whose removal breaks the model kept and said), sampled as yes/no per layer, hand
recipes keep every layer, the structured search's moves, and a BERT built from a config
whose candidate without a layer is built, fine-tuned, exported and measured by the pipeline."""

from __future__ import annotations

import optuna
import pytest
import torch
from torch import nn

from autocompress.config import CandidateConfig, FinetuneConfig, LayerDropConfig
from autocompress.errors import ConfigError
from autocompress.space import SearchSpace
from autocompress.tasks.demo import DigitsResNet
from autocompress.techniques import technique

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples"


def _bert(layers: int = 3):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)).eval()
    return model, {"input_ids": torch.randint(1, 50, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.int64)}


def _space(body) -> SearchSpace:
    return SearchSpace.from_dict({"layers": body} if body is not None else {})


def test_a_bert_s_layers_but_the_first_are_choices_and_a_cnn_has_none():
    model, example = _bert()
    space, notes = _space({"stacks": "auto"}).bind(model, example)
    assert "layers: stacks bert.encoder.layer (2 droppable)" in notes
    cfg = space.suggest(optuna.trial.FixedTrial({"layers.bert.encoder.layer.1": True, "layers.bert.encoder.layer.2": False}))
    assert cfg.layers == LayerDropConfig(("bert.encoder.layer.1",)) and "drop layer[1]" in cfg.describe()
    assert technique("layers").recipe_off(space.spec("layers")) == {"bert.encoder.layer.1": False, "bert.encoder.layer.2": False}
    kd = space.recipe({})  # a hand recipe keeps every layer
    assert kd["layers.bert.encoder.layer.1"] is False and kd["layers.bert.encoder.layer.2"] is False
    assert space.suggest(optuna.trial.FixedTrial(kd)).layers == LayerDropConfig()
    cnn, notes = _space({"stacks": "auto"}).bind(DigitsResNet(), torch.randn(2, 1, 8, 8))
    assert "layers: no repeated stack of layers found (stacks: auto); layer dropping is not searched" in notes
    assert cnn.suggest(optuna.trial.FixedTrial({})).layers == LayerDropConfig()
    assert _space(None).bind(model, example)[0].suggest(optuna.trial.FixedTrial({})).layers == LayerDropConfig()  # no section: off


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gain = 1.0

    def forward(self, x):
        return self.fc(x)


class ReadsTheSecondLayer(nn.Module):
    """Its forward reads an attribute of layer 1: that layer cannot go."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Scaled() for _ in range(3)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x * self.layers[1].gain


def test_a_layer_the_model_cannot_do_without_is_kept_with_its_reason_and_bad_sections_are_refused():
    space, notes = _space({"stacks": ["layers"]}).bind(ReadsTheSecondLayer(), torch.randn(2, 4))
    assert any(n.startswith("layers: layers.1 is kept (the model's forward fails without it: AttributeError") for n in notes)
    assert space.spec("layers").extra.bound == (("layers", (2,)),)
    with pytest.raises(ConfigError, match=r"layers.stacks names 'encoder', which is not a repeated stack of the model; found: \['layers'\]"):
        _space({"stacks": ["encoder"]}).bind(ReadsTheSecondLayer(), torch.randn(2, 4))
    with pytest.raises(ConfigError, match="unknown key layers.drop; allowed: \\['stacks'\\]"):
        _space({"drop": [1]})
    with pytest.raises(ConfigError, match="layers.stacks must be 'auto' or a list of module names, got 3"):
        _space({"stacks": 3})


def test_the_structured_search_drops_the_last_kept_layer_first():
    model, example = _bert(4)
    space, _ = _space({"stacks": "auto"}).bind(model, example)
    moves = technique("layers").stronger(space.spec("layers"), {"layers.bert.encoder.layer.3": True})
    assert moves[0].whole and moves[0].changes == {"layers.bert.encoder.layer.2": True}
    assert [m.changes for m in moves[1:]] == [{"layers.bert.encoder.layer.1": True}, {"layers.bert.encoder.layer.2": True}]


def test_a_bert_without_a_layer_goes_through_the_pipeline(fast_profile, tmp_path):
    import onnxruntime as ort

    from autocompress.pipeline import build_candidate, prepare
    from autocompress.tasks import load_task

    task = load_task(task=f"{EXAMPLES / 'text_classifier'}.py:task")
    ctx = prepare(task, fast_profile, tmp_path / "run")
    try:
        cfg = CandidateConfig(layers=LayerDropConfig(("bert.encoder.layer.1",)), finetune=FinetuneConfig(steps=20))
        res = build_candidate(cfg, ctx, tmp_path / "c")
    finally:
        ctx.close()
    assert res.size_bytes < ctx.teacher.size_bytes and 0.5 <= res.val_metric <= 1.0
    session = ort.InferenceSession(str(res.onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
