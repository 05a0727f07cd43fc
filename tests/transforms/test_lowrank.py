"""SVD low-rank factorization through techniques.apply: exact at full rank, the expected
ranks and smaller layers below it, model order for segments, exclusions, and real ONNX
export + ONNX Runtime on the factorized models. The input model is never touched."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from autocompress.config import LowRankConfig
from autocompress.export import export_onnx
from autocompress.tasks.demo import DigitsResNet
from autocompress.techniques import apply
from autocompress.transforms import TransformContext
from autocompress.transforms.lowrank import (
    factorizable_layers,
    factorize,
    full_rank,
    lowrank_plan,
)
from tests.helpers import assert_state_equal, state_snapshot


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _types(model: nn.Module) -> list[tuple[str, type]]:
    return [(n, type(m)) for n, m in model.named_modules()]


def _lowrank(model: nn.Module, x: torch.Tensor, **cfg) -> nn.Module:
    return apply(model, LowRankConfig(**cfg), TransformContext(example_input=x))


def _ort_outputs(model: nn.Module, x: torch.Tensor, path) -> np.ndarray:
    export_onnx(model, tuple(x.shape[1:]), path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    return out


class BigSmall(nn.Module):
    """A big conv, a big Linear and a Linear(96 -> 1) head, which no rank can shrink."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 32, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(128, 96)
        self.head = nn.Linear(96, 1)

    def forward(self, x):
        x = torch.flatten(self.pool(torch.relu(self.conv(x))), 1)
        return self.head(torch.relu(self.fc1(x)))


class Reversed(nn.Module):
    """Registered in the opposite order to the one the layers run in, with the layers in
    a ModuleDict, a ModuleList and a nested Sequential."""

    def __init__(self):
        super().__init__()
        self.last = nn.Linear(32, 32)
        self.lists = nn.ModuleList([nn.Linear(32, 32), nn.Linear(32, 32)])  # run 3rd, 2nd
        self.dict = nn.ModuleDict({"first": nn.Sequential(nn.Linear(32, 32), nn.ReLU())})

    def forward(self, x):
        x = self.dict["first"](x)
        x = torch.relu(self.lists[1](x))
        x = torch.relu(self.lists[0](x))
        return self.last(x)


RUN_ORDER = ["dict.first.0", "lists.1", "lists.0", "last"]


# ---------------------------------------------------------------- full rank is exact


