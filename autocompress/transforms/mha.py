"""torch's nn.MultiheadAttention with its projections as plain Linear children.

nn.MultiheadAttention keeps its query/key/value projections packed in one `in_proj_weight`
Parameter (or three `*_proj_weight` Parameters when kdim/vdim differ) and hands them, with
`out_proj.weight`, to F.multi_head_attention_forward: none of its projections is ever
called as a module, so a transform that replaces Linear layers (low-rank factorization) or
prunes them by structure (head pruning) cannot reach them. `SplitMultiheadAttention` holds
`q_proj`, `k_proj`, `v_proj` and `out_proj` as nn.Linear children, with `num_heads` and
`head_dim`, and computes what nn.MultiheadAttention computes (same arguments, same return
value) with the same head split: head h is channels [h*head_dim, (h+1)*head_dim) of each
projection. Its forward reads the head count and head size from the module, so a module
whose heads were pruned (fewer q/k/v channels, `num_heads` rewritten) still fits.

torch's TransformerEncoderLayer / TransformerEncoder / TransformerDecoderLayer read their
`self_attn` before choosing their fused inference "fast path" (which hands
`self_attn.in_proj_weight` to a native kernel). The split module says `in_proj_bias =
None` and `in_proj_weight = None`, which torch reads as "built with bias=False" and then
takes the regular path, which calls `self_attn(...)`. A TransformerEncoder decides at
construction whether it may turn a padded batch into a nested tensor (`use_nested_tensor`):
`split_attention_` switches that off for an encoder whose layers it split, as torch itself
would have decided for such layers.

`add_bias_kv` and `add_zero_attn` are not supported (`from_mha` refuses them)."""

from __future__ import annotations

import copy
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from autocompress.transforms.order import set_submodule

__all__ = ["SplitMultiheadAttention", "has_attention_to_split", "split_attention", "split_attention_"]


