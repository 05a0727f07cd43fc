"""A small library of replacement blocks for block-substitution search, named like timm's
block strings and written after timm's MobileNet/ShuffleNet blocks:

  * ``mbconv_e{E}_k{K}``: MobileNetV2 inverted residual. 1x1 expand to cin*E (skipped when
    E == 1) + BN + ReLU6, KxK depthwise (stride, padding K//2) + BN + ReLU6, 1x1 project to
    cout + BN (linear bottleneck: no activation), plus the input when stride == 1 and
    cin == cout. Any E >= 1 and odd K >= 1.
  * ``shuffle_v2``: ShuffleNet v2 unit. At stride 1 with cin == cout (even) it is the basic
    unit: split the channels in half, run one half through 1x1-BN-ReLU, 3x3 dw-BN,
    1x1-BN-ReLU, concat with the untouched half, shuffle the channels (2 groups). Otherwise
    (stride 2, or stride 1 with cin != cout) it is the two-branch downsampling unit on the
    full input: (3x3 dw-BN, 1x1 to cout/2-BN-ReLU) and (1x1 to cout/2-BN-ReLU, 3x3 dw-BN,
    1x1-BN-ReLU), concat, shuffle. Using the two-branch form at stride 1 is our extension
    (the paper only uses it to downsample): it is the only ShuffleNet-style unit that can
    change the width. Both forms need an even output width.
  * ``dwsep_k{K}``: depthwise-separable conv (MobileNetV1): KxK depthwise (stride) + BN +
    ReLU, 1x1 pointwise to cout + BN + ReLU. Any odd K >= 1.
  * ``skip``: identity; only at stride 1 with cin == cout.
  * ``keep`` means "the original block" and is handled by the caller, never built here.

Every block takes and returns NCHW tensors; every strided op pads by K//2 with an odd K, so
the output's spatial size is ceil(in / stride), as for a padded conv, on odd sizes too.

Two kinds of errors, deliberately apart: a malformed or unknown name is a config error
(ValueError), while a well-formed block that cannot produce the needed shape raises
BlockShapeError (a ValueError too). `check_block` returns the latter's message instead of
raising, so the search space can exclude a choice per target and say why.

Initialisation: Kaiming normal (fan_out, ReLU gain) for every conv, BN weight 1 and bias 0,
except the last BN of a residual mbconv, whose weight starts at 0 ("zero-init residual",
Goyal et al. 2017): the residual branch then outputs exactly 0, so a freshly inserted block
is the identity map (in eval mode) and fine-tuning starts from the original network's
function on that path instead of from noise."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from autocompress.names import parse_block


class BlockShapeError(ValueError):
    """A valid block name whose block cannot map the requested shapes."""


def _check_args(name: str, cin: int, cout: int, stride: int) -> None:
    for label, v in (("cin", cin), ("cout", cout), ("stride", stride)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"block {name!r}: {label} must be a positive int, got {v!r}")


def _shape_reason(kind: str, name: str, cin: int, cout: int, stride: int) -> Optional[str]:
    """Why the well-formed block `name` can't map cin -> cout at `stride`, or None."""
    where = f"{cin} -> {cout} channels at stride {stride}"
    if kind == "skip" and (stride != 1 or cin != cout):
        return f"{name} cannot map {where}: the identity needs stride 1 and cin == cout"
    if kind == "shuffle_v2" and cout % 2:
        return f"{name} cannot map {where}: ShuffleNet v2 units need an even output width"
    return None


def check_block(name: str, cin: int, cout: int, stride: int) -> Optional[str]:
    """None if `make_block(name, cin, cout, stride)` would build (and, for "keep", always:
    the original block fits its own shapes by definition), else the one-line reason.
    A malformed name still raises ValueError: that is a config error, not a per-target
    exclusion."""
    kind, _ = parse_block(name)
    _check_args(name, cin, cout, stride)
    if kind == "keep":
        return None
    return _shape_reason(kind, name, cin, cout, stride)


