"""nn.MultiheadAttention split into q/k/v/out Linear children (transforms.mha): the same
outputs and attention weights as torch's module (batch-first or not, unbatched, bool and
float masks, per-head or averaged weights, kdim/vdim), in eval and in train mode; inside
torch's TransformerEncoder the split layers take the regular path (not the fused fast
path that would read the packed in-projection) and give the same outputs; the split model
exports to ONNX and ONNX Runtime runs it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.transforms.mha import SplitMultiheadAttention, has_attention_to_split, split_attention, split_attention_

N, L, S, E = 3, 5, 7, 16


def _mha(**kw) -> nn.MultiheadAttention:
    torch.manual_seed(0)
    m = nn.MultiheadAttention(E, 4, **kw)
    with torch.no_grad():  # torch initialises the biases to zero: make them count
        for p in (m.in_proj_bias, m.out_proj.bias):
            if p is not None:
                p.normal_()
    return m


def _inputs(batch_first: bool, kdim: int = E, vdim: int = E, self_attention: bool = False):
    g = torch.Generator().manual_seed(1)

    def t(length: int, width: int) -> torch.Tensor:
        return torch.randn((N, length, width) if batch_first else (length, N, width), generator=g)

    if self_attention:
        x = t(L, E)
        return x, x, x
    return t(L, E), t(S, kdim), t(S, vdim)


def _same(a, b, atol: float = 1e-5) -> None:
    assert (a[1] is None) == (b[1] is None)
    torch.testing.assert_close(b[0], a[0], atol=atol, rtol=0)
    if a[1] is not None:
        assert b[1].shape == a[1].shape
        torch.testing.assert_close(b[1], a[1], atol=atol, rtol=0)


KPM = torch.zeros(N, S, dtype=torch.bool)
KPM[0, -3:] = True
KPM[2, -1] = True
CAUSAL_LIKE = torch.triu(torch.ones(L, S, dtype=torch.bool), diagonal=3)

CASES = {
    "plain": {},
    "kpm-bool": {"key_padding_mask": KPM},
    "attn-float": {"attn_mask": torch.randn(L, S, generator=torch.Generator().manual_seed(2))},
    "attn-bool": {"attn_mask": CAUSAL_LIKE},
    "attn-3d": {"attn_mask": torch.randn(N * 4, L, S, generator=torch.Generator().manual_seed(3))},
    "both-bool": {"attn_mask": CAUSAL_LIKE, "key_padding_mask": KPM},
    "both-float": {"attn_mask": torch.randn(L, S, generator=torch.Generator().manual_seed(4)),
                   "key_padding_mask": KPM.float() * -1e4},
    "per-head": {"average_attn_weights": False, "key_padding_mask": KPM},
    "no-weights": {"need_weights": False, "attn_mask": CAUSAL_LIKE},
    "no-weights-kpm": {"need_weights": False, "key_padding_mask": KPM},
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("training", [False, True])
def test_the_split_module_computes_what_multihead_attention_computes(case, batch_first, training):
    mha = _mha(batch_first=batch_first).train(training)
    split = SplitMultiheadAttention.from_mha(mha)
    assert split.training == training
    assert (split.num_heads, split.head_dim, split.batch_first, split.embed_dim) == (4, 4, batch_first, E)
    assert all(type(getattr(split, n)) is nn.Linear for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
    q, k, v = _inputs(batch_first)
    _same(mha(q, k, v, **CASES[case]), split(q, k, v, **CASES[case]))


@pytest.mark.parametrize("batch_first", [True, False])
def test_self_attention_in_eval_without_gradients_matches_the_fast_path(batch_first):
    """Self-attention, batch-first, eval, no grad: torch's module takes its native fast path."""
    mha = _mha(batch_first=batch_first).eval()
    split = SplitMultiheadAttention.from_mha(mha)
    x, _, _ = _inputs(batch_first, self_attention=True)
    with torch.no_grad():
        for kw in ({}, {"need_weights": False}, {"key_padding_mask": KPM[:, :L]}):
            _same(mha(x, x, x, **kw), split(x, x, x, **kw))


