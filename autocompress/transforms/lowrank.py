"""SVD low-rank factorization of Linear and Conv2d layers.

A Linear(m -> n) with weight W (n, m) becomes Linear(m -> r, no bias) followed by
Linear(r -> n, original bias), initialised from the truncated SVD W ~ U_r S_r V_r^T:
first factor sqrt(S_r) V_r^T, second U_r sqrt(S_r) (the balanced split: both factors have
the same singular values, which keeps their scales alike for fine-tuning). By
Eckart-Young this is the best rank-r approximation of W in Frobenius norm, and at full
rank it reproduces the layer exactly (the SVD runs in float64, then the factors are cast
back to the layer's dtype).

A Conv2d(cin -> cout, kh x kw, groups=1) is factorized through its weight reshaped to
(cout, cin*kh*kw): a kh x kw conv cin -> r (same stride, padding, dilation and padding
mode, no bias) followed by a 1x1 conv r -> cout (original bias). We use this
"k x k then 1 x 1" form, not the spatial "k x 1 then 1 x k" one, because
  * it keeps the original receptive field and stride in one conv, so the output shape and
    every padding mode come out right with no bookkeeping;
  * it exports as two plain Conv nodes that every runtime (and every quantizer) runs;
  * the 1x1 conv is a plain GEMM, which is what the runtimes are fastest at;
  * a plain SVD of the reshaped weight gives its optimal initialisation, while the spatial
    form needs a different decomposition (a rank split over (cin*kh, kw*cout)).
Depthwise and grouped convs (groups > 1) are skipped: they are already cheap and their
per-group weights are tiny.

Layers are taken in model order (the order they first execute in a forward pass on the
example input), so one ratio per segment means the same on any model. A layer is left
as is where its ratio is >= 1 or where the factorized form would not have fewer weights
than the original (biases ignored).

torch's nn.MultiheadAttention never calls its projections as modules (it reads its packed
`in_proj_weight` and `out_proj.weight` directly): the layers are listed, and factorized,
on the model with every nn.MultiheadAttention split (transforms.mha: q_proj, k_proj,
v_proj and out_proj as Linear children, named so under the attention's path). The listing
of an unsplit model runs on a split copy, `low_rank` splits its own copy first, so both
see the same layers in the same order; a model without nn.MultiheadAttention is not
touched or copied.

A layer whose weight or bias Parameter is shared with another module (tied weights: a
language-model head tied to the input embedding) is never factorized: its factors would
untie it and hold the weights twice (`tied_layers` says which, and why)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
from torch import nn

from autocompress.transforms import TransformContext
from autocompress.transforms.mha import split_attention, split_attention_
from autocompress.transforms.order import execution_order, forward_error, set_submodule, swapped
from autocompress.segments import per_item

if TYPE_CHECKING:
    from autocompress.techniques.lowrank import LowRankConfig


def _is_factorizable(m: nn.Module) -> bool:
    if isinstance(m, nn.Conv2d):
        return m.groups == 1
    return isinstance(m, nn.Linear)


def _excluded(name: str, exclude: Sequence[str]) -> bool:
    return any(name == e or name.startswith(e + ".") for e in exclude)


def _aliases(model: nn.Module) -> dict[int, list[str]]:
    """id(module) -> every qualified name it is registered under (a shared module has
    several), first name first."""
    names: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        names.setdefault(id(m), []).append(name)
    return names


def _shared_parameters(model: nn.Module) -> dict[int, list[str]]:
    """id(parameter) -> its qualified names, for the parameters held by more than one
    module (tied weights; a module registered under several names is one module)."""
    owners: dict[int, set[int]] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            owners.setdefault(id(p), set()).add(id(m))
    shared = {pid for pid, mods in owners.items() if len(mods) > 1}
    names: dict[int, list[str]] = {}
    if shared:
        for name, p in model.named_parameters(remove_duplicate=False):
            if id(p) in shared:
                names.setdefault(id(p), []).append(name)
    return names


def _tied_to(layer: nn.Module, names: Sequence[str], shared: dict[int, list[str]]) -> Optional[str]:
    """Why `layer` (registered under `names`) must not be factorized because it shares a
    Parameter with another module, or None."""
    for key, p in layer.named_parameters(recurse=False):
        if id(p) in shared:
            own = {f"{n}.{key}" if n else key for n in names}
            others = [n for n in shared[id(p)] if n not in own]
            return (f"its {key} is tied to {others[0] if others else 'another module'}: factorizing would untie it and "
                    f"store the weights twice")
    return None


def _listing(model: nn.Module, example_input: Any, exclude: Sequence[str]) -> tuple[list[tuple[str, nn.Module]], dict[str, str]]:
    """(factorizable layers, {name: why} of the tied ones left out) of `model` as it is
    (no split)."""
    order = execution_order(model, example_input, accept=_is_factorizable)
    aliases = _aliases(model)
    shared = _shared_parameters(model)
    out, tied = [], {}
    for m in order:
        names = aliases[id(m)]
        if any(_excluded(n, exclude) for n in names):
            continue
        why = _tied_to(m, names, shared) if shared else None
        if why is not None:
            tied[names[0]] = why
        else:
            out.append((names[0], m))
    return out, tied


def factorizable_layers(
    model: nn.Module, example_input: Any, exclude: Sequence[str] = ()
) -> list[tuple[str, nn.Module]]:
    """The Linear and Conv2d (groups == 1) layers of `model` in the order they first run
    on `example_input` (each module once), minus those named in `exclude` or inside an
    excluded module, and minus those whose weights are tied to another module's
    (`tied_layers`). Layers never called as modules (e.g. ones whose weight a parent
    reads directly) are not listed, so replacing them can't break their parent.

    A model holding nn.MultiheadAttention is listed as split (transforms.mha), on a split
    copy: its attention projections are listed under their split names
    (`<attention>.q_proj`, ... `<attention>.out_proj`), and the modules returned are the
    copy's. `low_rank` splits the model before it lists it, so both agree."""
    return _listing(split_attention(model), example_input, exclude)[0]