@pytest.mark.parametrize("bias", [True, False])
def test_full_rank_linear_reproduces_outputs(bias):
    torch.manual_seed(0)
    layer = nn.Linear(32, 24, bias=bias)
    seq = factorize(layer, 24)
    assert [type(m) for m in seq] == [nn.Linear, nn.Linear]
    assert seq[0].weight.shape == (24, 32) and seq[0].bias is None
    assert seq[1].weight.shape == (24, 24) and (seq[1].bias is not None) == bias
    x = torch.randn(7, 32)
    with torch.no_grad():
        torch.testing.assert_close(seq(x), layer(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("stride,padding,dilation,mode", [(2, 1, 1, "zeros"), (1, 2, 2, "reflect")])
def test_full_rank_conv_reproduces_outputs(bias, stride, padding, dilation, mode):
    torch.manual_seed(0)
    layer = nn.Conv2d(6, 10, 3, stride=stride, padding=padding, dilation=dilation, bias=bias, padding_mode=mode)
    seq = factorize(layer, 10)  # full rank: min(10, 6*3*3)
    a, b = seq
    assert isinstance(a, nn.Conv2d) and isinstance(b, nn.Conv2d)
    assert (a.in_channels, a.out_channels, a.kernel_size, a.stride, a.padding, a.dilation, a.padding_mode) == (
        6, 10, (3, 3), (stride, stride), (padding, padding), (dilation, dilation), mode,
    )
    assert a.bias is None
    assert (b.in_channels, b.out_channels, b.kernel_size, b.stride, b.padding) == (10, 10, (1, 1), (1, 1), (0, 0))
    assert (b.bias is not None) == bias
    x = torch.randn(3, 6, 11, 11)
    with torch.no_grad():
        y = layer(x)
        torch.testing.assert_close(seq(x), y, atol=1e-5, rtol=0)


def test_truncated_factors_are_the_balanced_best_approximation():
    torch.manual_seed(0)
    layer = nn.Conv2d(12, 20, 3, bias=False).double()
    seq = factorize(layer, 5)
    assert seq[0].weight.dtype == seq[1].weight.dtype == torch.float64
    first = seq[0].weight.reshape(5, -1)
    second = seq[1].weight.reshape(20, 5)
    w = layer.weight.detach().reshape(20, -1)
    s = torch.linalg.svdvals(w)
    # Eckart-Young: the error of the best rank-5 approximation is the tail of the spectrum
    torch.testing.assert_close(torch.linalg.norm(w - second @ first), s[5:].square().sum().sqrt())
    # balanced split: both factors carry sqrt(S) (Gram matrices diag(S) on both sides)
    torch.testing.assert_close(first @ first.T, torch.diag(s[:5]))
    torch.testing.assert_close(second.T @ second, torch.diag(s[:5]))


def test_factorize_rejects_bad_layers_and_ranks():
    with pytest.raises(TypeError):
        factorize(nn.Conv2d(8, 8, 3, groups=8), 2)
    with pytest.raises(ValueError):
        factorize(nn.Linear(8, 4), 5)


# ---------------------------------------------------------------- the transform


def test_ratio_one_is_the_identity_and_the_input_is_untouched(tiny_module):
    torch.manual_seed(0)
    model = tiny_module.TinyResNet().eval()
    x = torch.randn(4, 3, 8, 8)
    before, types = state_snapshot(model), _types(model)
    out = _lowrank(model, x)
    assert out is not model
    assert _types(out) == types
    assert_state_equal(out, before)
    with torch.no_grad():
        torch.testing.assert_close(out(x), model(x), atol=0, rtol=0)

    factorized = _lowrank(model, x, rank_ratio=0.25)
    assert _types(factorized) != types
    assert _types(model) == types  # nothing replaced in the caller's model
    assert_state_equal(model, before)


def test_quarter_rank_factorizes_big_layers_and_keeps_a_layer_that_would_grow():
    torch.manual_seed(0)
    model = BigSmall().eval()
    x = torch.randn(2, 8, 6, 6)
    # conv: full rank min(32, 72) = 32 -> 8, 8*(72+32) = 832 < 2304
    # fc1: full rank 96 -> 24, 24*(128+96) = 5376 < 12288
    # head: full rank 1 -> 1, 1*(96+1) = 97 >= 96 -> left as is
    cfg = LowRankConfig(rank_ratio=0.25)
    assert lowrank_plan(model, cfg, x) == [("conv", 8), ("fc1", 24), ("head", None)]
    out = _lowrank(model, x, rank_ratio=0.25)
    assert isinstance(out.conv, nn.Sequential) and out.conv[0].out_channels == 8
    assert out.conv[0].weight.shape == (8, 8, 3, 3) and out.conv[1].weight.shape == (32, 8, 1, 1)
    assert isinstance(out.fc1, nn.Sequential) and out.fc1[0].out_features == 24
    assert type(out.head) is nn.Linear
    assert out.head.weight.equal(model.head.weight)
    assert _n_params(out) < _n_params(model)
    assert _n_params(out.conv) < _n_params(model.conv) and _n_params(out.fc1) < _n_params(model.fc1)
    with torch.no_grad():
        assert out(x).shape == model(x).shape == (2, 1)


def test_the_size_rule_applies_above_the_minimum_rank():
    x = torch.randn(2, 8)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    # 0.75 * 8 = 6 and 6*(8+8) = 96 >= 64: neither layer shrinks; 0.5 -> 4*16 = 64 >= 64 too
    assert lowrank_plan(model, LowRankConfig(rank_ratio=0.75), x) == [("0", None), ("2", None)]
    assert lowrank_plan(model, LowRankConfig(rank_ratio=0.5), x) == [("0", None), ("2", None)]
    assert lowrank_plan(model, LowRankConfig(rank_ratio=0.375), x) == [("0", 3), ("2", 3)]
    assert _types(_lowrank(model, x, rank_ratio=0.75)) == _types(model)


def test_layers_are_in_run_order_and_segments_follow_it():
    torch.manual_seed(0)
    model = Reversed().eval()
    x = torch.randn(3, 32)
    assert [n for n, _ in factorizable_layers(model, x)] == RUN_ORDER

    out = _lowrank(model, x, segment_ratios=(1.0, 0.25))
    assert lowrank_plan(model, LowRankConfig(segment_ratios=(1.0, 0.25)), x) == list(
        zip(RUN_ORDER, [None, None, 8, 8])
    )
    assert type(out.dict["first"][0]) is nn.Linear and type(out.lists[1]) is nn.Linear
    assert isinstance(out.lists[0], nn.Sequential) and out.lists[0][0].out_features == 8
    assert isinstance(out.last, nn.Sequential) and out.last[0].out_features == 8
    with torch.no_grad():
        assert out(x).shape == (3, 32)

    # every container kind is replaced in place: ModuleDict key + Sequential index, ModuleList
    allr = _lowrank(model, x, rank_ratio=0.3)  # round(0.3 * 32) = 10, 10 * 64 < 32 * 32
    layers = (allr.dict["first"][0], allr.lists[0], allr.lists[1], allr.last)
    assert all(isinstance(m, nn.Sequential) and m[0].out_features == 10 for m in layers)


def test_exclude_keeps_named_layers_and_their_children():
    torch.manual_seed(0)
    model = Reversed().eval()
    x = torch.randn(3, 32)
    out = _lowrank(model, x, rank_ratio=0.25, exclude=("lists.1", "dict"))
    assert [n for n, _ in factorizable_layers(model, x, ("lists.1", "dict"))] == ["lists.0", "last"]
    assert type(out.lists[1]) is nn.Linear and type(out.dict["first"][0]) is nn.Linear
    assert isinstance(out.lists[0], nn.Sequential) and isinstance(out.last, nn.Sequential)
    # a prefix without the dot is not an exclusion: "list" does not exclude "lists.0"
    assert [n for n, _ in factorizable_layers(model, x, ("list", "las"))] == RUN_ORDER


def test_depthwise_and_grouped_convs_are_skipped():
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.Conv2d(16, 32, 3, padding=1, groups=2), nn.Conv2d(32, 32, 3, padding=1),
    ).eval()
    x = torch.randn(1, 3, 8, 8)
    assert [n for n, _ in factorizable_layers(model, x)] == ["0", "3"]
    out = _lowrank(model, x, rank_ratio=0.25)
    assert isinstance(out[0], nn.Sequential) and isinstance(out[3], nn.Sequential)
    assert type(out[1]) is nn.Conv2d and out[1].groups == 16 and out[1].weight.equal(model[1].weight)
    assert type(out[2]) is nn.Conv2d and out[2].groups == 2


def test_shared_layer_stays_shared_and_train_mode_and_bn_stats_are_kept():
    lin = nn.Linear(32, 32)
    model = nn.Sequential(nn.BatchNorm1d(32), lin, nn.ReLU(), lin).train()
    stats = model[0].running_mean.clone()
    x = torch.randn(4, 32) + 3.0
    assert [n for n, _ in factorizable_layers(model, x)] == ["1"]
    out = _lowrank(model, x, rank_ratio=0.25)
    assert isinstance(out[1], nn.Sequential) and out[1] is out[3]
    assert out.training and out[1].training
    assert out[0].running_mean.equal(stats) and model[0].running_mean.equal(stats)


# ---------------------------------------------------------------- ONNX export


def test_factorized_model_exports_and_ort_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = BigSmall().eval()
    x = torch.randn(3, 8, 6, 6)
    out = _lowrank(model, x, rank_ratio=0.25)
    got = _ort_outputs(out, x, tmp_path / "m.onnx")
    with torch.no_grad():
        np.testing.assert_allclose(got, out(x).numpy(), atol=1e-4, rtol=0)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert ops.count("Conv") == 2  # the k x k conv and the 1 x 1 conv


@pytest.mark.parametrize("which", ["tiny_resnet", "digits_resnet"])
def test_residual_models_factorize_export_and_run(which, tiny_module, tmp_path):
    torch.manual_seed(0)
    if which == "tiny_resnet":
        model, x = tiny_module.TinyResNet().eval(), torch.randn(2, 3, 8, 8)
    else:
        model, x = DigitsResNet().eval(), torch.randn(2, 1, 16, 16)
    out = _lowrank(model, x, rank_ratio=0.25)
    plan = lowrank_plan(model, LowRankConfig(rank_ratio=0.25), x)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert len(plan) == n_convs + 1  # every conv and the fc
    assert all(r is not None for _, r in plan)
    assert _n_params(out) < _n_params(model)
    with torch.no_grad():
        ref = out(x)
        assert ref.shape == model(x).shape
    got = _ort_outputs(out, x, tmp_path / f"{which}.onnx")
    assert got.shape == tuple(ref.shape)
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-4, rtol=0)

    if which == "digits_resnet":
        return  # (the full-rank SVDs of its 10 layers take seconds; the tiny net checks this)
    # at full rank (through factorize, since full rank never shrinks) outputs are unchanged
    exact = apply(model, LowRankConfig(), TransformContext(example_input=x))
    for name, layer in factorizable_layers(exact, x):
        parent, _, child = name.rpartition(".")
        setattr(exact.get_submodule(parent), child, factorize(layer, full_rank(layer)))
    with torch.no_grad():
        torch.testing.assert_close(exact(x), model(x), atol=1e-5, rtol=0)


