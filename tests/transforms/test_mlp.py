"""MLP-width pruning: the feed-forward blocks' inner Linear found in the layers of a
repeated stack by the dependency graph (coupled with nothing but the next Linear's inputs),
the weakest channels removed from both layers: the pruned model computes what the
original computes with those channels silenced."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from autocompress.testing import conformance_model
from autocompress.transforms.mlp import mlp_sites, prune_mlp, width_kept


def test_inner_widths_are_found_in_stacks_only():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                    intermediate_size=64, max_position_embeddings=16, num_labels=2)).eval()
    example = {"input_ids": torch.randint(1, 50, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.int64)}
    # not the attention's q/k/v or output, not the pooler, not the classifier
    assert [(s.path, s.width) for s in mlp_sites(bert, example)] == [(f"bert.encoder.layer.{i}.intermediate.dense", 64) for i in range(2)]
    model, x = conformance_model("transformer")
    assert [s.path for s in mlp_sites(model, x[:2])] == ["layers.0.fc1", "layers.1.fc1"]
    for kind in ("cnn", "stack"):  # a residual Linear in a stack adds to the residual width: not an inner width
        m, x = conformance_model(kind)
        assert mlp_sites(m, x[:2]) == []


def test_kept_widths_round_and_keep_one():
    assert [width_kept(64, r) for r in (0.0, 0.5, 0.8, 0.999)] == [64, 32, 13, 1]
    assert [width_kept(64, r, 8) for r in (0.5, 0.8, 0.95)] == [32, 16, 8]
    assert width_kept(6, 0.5, 8) == 3  # narrower than the rounding: not rounded


def test_the_weakest_channels_go_and_the_rest_compute_as_before():
    model, x = conformance_model("transformer")
    fc1, fc2 = model.layers[1].fc1, model.layers[1].fc2
    weak = torch.arange(0, 64, 2)  # every other channel made weak
    with torch.no_grad():
        fc1.weight[weak] *= 1e-3
        fc1.bias[weak] *= 1e-3
    silenced = copy.deepcopy(model)
    with torch.no_grad():
        silenced.layers[1].fc2.weight[:, weak] = 0
    pruned = copy.deepcopy(model)
    assert prune_mlp(pruned, x[:2], {"layers.1.fc1": 32}) == {"layers.1.fc1": 32}
    strong = torch.arange(1, 64, 2)
    assert torch.equal(pruned.layers[1].fc1.weight, fc1.weight[strong]) and torch.equal(pruned.layers[1].fc2.weight, fc2.weight[:, strong])
    assert pruned.layers[0].fc1.out_features == 64  # the other block is left alone
    with torch.no_grad():
        np.testing.assert_allclose(pruned(x).numpy(), silenced(x).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="'layers.1.fc1' has 64 channels; cannot keep 0"):
        prune_mlp(model, x[:2], {"layers.1.fc1": 0})