def tied_layers(model: nn.Module, example_input: Any, exclude: Sequence[str] = ()) -> dict[str, str]:
    """{name: why} for the layers that would be factorizable but share a Parameter with
    another module (tied weights), in model order: they are never factorized."""
    return _listing(split_attention(model), example_input, exclude)[1]


def full_rank(layer: nn.Module) -> int:
    """min of the weight matrix's dimensions: (out, in) or (cout, cin*kh*kw)."""
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return min(layer.out_channels, layer.in_channels * kh * kw)
    return min(layer.out_features, layer.in_features)


def _matrix_shape(layer: nn.Module) -> tuple[int, int]:
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return layer.out_channels, layer.in_channels * kh * kw
    return layer.out_features, layer.in_features


def choose_rank(layer: nn.Module, ratio: float) -> Optional[int]:
    """The kept rank for `layer` at `ratio`, or None where the layer stays as is (ratio >= 1,
    or r * (rows + cols) >= rows * cols: the factors would not be smaller)."""
    if ratio >= 1:
        return None
    rows, cols = _matrix_shape(layer)
    r = max(1, round(ratio * full_rank(layer)))
    if r * (rows + cols) >= rows * cols:
        return None
    return r


_SHAPE_ATTRS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode",
                "in_features", "out_features")


class Factorized(nn.Sequential):
    """A layer's two factors in sequence. It keeps the original layer's shape attributes
    (stride, kernel_size, padding, dilation, channels or features), which a parent's
    forward may read: Hugging Face's TF-style padding reads its conv's stride and kernel
    size. Its state_dict is a Sequential's ('0.weight', '1.weight', '1.bias')."""

    def __init__(self, first: nn.Module, second: nn.Module, like: nn.Module):
        super().__init__(first, second)
        for key in _SHAPE_ATTRS:
            if hasattr(like, key):
                setattr(self, key, getattr(like, key))


def _factors(layer: nn.Module, rank: int) -> tuple[nn.Module, nn.Module]:
    """The two layers of rank `rank` that replace `layer` (fresh weights)."""
    kw = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    bias = layer.bias is not None
    if isinstance(layer, nn.Conv2d):
        a = nn.Conv2d(layer.in_channels, rank, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                      dilation=layer.dilation, groups=1, bias=False, padding_mode=layer.padding_mode, **kw)
        return a, nn.Conv2d(rank, layer.out_channels, 1, bias=bias, **kw)
    return nn.Linear(layer.in_features, rank, bias=False, **kw), nn.Linear(rank, layer.out_features, bias=bias, **kw)