def test_a_factorized_layer_keeps_the_shape_attributes_a_parent_may_read():
    from autocompress.transforms.lowrank import Factorized

    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, dilation=1)
    f = factorize(conv, 2)
    assert isinstance(f, Factorized) and isinstance(f, nn.Sequential)
    assert (f.stride, f.kernel_size, f.padding, f.dilation, f.in_channels, f.out_channels) == ((2, 2), (3, 3), (1, 1), (1, 1), 4, 8)
    lin = factorize(nn.Linear(16, 12), 3)
    assert (lin.in_features, lin.out_features) == (16, 12) and list(lin.state_dict()) == ["0.weight", "1.weight", "1.bias"]


def test_hugging_face_mobilenet_runs_with_every_layer_factorized():
    """Its TF-style padding reads each conv's stride and kernel size from the module it holds."""
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    from autocompress.transforms.lowrank import breaking_layers

    torch.manual_seed(0)
    model = MobileNetV2ForImageClassification(MobileNetV2Config(image_size=32, depth_multiplier=0.35, num_labels=4)).eval()
    assert breaking_layers(model, {"pixel_values": torch.randn(2, 3, 32, 32)}) == {}


class Tied(nn.Module):
    """A parent that reads its layer's weight (tied weights)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, x):
        return self.b(self.a(x)) @ self.a.weight


def test_a_layer_whose_factorized_form_breaks_the_forward_is_excluded_at_bind_with_its_reason():
    from autocompress.space import SearchSpace
    from autocompress.transforms.lowrank import breaking_layers

    x = torch.randn(2, 8)
    assert set(breaking_layers(Tied(), x)) == {"a"}
    space = SearchSpace.from_dict({"lowrank": {"rank_ratio": [0.25, 0.5, 1.0]}})
    bound, notes = space.bind(Tied(), x)
    assert bound.spec("lowrank").settings.exclude == ("a",)
    assert any(n.startswith("lowrank: a is kept (the model's forward fails with it factorized: AttributeError") for n in notes)


def test_a_bert_s_attention_and_mlp_projections_are_factorized_and_it_still_runs():
    """A Hugging Face BERT (config, random weights): query/key/value/output and the MLP's
    Linear layers held inside its attention and feed-forward modules are factorizable, none
    breaks the model's forward, and the factorized model runs with fewer weights."""
    from transformers import BertConfig, BertForSequenceClassification

    from autocompress.transforms.lowrank import breaking_layers, factorizable_layers, low_rank

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=128, max_position_embeddings=16, num_labels=2)).eval()
    example = {"input_ids": torch.randint(1, 50, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.int64)}
    names = [n for n, _ in factorizable_layers(model, example)]
    layer0 = [n.split("layer.0.", 1)[1] for n in names if ".layer.0." in n]
    assert layer0 == ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                      "intermediate.dense", "output.dense"]
    assert breaking_layers(model, example) == {}
    before = sum(p.numel() for p in model.parameters())
    low_rank(model, LowRankConfig(0.25), TransformContext(example_input=example))
    assert sum(p.numel() for p in model.parameters()) < before
    with torch.no_grad():
        assert model(**example).logits.shape == (2, 2)


