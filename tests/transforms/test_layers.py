"""transforms.layers: repeated stacks found by structure, layers dropped for a pass-through
that takes a library layer's arguments, and the forward check that tells when a model's own
code cannot do without one. Library models built from config objects (random weights)."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from autocompress.export import export_onnx
from autocompress.tasks.demo import DigitsResNet
from autocompress.transforms.layers import PassThrough, Stack, drop_error, drop_layers, layer_stacks


def _bert(layers: int = 4):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=16, num_labels=2)
    example = {"input_ids": torch.randint(1, 50, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.int64)}
    return BertForSequenceClassification(config).eval(), example


def test_a_bert_s_encoder_is_a_stack_and_a_cnn_has_none():
    model, _ = _bert()
    assert layer_stacks(model) == [Stack("bert.encoder.layer", 4, "BertLayer")]
    assert layer_stacks(DigitsResNet()) == []
    mixed = nn.Module()
    mixed.heads = nn.ModuleList([nn.Linear(4, 2), nn.Conv1d(4, 2, 1)])  # not like blocks
    mixed.acts = nn.ModuleList([nn.ReLU(), nn.ReLU()])  # no weights
    assert layer_stacks(mixed) == []


def test_dropped_bert_layers_leave_a_smaller_model_that_runs_and_exports_without_them(tmp_path):
    model, example = _bert()
    with torch.no_grad():
        before = model(**example).logits
    full = export_onnx(model, example, tmp_path / "full.onnx")
    params = sum(p.numel() for p in model.parameters())
    drop_layers(model, {"bert.encoder.layer": [1, 3]})
    assert isinstance(model.bert.encoder.layer[1], PassThrough) and len(model.bert.encoder.layer) == 4
    assert sum(p.numel() for p in model.parameters()) < params
    with torch.no_grad():
        after = model(**example).logits
    assert after.shape == before.shape and not torch.allclose(after, before)  # the layers did something
    half = export_onnx(model, example, tmp_path / "half.onnx")
    matmuls = [sum(n.op_type == "MatMul" for n in onnx.load(str(p)).graph.node) for p in (full, half)]
    assert matmuls[1] * 2 == matmuls[0]
    assert layer_stacks(model) == [Stack("bert.encoder.layer", 4, "BertLayer")]  # the first layer's class still names it


def test_what_cannot_be_dropped_is_said_in_one_line():
    model, example = _bert(2)
    assert drop_error(model, example, {"bert.encoder.layer": [0]}) is None
    assert drop_error(model, example, {"bert.encoder.layer": [0, 1]}) == "dropping all 2 layers of 'bert.encoder.layer' leaves no stack"
    assert drop_error(model, example, {"bert.encoder.layer": [2]}) == "'bert.encoder.layer' has 2 layers; cannot drop [2]"
    assert drop_error(model, example, {"bert.encoder": [0]}) == "'bert.encoder' is not a ModuleList of the model"
    assert all(not isinstance(m, PassThrough) for m in model.modules())  # tried on a copy


class ReadsItsLayers(nn.Module):
    """A parent that reads an attribute of each layer: it cannot run without them."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x) * layer.out_features / 4
        return x


def test_a_parent_that_reads_a_layer_s_attributes_fails_the_check():
    error = drop_error(ReadsItsLayers(), torch.randn(2, 4), {"layers": [1]})
    assert error is not None and error.startswith("AttributeError") and "out_features" in error


def test_a_pass_through_takes_keyword_hidden_states_and_refuses_nothing():
    p = PassThrough("BertLayer")
    x = torch.randn(2, 3)
    assert p(x, None, None, cache=None) is x and p(hidden_states=x) is x and "BertLayer" in repr(p)
    with pytest.raises(TypeError, match="without the hidden states"):
        p()
