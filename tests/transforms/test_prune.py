"""Structured pruning through techniques.apply: physically smaller, same interface, and the
input model is never touched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autocompress.config import PruneConfig
from autocompress.tasks.demo import DigitsResNet
from autocompress.techniques import apply
from autocompress.transforms import TransformContext
from autocompress.transforms.prune import output_layers
from tests.helpers import assert_state_equal, state_snapshot


def _convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(params=["tiny_resnet", "digits_resnet"])
def model_and_input(request, tiny_module):
    torch.manual_seed(0)
    if request.param == "tiny_resnet":
        return tiny_module.TinyResNet().eval(), torch.randn(2, 3, 8, 8)
    return DigitsResNet(widths=(8, 16, 32)).eval(), torch.randn(2, 1, 16, 16)


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_pruning_shrinks_convs_and_keeps_the_interface(model_and_input, ratio):
    model, x = model_and_input
    pruned = apply(model, PruneConfig(ratio), TransformContext(example_input=x))
    assert pruned is not model

    before, after = _convs(model), _convs(pruned)
    assert before.keys() == after.keys()
    for name, conv in before.items():
        # every conv group is prunable in these nets (residual adds are coupled, not skipped)
        assert after[name].weight.shape[0] < conv.weight.shape[0], name
        assert after[name].out_channels == after[name].weight.shape[0]
        assert after[name].weight.shape[0] >= round(conv.weight.shape[0] * (1 - ratio)) - 1, name
    for m in pruned.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean.shape[0] == m.num_features == m.weight.shape[0]

    fc_before = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    fc_after = [m for m in pruned.modules() if isinstance(m, nn.Linear)][-1]
    assert fc_after.out_features == fc_before.out_features  # classes unchanged
    assert fc_after.weight.shape[0] == fc_before.weight.shape[0]
    assert fc_after.in_features < fc_before.in_features

    assert _n_params(pruned) < _n_params(model)
    with torch.no_grad():
        batch = torch.randn(5, *x.shape[1:])
        assert pruned(batch).shape == model(batch).shape == (5, fc_before.out_features)


def test_higher_ratio_removes_more(model_and_input):
    model, x = model_and_input
    ctx = TransformContext(example_input=x)
    sizes = [_n_params(apply(model, PruneConfig(r), ctx)) for r in (0.0, 0.25, 0.5, 0.75)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4


def test_ratio_zero_returns_an_equal_independent_copy(model_and_input):
    model, x = model_and_input
    copy = apply(model, PruneConfig(0.0), TransformContext(example_input=x))
    assert copy is not model
    assert_state_equal(copy, state_snapshot(model))
    with torch.no_grad():
        assert torch.equal(copy(x), model(x))
    ids = {id(p) for p in model.parameters()}
    assert not any(id(p) in ids for p in copy.parameters())
    with torch.no_grad():
        next(copy.parameters()).add_(1.0)  # editing the copy ...
    assert not torch.equal(next(copy.parameters()), next(model.parameters()))  # ... leaves the original


def test_the_input_model_is_untouched(model_and_input):
    model, x = model_and_input
    model.train()  # pruning puts its copy in eval mode; not the original
    snapshot = state_snapshot(model)
    modules = {name: id(m) for name, m in model.named_modules()}
    params = {name: (id(p), p.data_ptr(), tuple(p.shape)) for name, p in model.named_parameters()}

    apply(model, PruneConfig(0.5), TransformContext(example_input=x))

    assert_state_equal(model, snapshot)
    assert {name: id(m) for name, m in model.named_modules()} == modules
    assert {name: (id(p), p.data_ptr(), tuple(p.shape)) for name, p in model.named_parameters()} == params
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())


def test_output_layers_finds_the_classifier(tiny_module):
    model = tiny_module.TinyResNet()
    assert output_layers(model, torch.randn(1, 3, 8, 8)) == [model.fc]
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed again


def test_pruned_model_still_learns_the_same_task(tiny_task):
    """A pruned trained teacher still computes something close to it (L1 keeps the big
    channels): its predictions agree with the teacher's far above chance (25%)."""
    pruned = apply(tiny_task.teacher, PruneConfig(0.25), TransformContext(example_input=tiny_task.train.x[:2]))
    with torch.no_grad():
        agree = (pruned(tiny_task.val.x).argmax(1) == tiny_task.teacher(tiny_task.val.x).argmax(1)).float().mean()
    assert agree > 0.4