def _float_mask(mask: Optional[torch.Tensor], name: str, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """A bool mask (True: masked out) as an additive float mask (-inf where True); a float
    mask as it is (as F._canonical_mask does)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))
    if not torch.is_floating_point(mask):
        raise AssertionError(f"only bool and floating types of {name} are supported")
    return mask


class SplitMultiheadAttention(nn.Module):
    """nn.MultiheadAttention (without add_bias_kv / add_zero_attn) with separate q/k/v/out
    nn.Linear projections; build one with `from_mha`."""

    # what torch's transformer layers read on their `self_attn` before a fast path: with
    # no packed in-projection they take the regular path, which calls this module
    in_proj_weight = None
    in_proj_bias = None
    bias_k = None
    bias_v = None
    add_zero_attn = False

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True, kdim: Optional[int] = None,
                 vdim: Optional[int] = None, batch_first: bool = False, device=None, dtype=None):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})")
        kw = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = float(dropout)
        self.batch_first = batch_first
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias, **kw)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias, **kw)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> "SplitMultiheadAttention":
        """The same attention as `mha` (its weights copied, its train/eval mode and
        requires_grad kept). ValueError for add_bias_kv or add_zero_attn."""
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"expected nn.MultiheadAttention, got {type(mha).__name__}")
        if mha.bias_k is not None or mha.bias_v is not None:
            raise ValueError("cannot split an nn.MultiheadAttention built with add_bias_kv=True (its learned key/value "
                             "bias rows are not supported)")
        if mha.add_zero_attn:
            raise ValueError("cannot split an nn.MultiheadAttention built with add_zero_attn=True (not supported)")
        weight = mha.out_proj.weight
        bias = mha.in_proj_bias is not None
        new = cls(mha.embed_dim, mha.num_heads, dropout=mha.dropout, bias=bias, kdim=mha.kdim, vdim=mha.vdim,
                  batch_first=mha.batch_first, device=weight.device, dtype=weight.dtype)
        e = mha.embed_dim
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.detach().split(e)
            grads = [mha.in_proj_weight.requires_grad] * 3
        else:
            weights = (mha.q_proj_weight.detach(), mha.k_proj_weight.detach(), mha.v_proj_weight.detach())
            grads = [mha.q_proj_weight.requires_grad, mha.k_proj_weight.requires_grad, mha.v_proj_weight.requires_grad]
        biases = mha.in_proj_bias.detach().split(e) if bias else (None, None, None)
        with torch.no_grad():
            for proj, w, b, grad in zip((new.q_proj, new.k_proj, new.v_proj), weights, biases, grads):
                proj.weight.copy_(w)
                proj.weight.requires_grad_(grad)
                if b is not None:
                    proj.bias.copy_(b)
                    proj.bias.requires_grad_(mha.in_proj_bias.requires_grad)
            new.out_proj.weight.copy_(mha.out_proj.weight.detach())
            new.out_proj.weight.requires_grad_(mha.out_proj.weight.requires_grad)
            if bias:
                new.out_proj.bias.copy_(mha.out_proj.bias.detach())
                new.out_proj.bias.requires_grad_(mha.out_proj.bias.requires_grad)
        return new.train(mha.training)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, dropout={self.dropout}, batch_first={self.batch_first}"

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None,
                need_weights: bool = True, attn_mask: Optional[torch.Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """As nn.MultiheadAttention.forward: (output, attention weights averaged over the
        heads, or per head with average_attn_weights=False, or None with
        need_weights=False). `is_causal` is a hint that `attn_mask` is causal: the mask
        is what is applied."""
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the Transformer module method "
                               "`generate_square_subsequent_mask` to create this mask.")
        key_padding_mask = _float_mask(key_padding_mask, "key_padding_mask", query.dtype)
        attn_mask = _float_mask(attn_mask, "attn_mask", query.dtype)
        batched = query.dim() == 3
        if not batched:  # (L, E): one sequence, as a batch of one
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, tgt, src = query.shape[0], query.shape[1], key.shape[1]
        heads, size = self.num_heads, self.head_dim  # read now: head pruning rewrites num_heads

        q = self.q_proj(query).reshape(n, tgt, heads, size).transpose(1, 2)  # (N, H, L, D)
        k = self.k_proj(key).reshape(n, src, heads, size).transpose(1, 2)  # (N, H, S, D)
        v = self.v_proj(value).reshape(n, src, heads, size).transpose(1, 2)
        scores = (q * math.sqrt(1.0 / size)) @ k.transpose(-2, -1)  # (N, H, L, S)
        if attn_mask is not None:
            if not torch.jit.is_tracing():
                want = (tgt, src) if attn_mask.dim() == 2 else (n * heads, tgt, src)
                if attn_mask.dim() not in (2, 3) or tuple(attn_mask.shape) != want:
                    raise RuntimeError(f"The shape of the attn_mask is {tuple(attn_mask.shape)}, but should be {want}.")
            scores = scores + (attn_mask if attn_mask.dim() == 2 else attn_mask.reshape(n, heads, tgt, src))
        if key_padding_mask is not None:
            scores = scores + key_padding_mask.reshape(n, 1, 1, src)
        weights = torch.softmax(scores, dim=-1)
        if self.training and self.dropout > 0:
            weights = F.dropout(weights, p=self.dropout)
        out = (weights @ v).transpose(1, 2).reshape(n, tgt, heads * size)
        out = self.out_proj(out)
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(dim=1)
        return out, (weights if batched else weights.squeeze(0))


def has_attention_to_split(model: nn.Module) -> bool:
    """Whether `model` holds an nn.MultiheadAttention below its root."""
    return any(isinstance(m, nn.MultiheadAttention) for name, m in model.named_modules() if name)


def split_attention_(model: nn.Module) -> list[str]:
    """Replace every nn.MultiheadAttention below the root of `model` by its
    SplitMultiheadAttention, in place (one shared module stays shared); the paths replaced,
    in module order. A TransformerEncoder whose layers now hold split attention no longer
    turns padded batches into nested tensors (torch decides so at construction for
    attention without a packed in-projection). A model without nn.MultiheadAttention is
    left untouched."""
    found = [(name, m) for name, m in model.named_modules(remove_duplicate=False) if name and isinstance(m, nn.MultiheadAttention)]
    if not found:
        return []
    split: dict[int, SplitMultiheadAttention] = {}
    for name, mha in found:
        if id(mha) not in split:
            split[id(mha)] = SplitMultiheadAttention.from_mha(mha)
        set_submodule(model, name, split[id(mha)])
    for m in model.modules():
        if isinstance(m, nn.TransformerEncoder) and any(isinstance(getattr(layer, "self_attn", None), SplitMultiheadAttention)
                                                        for layer in m.layers):
            m.use_nested_tensor = False
    return [name for name, _ in found]


def split_attention(model: nn.Module) -> nn.Module:
    """`model` itself when it holds no nn.MultiheadAttention, else a deep copy of it with
    every one split (`split_attention_`); `model` is never changed."""
    if not has_attention_to_split(model):
        return model
    out = copy.deepcopy(model)
    split_attention_(out)
    return out