def test_different_key_and_value_widths_and_no_bias():
    mha = _mha(kdim=8, vdim=12, batch_first=True)
    split = SplitMultiheadAttention.from_mha(mha)
    assert (split.k_proj.in_features, split.v_proj.in_features, split._qkv_same_embed_dim) == (8, 12, False)
    assert split.k_proj.weight.equal(mha.k_proj_weight) and split.v_proj.weight.equal(mha.v_proj_weight)
    q, k, v = _inputs(True, 8, 12)
    for kw in ({}, {"key_padding_mask": KPM, "average_attn_weights": False}, {"attn_mask": CAUSAL_LIKE, "need_weights": False}):
        _same(mha(q, k, v, **kw), split(q, k, v, **kw))

    plain = _mha(bias=False)
    split = SplitMultiheadAttention.from_mha(plain)
    assert all(getattr(split, n).bias is None for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
    q, k, v = _inputs(False)
    _same(plain(q, k, v), split(q, k, v))


def test_unbatched_inputs():
    mha = _mha().eval()
    split = SplitMultiheadAttention.from_mha(mha)
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(L, E, generator=g), torch.randn(S, E, generator=g)
    for kw in ({}, {"key_padding_mask": KPM[0]}, {"attn_mask": torch.randn(4, L, S, generator=g), "average_attn_weights": False}):
        _same(mha(q, k, k, **kw), split(q, k, k, **kw))


def test_weights_are_copied_and_gradients_flow_to_the_split_projections():
    mha = _mha(batch_first=True)
    split = SplitMultiheadAttention.from_mha(mha)
    assert torch.equal(torch.cat([split.q_proj.weight, split.k_proj.weight, split.v_proj.weight]), mha.in_proj_weight)
    assert torch.equal(torch.cat([split.q_proj.bias, split.k_proj.bias, split.v_proj.bias]), mha.in_proj_bias)
    assert split.out_proj.weight.equal(mha.out_proj.weight) and split.out_proj.weight is not mha.out_proj.weight
    assert list(split.state_dict()) == [f"{p}.{w}" for p in ("q_proj", "k_proj", "v_proj", "out_proj") for w in ("weight", "bias")]
    q, k, v = _inputs(True)
    split(q, k, v)[0].sum().backward()
    assert all(getattr(split, n).weight.grad is not None for n in ("q_proj", "k_proj", "v_proj", "out_proj"))


def test_dropout_is_applied_in_train_mode_only():
    mha = _mha(dropout=0.5, batch_first=True)
    split = SplitMultiheadAttention.from_mha(mha)
    assert split.dropout == 0.5
    q, k, v = _inputs(True)
    torch.manual_seed(0)
    a, b = split.train()(q, k, v)[0], split(q, k, v)[0]
    assert not torch.allclose(a, b)
    _same(mha.eval()(q, k, v), split.eval()(q, k, v))


def test_unsupported_options_are_refused():
    with pytest.raises(ValueError, match="add_bias_kv"):
        SplitMultiheadAttention.from_mha(nn.MultiheadAttention(E, 4, add_bias_kv=True))
    with pytest.raises(ValueError, match="add_zero_attn"):
        SplitMultiheadAttention.from_mha(nn.MultiheadAttention(E, 4, add_zero_attn=True))
    split = SplitMultiheadAttention.from_mha(_mha())
    q, k, v = _inputs(False)
    with pytest.raises(RuntimeError, match="Need attn_mask"):
        split(q, k, v, is_causal=True)
    with pytest.raises(RuntimeError, match="shape of the attn_mask"):
        split(q, k, v, attn_mask=torch.zeros(L, L))


# ---------------------------------------------------------------- inside torch's transformer modules


class EncoderClassifier(nn.Module):
    """A classifier on torch's nn.TransformerEncoder (2 layers), tokens batch-first."""

    def __init__(self, width: int = 32, heads: int = 4, depth: int = 2, classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(16, width)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True), depth)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x.flatten(1, -2))).mean(dim=1))


def test_split_attention_replaces_every_multihead_attention_in_place():
    torch.manual_seed(0)
    model = nn.Transformer(d_model=16, nhead=4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32, dropout=0.0,
                           batch_first=True)
    assert has_attention_to_split(model)
    assert split_attention_(model) == ["encoder.layers.0.self_attn", "decoder.layers.0.self_attn", "decoder.layers.0.multihead_attn"]
    assert not has_attention_to_split(model) and split_attention_(model) == []
    assert isinstance(model.decoder.layers[0].multihead_attn, SplitMultiheadAttention)

    plain = nn.Sequential(nn.Linear(4, 4))
    assert split_attention(plain) is plain and split_attention_(plain) == []


def test_split_attention_copies_and_keeps_a_shared_module_shared():
    mha = _mha(batch_first=True)
    holder = nn.ModuleDict({"a": mha, "b": mha})
    out = split_attention(holder)
    assert out is not holder and holder["a"] is mha
    assert isinstance(out["a"], SplitMultiheadAttention) and out["a"] is out["b"]


@pytest.mark.parametrize("batch_first", [True, False])
def test_a_transformer_encoder_gives_the_same_outputs_split_in_eval_without_gradients(batch_first):
    """In eval mode without gradients the encoder and its layers would take their fused
    fast path (reading the packed in-projection); split, they call the split modules."""
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=batch_first), 2,
                                    enable_nested_tensor=batch_first).eval()
    x = torch.randn(3, 6, 32) if batch_first else torch.randn(6, 3, 32)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[1, -2:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(6)
    with torch.no_grad():
        want = [encoder(x), encoder(x, src_key_padding_mask=pad), encoder(x, mask=causal, is_causal=True)]
    split = copy.deepcopy(encoder)
    assert split_attention_(split) == ["layers.0.self_attn", "layers.1.self_attn"]
    calls = []
    for layer in split.layers:
        layer.self_attn.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        got = [split(x), split(x, src_key_padding_mask=pad), split(x, mask=causal, is_causal=True)]
    assert len(calls) == 6  # every layer called its attention module in every pass: no fast path
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[2], want[2], atol=1e-5, rtol=0)
    # with a padding mask torch's fast path runs on a nested tensor and returns zeros at the
    # padded positions; the regular path computes them: the tokens that are not padding agree
    keep = ~pad if batch_first else ~pad.T
    torch.testing.assert_close(got[1][keep], want[1][keep], atol=1e-5, rtol=0)
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            torch.testing.assert_close(got[1], encoder(x, src_key_padding_mask=pad), atol=1e-5, rtol=0)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    # train mode (dropout 0) agrees too, with gradients
    encoder.train(), split.train()
    torch.testing.assert_close(split(x, src_key_padding_mask=pad), encoder(x, src_key_padding_mask=pad), atol=1e-5, rtol=0)


def test_a_split_encoder_model_exports_and_onnx_runtime_matches_torch(tmp_path):
    import onnxruntime as ort

    from autocompress.export import export_onnx

    torch.manual_seed(0)
    model = EncoderClassifier().eval()
    x = torch.randn(5, 1, 16, 16)
    with torch.no_grad():
        want = model(x).numpy()
    split_attention_(model)
    path = export_onnx(model, (1, 16, 16), tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]  # batch 5: the batch axis is dynamic
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