# ---------------------------------------------------------------- attention modules and tied weights


class EncoderClassifier(nn.Module):
    """A classifier on torch's nn.TransformerEncoder (2 layers of nn.MultiheadAttention +
    MLP), each 16-value row of the input a token."""

    def __init__(self, width: int = 32, heads: int = 4, classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(16, width)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True), 2)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x.flatten(1, -2))).mean(dim=1))


ATTENTION = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"]


def test_the_projections_of_torch_multihead_attention_are_factorized(tmp_path):
    """nn.MultiheadAttention reads its packed in-projection and out_proj.weight itself:
    split first (transforms.mha), q/k/v/out are Linear layers like the rest."""
    from autocompress.transforms.lowrank import Factorized, breaking_layers
    from autocompress.transforms.mha import SplitMultiheadAttention

    torch.manual_seed(0)
    model = EncoderClassifier().eval()
    x = torch.randn(3, 1, 16, 16)
    before = state_snapshot(model)
    per_layer = [*ATTENTION, "linear1", "linear2"]
    names = ["embed", *(f"encoder.layers.{i}.{n}" for i in range(2) for n in per_layer), "head"]
    assert [n for n, _ in factorizable_layers(model, x)] == names  # listed on a split copy, in run order
    assert all(type(m.self_attn) is nn.MultiheadAttention for m in model.encoder.layers)  # ... the model untouched
    assert breaking_layers(model, x) == {}

    # at 0.5 the square attention projections (32 x 32) keep their size (16 * (32 + 32) = 32 * 32): left as they are
    plan = dict(lowrank_plan(model, LowRankConfig(rank_ratio=0.5), x))
    assert list(plan) == names
    assert all(plan[f"encoder.layers.{i}.{n}"] is None for i in range(2) for n in ATTENTION)
    assert all(plan[f"encoder.layers.{i}.{n}"] == 16 for i in range(2) for n in ("linear1", "linear2"))
    half = _lowrank(model, x, rank_ratio=0.5)
    attn = half.encoder.layers[0].self_attn
    assert isinstance(attn, SplitMultiheadAttention) and type(attn.q_proj) is nn.Linear
    assert isinstance(half.encoder.layers[0].linear1, Factorized)

    # at 0.25 every layer shrinks, the attention's q/k/v and out_proj included
    out = _lowrank(model, x, rank_ratio=0.25)
    assert_state_equal(model, before)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 8  # embed, 2 x (out_proj, linear1, linear2), head
    assert sum(isinstance(m, Factorized) for m in out.modules()) == len(names) == 14
    assert sum(isinstance(m, nn.Linear) for m in out.modules()) == 2 * 14  # each as two Linear layers
    for i in range(2):
        attn = out.encoder.layers[i].self_attn
        assert isinstance(attn, SplitMultiheadAttention)
        assert all(isinstance(getattr(attn, p), Factorized) and getattr(attn, p)[0].out_features == 8
                   for p in ("q_proj", "k_proj", "v_proj", "out_proj"))
    assert _n_params(out) < _n_params(model)
    with torch.no_grad():
        ref = out(x)
    assert ref.shape == (3, 10)
    np.testing.assert_allclose(_ort_outputs(out, x, tmp_path / "encoder.onnx"), ref.numpy(), atol=1e-4, rtol=0)

    # segments follow the run order of the split model: the first half is embed and layer 0
    seg = lowrank_plan(model, LowRankConfig(segment_ratios=(0.25, 1.0)), x)
    assert [n for n, r in seg if r is not None] == names[:7] == ["embed", *(f"encoder.layers.0.{n}" for n in per_layer)]