def test_apply_copies_and_refuses_what_is_not_a_model_technique_config():
    class NotAConfig:
        pass

    with pytest.raises(ValueError, match="no registered technique has config type NotAConfig"):
        apply(nn.Linear(2, 2), NotAConfig(), TransformContext(example_input=torch.zeros(1, 2)))
    from autocompress.config import QuantizeConfig

    with pytest.raises(ValueError, match="stage 'graph', not on a model"):
        apply(nn.Linear(2, 2), QuantizeConfig("int8"), TransformContext(example_input=torch.zeros(1, 2)))
    m = nn.Linear(2, 2)
    out = apply(m, PruneConfig(0.0), TransformContext(example_input=torch.zeros(1, 2)))
    assert out is not m and torch.equal(out.weight, m.weight)  # a copy, even when nothing is pruned


# --------------------------------------------------------------------------- criteria, segments, options


class _TwoConv(nn.Module):
    """conv1 -> BN -> ReLU -> conv2 -> pool -> fc, with conv1 channel 0 made dead: the
    largest weights of all, but BN maps it to a constant negative value, so after the
    ReLU it is always zero."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.conv1.weight[0].fill_(10.0)
            self.bn.weight[0] = 0.0
            self.bn.bias[0] = -1.0

    def forward(self, x):
        x = self.conv2(torch.relu(self.bn(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def _kept_conv1_channels(pruned: _TwoConv, original: _TwoConv) -> list[int]:
    """Which of the original conv1 output channels survived (matched by weights)."""
    return [i for i in range(4) if any(torch.equal(original.conv1.weight[i], w) for w in pruned.conv1.weight)]


@pytest.mark.parametrize("criterion", ["act_mean", "act_zero"])
def test_activation_importance_ranks_a_dead_channel_last(criterion):
    torch.manual_seed(0)
    model = _TwoConv().eval()
    x = torch.randn(64, 1, 6, 6)
    ctx = TransformContext(example_input=x[:2], calibration=x, batch_size=16)
    by_activation = apply(model, PruneConfig(0.25, criterion=criterion), ctx)
    assert by_activation.conv1.out_channels == 3
    assert 0 not in _kept_conv1_channels(by_activation, model)
    by_weight = apply(model, PruneConfig(0.25, criterion="l1"), ctx)  # the same channel is the heaviest
    assert 0 in _kept_conv1_channels(by_weight, model)


def test_activation_statistics_accumulate_over_every_batch():
    from autocompress.transforms.prune import ActivationImportance

    torch.manual_seed(0)
    model = _TwoConv().eval()
    batches = [torch.randn(8, 1, 6, 6) for _ in range(3)]
    imp = ActivationImportance(model, batches, mode="act_mean")
    with torch.no_grad():
        feeds = torch.cat([torch.relu(model.bn(model.conv1(b))) for b in batches])  # conv2's input
    expected = feeds.abs().mean(dim=(0, 2, 3))
    torch.testing.assert_close(imp.stats[model.conv2], expected)
    zero = ActivationImportance(model, batches, mode="act_zero")
    torch.testing.assert_close(zero.stats[model.conv2], (feeds != 0).float().mean(dim=(0, 2, 3)))
    assert zero.stats[model.conv2][0] == 0.0


def test_segment_ratios_prune_only_their_segment():
    model = DigitsResNet(widths=(8, 16, 32)).eval()
    x = torch.randn(2, 1, 16, 16)
    pruned = apply(model, PruneConfig(segment_ratios=(0.0, 0.5)), TransformContext(example_input=x))
    # groups in model order: [stem+layer1.conv2], [layer1.conv1], [layer2.conv1], | [layer2.conv2+shortcut], [layer3.conv1], [layer3.conv2+shortcut]
    assert pruned.stem[0].out_channels == 8 and pruned.layer1.conv1.out_channels == 8 and pruned.layer2.conv1.out_channels == 16
    assert pruned.layer2.conv2.out_channels == 8 and pruned.layer3.conv1.out_channels == 16 and pruned.layer3.conv2.out_channels == 16
    assert pruned(x).shape == (2, 10)


def test_round_to_keeps_channel_counts_aligned():
    model = DigitsResNet().eval()  # widths 48, 96, 192
    pruned = apply(model, PruneConfig(0.3, round_to=8), TransformContext(example_input=torch.randn(2, 1, 16, 16)))
    counts = [m.out_channels for m in _convs(pruned).values()]
    assert all(c % 8 == 0 for c in counts) and counts != [m.out_channels for m in _convs(model).values()]


def test_exclude_keeps_named_modules_and_unknown_names_fail():
    model = DigitsResNet(widths=(8, 16, 32)).eval()
    ctx = TransformContext(example_input=torch.randn(2, 1, 16, 16))
    pruned = apply(model, PruneConfig(0.5, exclude=("layer3",)), ctx)
    assert pruned.layer3.conv1.out_channels == 32 and pruned.layer2.conv1.out_channels == 8
    with pytest.raises(ValueError, match="prune.exclude names 'layer9'"):
        apply(model, PruneConfig(0.5, exclude=("layer9",)), ctx)


@pytest.mark.parametrize("cfg", [PruneConfig(0.65), PruneConfig(segment_ratios=(0.8, 0.3))])
def test_a_library_attention_model_keeps_its_head_layout_under_channel_pruning(cfg):
    """A Hugging Face BERT (built from a config, random weights): channel pruning leaves the
    query/key/value projections' outputs alone (the model's own reshape into heads needs
    them) and the feed-forward blocks' inner width (the mlp technique's), narrows the
    residual width, and the pruned model still runs."""
    from transformers import BertConfig, BertForSequenceClassification

    from autocompress.transforms.prune import attention_projections, prune_channels

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)).eval()
    example = {"input_ids": torch.randint(1, 50, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.int64)}
    qkv = attention_projections(model)
    assert len(qkv) == 6 and {m.out_features for m in qkv} == {32}
    before = sum(p.numel() for p in model.parameters())
    prune_channels(model, cfg, TransformContext(example_input=example))
    assert {m.out_features for m in attention_projections(model)} == {32}
    assert sum(p.numel() for p in model.parameters()) < before
    inner = model.bert.encoder.layer[0].intermediate.dense  # the residual width narrows; the inner width is the mlp technique's
    assert inner.in_features < 32 and inner.out_features == 64
    with torch.no_grad():
        assert model(**example).logits.shape == (2, 2)


def test_on_a_transformer_channel_pruning_is_residual_width_pruning():
    """Heads are the heads technique's and the MLP inner width the mlp technique's: channel
    pruning of TinyEncoder at 0.5 halves the residual width (32 -> 16) and leaves q/k/v's
    outputs and the feed-forward blocks' inner width as they were."""
    import copy

    from autocompress.config import PruneConfig
    from autocompress.testing import conformance_model
    from autocompress.transforms import TransformContext
    from autocompress.transforms.prune import prune_channels

    model, x = conformance_model("transformer")
    pruned = prune_channels(copy.deepcopy(model), PruneConfig(0.5), TransformContext(example_input=x[:2]))
    for layer in pruned.layers:
        assert (layer.attention.q_proj.in_features, layer.attention.q_proj.out_features) == (16, 32)
        assert (layer.fc1.in_features, layer.fc1.out_features, layer.fc2.out_features) == (16, 64, 16)
    assert pruned(x[:2]).shape == (2, 10)
