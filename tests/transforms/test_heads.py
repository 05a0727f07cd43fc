"""Attention-head pruning: attention modules found by structure (a BERT's query/key/value,
a ViT's q_proj/k_proj/v_proj, our own TinyEncoder), whole heads removed through
Torch-Pruning's graph with the module's head count rewritten; the pruned model computes
what the original computes with those heads silenced, runs in train mode, and exports to
an ONNX file that ONNX Runtime runs with the new head count."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from autocompress.export import export_onnx
from autocompress.testing import conformance_model
from autocompress.transforms.heads import attention_sites, heads_to_remove, prune_heads


def _bert(heads: int = 4):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=heads,
                                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)).eval()
    return model, {"input_ids": torch.randint(1, 50, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.int64)}


def _vit():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(image_size=16, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=64, num_labels=3)).eval()
    return model, torch.randn(2, 1, 16, 16)


def test_attention_modules_are_found_by_structure_and_a_cnn_has_none():
    bert, _ = _bert()
    assert [(s.path, s.qkv, s.heads, s.head_size) for s in attention_sites(bert)] == [
        (f"bert.encoder.layer.{i}.attention.self", ("query", "key", "value"), 4, 8) for i in range(2)]
    vit, _ = _vit()
    assert [(s.path, s.qkv) for s in attention_sites(vit)] == [(f"vit.layers.{i}.attention", ("q_proj", "k_proj", "v_proj")) for i in range(2)]
    assert attention_sites(conformance_model("cnn")[0]) == []
    assert attention_sites(conformance_model("stack")[0]) == []


def test_a_ratio_removes_a_rounded_share_and_keeps_one_head():
    assert [heads_to_remove(4, r) for r in (0.0, 0.25, 0.5, 0.75, 0.95)] == [0, 1, 2, 3, 3]
    assert heads_to_remove(12, 0.25) == 3 and heads_to_remove(1, 0.9) == 0


def test_pruned_heads_are_the_weakest_and_the_rest_compute_as_before():
    """Head 2 of the first attention module is made the weakest; removing one head must then
    give exactly what the original gives with head 2's output columns zeroed."""
    model, x = conformance_model("transformer")
    attn = model.layers[0].attention
    with torch.no_grad():
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            proj.weight[16:24] *= 1e-3
            proj.bias[16:24] *= 1e-3
    silenced = copy.deepcopy(model)
    with torch.no_grad():
        silenced.layers[0].attention.out_proj.weight[:, 16:24] = 0
    pruned = copy.deepcopy(model)
    left = prune_heads(pruned, x[:2], {"layers.0.attention": 1})
    assert left == {"layers.0.attention": 3}
    a = pruned.layers[0].attention
    assert (a.num_heads, a.head_dim, a.q_proj.out_features, a.v_proj.out_features, a.out_proj.in_features) == (3, 8, 24, 24, 24)
    keep = torch.cat([torch.arange(0, 16), torch.arange(24, 32)])
    assert torch.equal(a.q_proj.weight, attn.q_proj.weight[keep]) and torch.equal(a.out_proj.weight, attn.out_proj.weight[:, keep])
    with torch.no_grad():
        np.testing.assert_allclose(pruned(x).numpy(), silenced(x).numpy(), atol=1e-5)
    assert model.layers[0].attention.num_heads == 4  # prune_heads changed only the model it was given


@pytest.mark.parametrize("build", [_bert, _vit], ids=["bert", "vit"])
def test_a_library_model_without_heads_runs_trains_and_exports_with_the_new_head_count(build, tmp_path):
    import onnxruntime as ort

    model, example = build()
    sites = attention_sites(model)
    left = prune_heads(model, example, {sites[0].path: 3, sites[1].path: 1})
    assert list(left.values()) == [1, 3]
    first = model.get_submodule(sites[0].path)
    assert first.num_attention_heads == 1 and getattr(first, sites[0].qkv[0]).out_features == 8
    if hasattr(first, "all_head_size"):
        assert first.all_head_size == 8
    model.train()
    out = model(**example) if isinstance(example, dict) else model(example)
    out.logits.sum().backward()  # trains
    model.eval()
    with torch.no_grad():
        want = (model(**example) if isinstance(example, dict) else model(example)).logits.numpy()
    path = export_onnx(model, example, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: (example[i.name] if isinstance(example, dict) else example).numpy() for i in session.get_inputs()}
    np.testing.assert_allclose(session.run(None, feed)[0], want, rtol=1e-3, atol=1e-4)