def factorize(layer: nn.Module, rank: int, *, init: bool = True) -> Factorized:
    """`layer` (Linear, or Conv2d with groups == 1) as two layers of rank `rank` in sequence,
    initialised from the truncated SVD of its weight (balanced split; `init=False`: fresh
    weights, for checking that the model runs with it). Does not check that the result is
    smaller; `rank` must be in [1, full_rank(layer)]."""
    if not _is_factorizable(layer):
        raise TypeError(f"cannot factorize {type(layer).__name__} (Linear or Conv2d with groups=1 only)")
    if not 1 <= rank <= full_rank(layer):
        raise ValueError(f"rank must be in [1, {full_rank(layer)}], got {rank}")
    a, b = _factors(layer, rank)
    if init:
        w = layer.weight.detach()
        rows, cols = _matrix_shape(layer)
        u, s, vh = torch.linalg.svd(w.reshape(rows, cols).to(torch.float64), full_matrices=False)
        root = s[:rank].sqrt()
        with torch.no_grad():
            a.weight.copy_((root[:, None] * vh[:rank]).to(w.dtype).reshape(a.weight.shape))  # (r, cols)
            b.weight.copy_((u[:, :rank] * root[None, :]).to(w.dtype).reshape(b.weight.shape))  # (rows, r)
            if layer.bias is not None:
                b.bias.copy_(layer.bias.detach())
    for p in (a.weight, b.weight, b.bias):
        if p is not None:
            p.requires_grad_(layer.weight.requires_grad)
    return Factorized(a, b, layer).train(layer.training)


def breaking_layers(model: nn.Module, example_input: Any, exclude: Sequence[str] = ()) -> dict[str, str]:
    """{name: why} for the factorizable layers whose factorized form breaks the model's
    forward (its parent reads something of the layer that a Factorized has not, such as
    its weight), each tried alone on a copy of the model, in eval and in train mode."""
    import copy

    probe = copy.deepcopy(model)
    split_attention_(probe)  # as low_rank sees it
    out = {}
    for name, layer in factorizable_layers(probe, example_input, exclude):
        with swapped(probe, name, factorize(layer, 1, init=False)):
            why = forward_error(probe, example_input)
        if why is not None:
            out[name] = why
    return out


def lowrank_plan(model: nn.Module, cfg: LowRankConfig, example_input: Any) -> list[tuple[str, Optional[int]]]:
    """(name, kept rank, or None where the layer stays as is) for every factorizable layer
    of `model`, in model order."""
    return [(name, r) for name, _, r in _plan(model, cfg, example_input)]


def _plan(model: nn.Module, cfg: LowRankConfig, example_input: Any) -> list[tuple[str, nn.Module, Optional[int]]]:
    layers = factorizable_layers(model, example_input, cfg.exclude)
    if cfg.segment_ratios is None:
        paired = [(item, cfg.rank_ratio) for item in layers]
    else:
        paired = per_item(layers, cfg.segment_ratios)
    return [(name, layer, choose_rank(layer, ratio)) for (name, layer), ratio in paired]


def low_rank(model: nn.Module, cfg: LowRankConfig, ctx: TransformContext) -> nn.Module:
    """Factorize the layers of `model` as `lowrank_plan` says. `model` is the caller's own
    copy; it is changed in place and returned (a bare Linear/Conv2d
    model is returned as its replacement Sequential)."""
    if not cfg.active:
        return model
    split_attention_(model)  # attention projections become Linear layers the plan lists (factorizable_layers)
    plan = _plan(model, cfg, ctx.example_input)
    aliases = _aliases(model)
    for _, layer, rank in plan:
        if rank is None:
            continue
        new = factorize(layer, rank)
        for alias in aliases[id(layer)]:  # a shared layer stays shared
            if alias == "":
                return new  # the model is the layer itself (its only factorizable layer)
            set_submodule(model, alias, new)
    return model


__all__ = ["Factorized", "breaking_layers", "choose_rank", "factorizable_layers", "factorize", "full_rank", "low_rank", "lowrank_plan", "tied_layers"]