def test_a_model_without_multihead_attention_is_not_copied_or_split():
    from autocompress.transforms import mha

    model = Reversed().eval()
    assert mha.split_attention(model) is model
    x = torch.randn(3, 32)
    listed = factorizable_layers(model, x)
    assert [m for _, m in listed] == [model.dict["first"][0], model.lists[1], model.lists[0], model.last]


class TiedLM(nn.Module):
    """A small language model on nn.MultiheadAttention whose head is tied to its input embedding."""

    def __init__(self, vocab: int = 50, width: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.attn = nn.MultiheadAttention(width, 4, batch_first=True)
        self.fc = nn.Linear(width, 4 * width)
        self.proj = nn.Linear(4 * width, width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids):
        h = self.embed(ids)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        h = h + self.proj(torch.relu(self.fc(h)))
        return self.lm_head(h)


def test_a_head_tied_to_the_embedding_is_never_factorized_and_bind_says_why(tmp_path):
    from autocompress.space import SearchSpace
    from autocompress.transforms.lowrank import tied_layers

    torch.manual_seed(0)
    model = TiedLM().eval()
    ids = torch.randint(0, 50, (2, 8))
    names = [n for n, _ in factorizable_layers(model, ids)]
    assert names == ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj", "fc", "proj"]
    why = tied_layers(model, ids)
    assert list(why) == ["lm_head"] and "tied to embed.weight" in why["lm_head"]
    assert tied_layers(model, ids, exclude=("lm_head",)) == {}

    out = _lowrank(model, ids, rank_ratio=0.25)
    assert type(out.lm_head) is nn.Linear and out.lm_head.weight is out.embed.weight  # still tied, stored once
    assert all(isinstance(getattr(out.attn, p), nn.Sequential) for p in ("q_proj", "k_proj", "v_proj", "out_proj"))
    with torch.no_grad():
        assert out(ids).shape == (2, 8, 50)

    bound, notes = SearchSpace.from_dict({"lowrank": {"rank_ratio": [0.25, 0.5, 1.0]}}).bind(model, ids)
    assert bound.spec("lowrank").settings.exclude == ()
    assert "lowrank: lm_head is kept (its weight is tied to embed.weight: factorizing would untie it and store the weights " \
           "twice)" in notes


def test_a_hugging_face_masked_lm_keeps_its_tied_decoder():
    from transformers import BertConfig, BertForMaskedLM

    from autocompress.transforms.lowrank import low_rank, tied_layers

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=16)).eval()
    decoder, words = model.cls.predictions.decoder, model.bert.embeddings.word_embeddings
    assert decoder.weight is words.weight  # tie_word_embeddings defaults to true
    example = {"input_ids": torch.randint(1, 50, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.int64)}
    names = [n for n, _ in factorizable_layers(model, example)]
    assert "cls.predictions.decoder" not in names and "cls.predictions.transform.dense" in names
    assert list(tied_layers(model, example)) == ["cls.predictions.decoder"]
    before = sum(p.numel() for p in model.parameters())
    low_rank(model, LowRankConfig(0.25), TransformContext(example_input=example))
    assert model.cls.predictions.decoder is decoder and decoder.weight is words.weight
    assert sum(p.numel() for p in model.parameters()) < before
    with torch.no_grad():
        assert model(**example).logits.shape == (2, 16, 50)
