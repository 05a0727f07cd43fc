"""Block substitution: target discovery ('auto' rule), replacement at the right shapes,
the teacher untouched, and the joint pipeline with pruning after substitution."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from autocompress.config import BlockConfig, PruneConfig
from autocompress.export import export_onnx
from autocompress.tasks.demo import BasicBlock, DigitsResNet
from autocompress.techniques import apply
from autocompress.transforms import TransformContext
from autocompress.transforms.substitute import describe_targets, find_targets
from tests.helpers import assert_state_equal, state_snapshot


class TorchvisionStyleResNet(nn.Module):
    """Stages as Sequentials of residual blocks, as torchvision's ResNet lays them out."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2), BasicBlock(16, 16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


X = torch.randn(2, 1, 16, 16)


def test_auto_targets_are_the_residual_blocks():
    assert [t.name for t in find_targets(TorchvisionStyleResNet(), X)] == ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    targets = find_targets(DigitsResNet(widths=(8, 16, 32)), X)
    assert [(t.name, t.cin, t.cout, t.stride) for t in targets] == [("layer1", 8, 8, 1), ("layer2", 8, 16, 2), ("layer3", 16, 32, 2)]


def test_named_targets_are_checked():
    model = TorchvisionStyleResNet()
    assert [t.stride for t in describe_targets(model, X, ["layer2.0", "layer1"])] == [2, 1]
    with pytest.raises(ValueError, match="'layer9', which is not a module"):
        describe_targets(model, X, ["layer9"])
    with pytest.raises(ValueError, match="'fc' must take and return one 4-D tensor"):
        describe_targets(model, X, ["fc"])


@pytest.mark.parametrize("block", ["mbconv_e6_k3", "mbconv_e1_k5", "shuffle_v2", "dwsep_k3"])
def test_substitution_keeps_shapes_and_the_teacher(block, tmp_path):
    torch.manual_seed(0)
    model = TorchvisionStyleResNet().eval()
    before = state_snapshot(model)
    cfg = BlockConfig((("layer1.1", block), ("layer2.0", block)))
    out = apply(model, cfg, TransformContext(example_input=X))
    assert_state_equal(model, before)
    assert isinstance(model.layer1[1], BasicBlock) and not isinstance(out.layer1[1], BasicBlock)
    assert getattr(out.layer2[0], "block_name", None) == block
    y = out.eval()(X)
    assert y.shape == (2, 10)
    path = export_onnx(out, (1, 16, 16), tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": X.numpy()})[0], y.detach().numpy(), rtol=1e-3, atol=1e-4)


def test_skip_replaces_a_shape_preserving_block():
    out = apply(TorchvisionStyleResNet(), BlockConfig((("layer1.0", "skip"),)), TransformContext(example_input=X))
    assert isinstance(out.layer1[0], nn.Identity) and out(X).shape == (2, 10)


@pytest.mark.parametrize("block", ["shuffle_v2", "mbconv_e3_k3"])
def test_pruning_after_substitution(block):
    """Torch-Pruning 1.6 cannot trace chunk -> cat -> shuffle: the pipeline excludes
    substituted ShuffleNet units from pruning; everything else is pruned."""
    from autocompress.config import CandidateConfig

    model = TorchvisionStyleResNet().eval()
    blocks = BlockConfig((("layer1.1", block),))
    cfg = CandidateConfig(prune=PruneConfig(0.5), blocks=blocks)
    ctx = TransformContext(example_input=X, candidate=cfg)  # the prune technique reads the candidate's blocks
    substituted = apply(model, blocks, ctx)
    pruned = apply(substituted, cfg.prune, ctx)
    assert pruned.layer2[0].conv1.out_channels == 8  # 16 -> 8
    assert pruned(X).shape == (2, 10)
    if block == "shuffle_v2":
        assert [p.shape for p in pruned.layer1[1].parameters()] == [p.shape for p in substituted.layer1[1].parameters()]
    else:  # pruned like the rest
        assert [p.shape for p in pruned.layer1[1].parameters()] != [p.shape for p in substituted.layer1[1].parameters()]


# --------------------------------------------------------------------------- models of a library we did not write


def _mobilenet_v2():
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    torch.manual_seed(0)
    return MobileNetV2ForImageClassification(MobileNetV2Config(image_size=32, depth_multiplier=0.35, num_labels=4)).eval()


PIXELS = {"pixel_values": torch.randn(2, 3, 32, 32)}


def test_auto_targets_in_hugging_face_models_are_their_repeated_units_never_stems_or_stages():
    from transformers import ConvNextConfig, ConvNextForImageClassification

    names = [t.name for t in find_targets(_mobilenet_v2(), PIXELS)]
    assert names == [f"mobilenet_v2.layer.{i}" for i in range(16)]  # not conv_stem (nor the convs inside it), not conv_1x1
    torch.manual_seed(0)
    convnext = ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[2, 2, 3, 2], num_labels=3)).eval()
    names = [t.name for t in find_targets(convnext, PIXELS)]
    assert names == [f"convnext.encoder.stages.{s}.layers.{i}" for s, n in enumerate([2, 2, 3, 2]) for i in range(n)]


class ReadsItsBlock(nn.Module):
    """A parent whose forward reads an attribute of its block (as library code does)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.body = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.body(self.stem(x))
        scale = self.body[1].conv1.out_channels  # only the original block has conv1
        return self.fc(x.mean((2, 3))) / scale


def test_a_replacement_that_breaks_the_parents_forward_is_excluded_before_the_search_with_its_reason():
    from autocompress.space import load_space
    from autocompress.transforms.substitute import breaking_choices

    model = ReadsItsBlock().eval()
    targets = find_targets(model, X)
    assert [t.name for t in targets] == ["body.0", "body.1"]
    broken = breaking_choices(model, X, targets, ["keep", "skip", "dwsep_k3"])
    assert set(broken) == {("body.1", "skip"), ("body.1", "dwsep_k3")}
    assert "has no attribute 'conv1'" in broken[("body.1", "skip")]
    before = state_snapshot(model)
    space, notes = load_space("default").bind(model, X)
    assert_state_equal(model, before)  # the checks ran on a copy
    bound = dict(space.spec("blocks").extra.bound)
    assert bound["body.1"] == ("keep",) or "body.1" not in bound
    assert "skip" in bound["body.0"]
    assert any(n.startswith("blocks: skip excluded for body.1 (the model's forward fails with it: AttributeError") for n in notes)
