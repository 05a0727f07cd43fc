"""The replacement-block library: output shapes at stride 1 and 2 and across width changes,
BlockShapeError (and check_block's matching reason) for impossible choices, the mbconv
residual and its zero-init identity start, channel shuffle on a hand-made tensor, name
parsing errors, and real ONNX export + ONNX Runtime agreement for every buildable block."""

from __future__ import annotations

import math

import onnxruntime as ort
import pytest
import torch
from torch import nn

from autocompress.export import export_onnx
from autocompress.names import BLOCK_PATTERNS, parse_block
from autocompress.transforms.blocks import BlockShapeError, MBConv, ShuffleV2, channel_shuffle, check_block, make_block

NAMES = ["mbconv_e1_k3", "mbconv_e3_k5", "mbconv_e6_k3", "shuffle_v2", "dwsep_k3", "dwsep_k5", "skip"]
SHAPES = [(16, 16, 1), (16, 32, 2), (16, 32, 1), (32, 16, 1)]
# (name, cin, cout, stride) that must be refused, with a fragment of the reason.
IMPOSSIBLE = {
    ("skip", 16, 32, 2): "skip cannot map 16 -> 32 channels at stride 2",
    ("skip", 16, 32, 1): "skip cannot map 16 -> 32 channels at stride 1",
    ("skip", 32, 16, 1): "skip cannot map 32 -> 16 channels at stride 1",
    ("skip", 16, 16, 2): "skip cannot map 16 -> 16 channels at stride 2",
    ("shuffle_v2", 15, 15, 1): "shuffle_v2 cannot map 15 -> 15 channels at stride 1",
    ("shuffle_v2", 16, 15, 2): "shuffle_v2 cannot map 16 -> 15 channels at stride 2",
    ("shuffle_v2", 16, 15, 1): "shuffle_v2 cannot map 16 -> 15 channels at stride 1",
}
H, W = 9, 8  # odd and even sizes: the output must be ceil(size / stride) for both
CASES = [(n, *s) for n in NAMES for s in SHAPES] + [
    ("mbconv_e3_k3", 15, 7, 2),
    ("dwsep_k1", 5, 6, 1),
    ("shuffle_v2", 15, 16, 2),
    ("shuffle_v2", 16, 16, 2),
]
BUILDABLE = [c for c in CASES if c not in IMPOSSIBLE]