def test_bad_requests_are_refused():
    model, x = conformance_model("transformer")
    with pytest.raises(ValueError, match="'layers.0' is not an attention module with prunable heads"):
        prune_heads(model, x[:2], {"layers.0": 1})
    with pytest.raises(ValueError, match="'layers.0.attention' has 4 heads; cannot remove 4"):
        prune_heads(model, x[:2], {"layers.0.attention": 4})


class _TorchEncoder(torch.nn.Module):
    """A classifier on torch's nn.TransformerEncoder: its attention is nn.MultiheadAttention."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(16, 32)
        self.encoder = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True), 2)
        self.head = torch.nn.Linear(32, 3)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x.flatten(1, -2))).mean(dim=1))


def test_torch_multihead_attention_has_its_heads_pruned_once_split(tmp_path):
    """nn.MultiheadAttention packs q/k/v in one Parameter: not an attention site as it is;
    split (transforms.mha), it is one, and the heads technique splits before it prunes."""
    import onnxruntime as ort

    from autocompress.config import HeadPruneConfig
    from autocompress.space import SearchSpace
    from autocompress.techniques import technique
    from autocompress.transforms import TransformContext
    from autocompress.transforms.mha import SplitMultiheadAttention, split_attention

    torch.manual_seed(0)
    model = _TorchEncoder().eval()
    x = torch.randn(4, 1, 16, 16)
    paths = [f"encoder.layers.{i}.self_attn" for i in range(2)]
    assert attention_sites(model) == []
    split = split_attention(model)
    assert [(s.path, s.qkv, s.heads, s.head_size) for s in attention_sites(split)] == [(p, ("q_proj", "k_proj", "v_proj"), 4, 8)
                                                                                       for p in paths]
    # pruned heads are the weakest; the rest compute as before (head 1 of layer 0 silenced)
    attn = split.encoder.layers[0].self_attn
    with torch.no_grad():
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            proj.weight[8:16] *= 1e-3
            proj.bias[8:16] *= 1e-3
    silenced = copy.deepcopy(split)
    with torch.no_grad():
        silenced.encoder.layers[0].self_attn.out_proj.weight[:, 8:16] = 0
    assert prune_heads(split, x[:2], {paths[0]: 1, paths[1]: 3}) == {paths[0]: 3, paths[1]: 1}
    a = split.encoder.layers[0].self_attn
    assert (a.num_heads, a.q_proj.out_features, a.v_proj.out_features, a.out_proj.in_features, a.out_proj.out_features) == (3, 24, 24, 24, 32)
    with torch.no_grad():
        got = split(x)
    silenced.encoder.layers[1].self_attn = split.encoder.layers[1].self_attn  # layer 1 as pruned in both
    with torch.no_grad():
        np.testing.assert_allclose(got.numpy(), silenced(x).numpy(), atol=1e-5)

    # the technique: bound on a split copy (the model untouched), applied on the caller's copy
    spec, notes = technique("heads").bind(SearchSpace.from_dict({"heads": {"ratio": [0.0, 0.5]}}).spec("heads"), model, x[:2])
    assert notes == ["heads: 2 attention modules (4 heads)"] and spec.extra == 2
    assert all(type(layer.self_attn) is torch.nn.MultiheadAttention for layer in model.encoder.layers)
    pruned = technique("heads").apply(copy.deepcopy(model), HeadPruneConfig(0.5), TransformContext(example_input=x[:2]))
    assert all(isinstance(layer.self_attn, SplitMultiheadAttention) and layer.self_attn.num_heads == 2 for layer in pruned.encoder.layers)
    pruned.train()
    pruned(x).sum().backward()  # trains
    pruned.eval()
    with torch.no_grad():
        want = pruned(x).numpy()
    path = export_onnx(pruned, (1, 16, 16), tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0], want, rtol=1e-3, atol=1e-5)