def make_block(name: str, cin: int, cout: int, stride: int) -> nn.Module:
    """Build block `name` mapping (N, cin, H, W) -> (N, cout, ceil(H/stride), ceil(W/stride)),
    freshly initialised (see the module docstring). Raises BlockShapeError when the block
    can't produce those shapes and ValueError for a bad name, or for "keep"."""
    kind, params = parse_block(name)
    _check_args(name, cin, cout, stride)
    if kind == "keep":
        raise ValueError("'keep' means the original block and is handled by the caller; make_block builds only replacements")
    reason = _shape_reason(kind, name, cin, cout, stride)
    if reason is not None:
        raise BlockShapeError(reason)
    if kind == "mbconv":
        block: nn.Module = MBConv(cin, cout, stride, params["expand"], params["kernel"])
    elif kind == "shuffle_v2":
        block = ShuffleV2(cin, cout, stride)
    elif kind == "dwsep":
        block = DWSep(cin, cout, stride, params["kernel"])
    else:  # skip
        block = nn.Identity()
    block.block_name = name  # type: ignore[assignment]  (for reports; a plain attribute)
    return block


# ---------------------------------------------------------------------------- building blocks


def _conv_bn(
    cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: Optional[type[nn.Module]] = None
) -> list[nn.Module]:
    """KxK conv (padding K//2, no bias: BN follows) + BN [+ act]."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return layers


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of `groups` equal groups: with 2 groups, [a0 a1 a2 b0 b1 b2]
    -> [a0 b0 a1 b1 a2 b2]. Plain reshape/transpose/reshape, so it exports to ONNX (with a
    dynamic batch axis: the batch is -1, never a traced constant)."""
    _, c, h, w = x.shape
    x = x.reshape(-1, groups, c // groups, h, w).transpose(1, 2)
    return x.reshape(-1, c, h, w)


class MBConv(nn.Module):
    """MobileNetV2 inverted residual (see the module docstring). `has_residual` says whether
    the input is added back (stride 1 and cin == cout); then the last BN starts at weight 0."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, kernel: int):
        super().__init__()
        mid = cin * expand
        self.has_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += _conv_bn(cin, mid, 1, act=nn.ReLU6)
        layers += _conv_bn(mid, mid, kernel, stride, groups=mid, act=nn.ReLU6)
        layers += _conv_bn(mid, cout, 1)
        self.body = nn.Sequential(*layers)
        _init(self)
        if self.has_residual:
            nn.init.zeros_(self.body[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.has_residual else out


class ShuffleV2(nn.Module):
    """ShuffleNet v2 unit (see the module docstring). `split` is True for the basic unit
    (stride 1, cin == cout): `branch1` is then None and the first half passes through."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        half = cout // 2
        self.split = stride == 1 and cin == cout
        if self.split:
            self.branch1: Optional[nn.Sequential] = None
            bin_ = half
        else:
            self.branch1 = nn.Sequential(
                *_conv_bn(cin, cin, 3, stride, groups=cin),
                *_conv_bn(cin, half, 1, act=nn.ReLU),
            )
            bin_ = cin
        self.branch2 = nn.Sequential(
            *_conv_bn(bin_, half, 1, act=nn.ReLU),
            *_conv_bn(half, half, 3, stride, groups=half),
            *_conv_bn(half, half, 1, act=nn.ReLU),
        )
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is None:
            x1, x2 = torch.chunk(x, 2, dim=1)
            out = torch.cat([x1, self.branch2(x2)], dim=1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
        return channel_shuffle(out, 2)


class DWSep(nn.Module):
    """Depthwise-separable conv: KxK depthwise + BN + ReLU, 1x1 pointwise + BN + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(cin, cin, kernel, stride, groups=cin, act=nn.ReLU),
            *_conv_bn(cin, cout, 1, act=nn.ReLU),
        )
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


__all__ = [
    "BlockShapeError",
    "DWSep",
    "MBConv",
    "ShuffleV2",
    "channel_shuffle",
    "check_block",
    "make_block",
]