def _randomize_bn(block: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine params, so eval-mode comparisons test something."""
    g = torch.Generator().manual_seed(seed)
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize("name,cin,cout,stride", CASES)
def test_shapes_or_shape_error(name, cin, cout, stride):
    key = (name, cin, cout, stride)
    if key in IMPOSSIBLE:
        with pytest.raises(BlockShapeError) as err:
            make_block(name, cin, cout, stride)
        msg = str(err.value)
        assert IMPOSSIBLE[key] in msg and "\n" not in msg
        assert check_block(name, cin, cout, stride) == msg
        return
    assert check_block(name, cin, cout, stride) is None
    block = make_block(name, cin, cout, stride)
    y = block(torch.randn(2, cin, H, W))
    assert y.shape == (2, cout, math.ceil(H / stride), math.ceil(W / stride))
    assert block.block_name == name


@pytest.mark.parametrize("name", list(IMPOSSIBLE))
def test_impossible_cases_all_raise(name):
    """Every IMPOSSIBLE entry (not only those in CASES) is refused with its reason."""
    n, cin, cout, stride = name
    with pytest.raises(BlockShapeError, match=IMPOSSIBLE[name]):
        make_block(n, cin, cout, stride)
    assert IMPOSSIBLE[name] in check_block(n, cin, cout, stride)


@pytest.mark.parametrize("cin,cout,stride", SHAPES)
@pytest.mark.parametrize("expand", [1, 6])
def test_mbconv_residual_and_zero_init(cin, cout, stride, expand):
    block = make_block(f"mbconv_e{expand}_k3", cin, cout, stride)
    assert isinstance(block, MBConv)
    residual = stride == 1 and cin == cout
    assert block.has_residual is residual
    bns = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == (3 if expand > 1 else 2)
    assert all(torch.all(bn.bias == 0) for bn in bns)
    assert all(torch.all(bn.weight == 1) for bn in bns[:-1])
    assert torch.all(bns[-1].weight == (0 if residual else 1))
    block.eval()
    x = torch.randn(2, cin, 7, 7)
    with torch.no_grad():
        y = block(x)
    if residual:
        assert torch.equal(y, x)  # zero-init last BN: the new block starts as the identity
    else:
        assert not torch.allclose(y, torch.zeros_like(y))


def test_channel_shuffle_by_hand():
    x = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1, 1).expand(2, 6, 2, 3)
    y = channel_shuffle(x, 2)
    assert y[:, :, 0, 0].tolist() == [[0, 3, 1, 4, 2, 5]] * 2
    assert torch.equal(channel_shuffle(torch.arange(6.0).reshape(1, 6, 1, 1), 3).flatten(), torch.tensor([0.0, 2, 4, 1, 3, 5]))


def test_shuffle_v2_split_form_passes_first_half_through():
    block = make_block("shuffle_v2", 8, 8, 1).eval()
    assert isinstance(block, ShuffleV2) and block.split and block.branch1 is None
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        y = block(x)
    # concat [x1, branch(x2)] then 2-group shuffle puts x1's channels at the even positions
    assert torch.equal(y[:, 0::2], x[:, :4])
    assert torch.all(y[:, 1::2] >= 0)  # the branch ends in a ReLU
    assert not make_block("shuffle_v2", 8, 16, 1).split


def test_init_kaiming_fan_out():
    torch.manual_seed(0)
    block = make_block("dwsep_k3", 64, 128, 1)
    pw = block.body[3]
    assert isinstance(pw, nn.Conv2d) and pw.kernel_size == (1, 1)
    assert abs(pw.weight.std().item() - math.sqrt(2 / 128)) < 0.02


@pytest.mark.parametrize("name,cin,cout,stride", BUILDABLE)
def test_onnx_export_matches_torch(name, cin, cout, stride, tmp_path):
    torch.manual_seed(0)
    block = make_block(name, cin, cout, stride)
    _randomize_bn(block)
    model = nn.Sequential(block).eval()
    x = torch.randn(3, cin, H, W)
    with torch.no_grad():
        expected = model(x).numpy()
    path = export_onnx(model, (cin, H, W), tmp_path / "block.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    assert out.shape == expected.shape
    assert abs(out - expected).max() < 1e-4


def test_parse_block():
    assert parse_block("mbconv_e6_k5") == ("mbconv", {"expand": 6, "kernel": 5})
    assert parse_block("mbconv_e2_k7") == ("mbconv", {"expand": 2, "kernel": 7})
    assert parse_block("dwsep_k3") == ("dwsep", {"kernel": 3})
    assert parse_block("shuffle_v2") == ("shuffle_v2", {})
    assert parse_block("skip") == ("skip", {})
    assert parse_block("keep") == ("keep", {})
    assert set(BLOCK_PATTERNS) == {"mbconv", "shuffle_v2", "dwsep", "skip", "keep"}


@pytest.mark.parametrize("bad", ["conv3x3", "mbconv_e6", "mbconv_e6_k3_x", "dwsep", "Skip", ""])
def test_unknown_name_lists_valid_forms(bad):
    for fn in (make_block, check_block):
        with pytest.raises(ValueError, match="unknown block") as err:
            fn(bad, 16, 16, 1)
        assert not isinstance(err.value, BlockShapeError)
        for form in ("mbconv_e{E}_k{K}", "shuffle_v2", "dwsep_k{K}", "skip", "keep"):
            assert form in str(err.value)


@pytest.mark.parametrize("bad", ["mbconv_e0_k3", "mbconv_e6_k4", "dwsep_k0", "dwsep_k2", "mbconv_e06_k3"])
def test_bad_parameters(bad):
    with pytest.raises(ValueError) as err:
        make_block(bad, 16, 16, 1)
    assert not isinstance(err.value, BlockShapeError)


def test_keep_is_the_callers():
    with pytest.raises(ValueError, match="handled by the caller"):
        make_block("keep", 16, 16, 1)
    assert check_block("keep", 16, 32, 2) is None


@pytest.mark.parametrize("args", [(0, 16, 1), (16, 16, 0), (16, -1, 1)])
def test_bad_sizes(args):
    with pytest.raises(ValueError, match="positive int"):
        make_block("dwsep_k3", *args)
