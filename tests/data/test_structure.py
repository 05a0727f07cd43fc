"""The call convention and the names of inputs and outputs (data.structure)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.data import structure as st


class Two(nn.Module):
    def forward(self, a, b=None):
        return a.float() + (0 if b is None else b.float())


def test_the_call_convention():
    a, b = torch.arange(6).view(3, 2), torch.ones(3, 2, dtype=torch.int64)
    m = Two()
    assert torch.equal(st.call(m, a), a.float())
    assert torch.equal(st.call(m, (a, b)), a.float() + 1)
    assert torch.equal(st.call(m, {"b": b, "a": a}), a.float() + 1)


def test_names_take_cat_and_feed_keep_structure_and_dtype():
    x = {"input_ids": torch.arange(8).view(4, 2), "attention_mask": torch.ones(4, 2, dtype=torch.int64)}
    assert st.input_names(x) == ["input_ids", "attention_mask"]
    assert st.input_names((x["input_ids"], x["attention_mask"])) == ["input_0", "input_1"]
    assert st.input_names(torch.zeros(2, 3)) == ["input"]
    part = st.take(x, torch.tensor([3, 1]))
    assert part["input_ids"].tolist() == [[6, 7], [2, 3]] and st.rows(part) == 2
    both = st.cat([st.take(x, slice(0, 1)), st.take(x, slice(1, 4))])
    assert all(torch.equal(both[k], x[k]) for k in x)
    feed = st.feed(x)
    assert feed["input_ids"].dtype == np.int64 and feed["input_ids"].flags["C_CONTIGUOUS"]
    assert st.describe(x) == "input_ids int64 (4, 2), attention_mask int64 (4, 2)"


@pytest.mark.parametrize("bad, fragment", [
    ({}, "string keys"),
    ((), "empty tuple"),
    ({"a": [1, 2]}, "input 'a' must be a torch.Tensor, got list"),
    (torch.tensor(3.0), "no batch axis"),
    ((torch.zeros(2, 1), torch.zeros(3, 1)), "different batch sizes"),
])
def test_bad_inputs_are_named(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        st.check_inputs(bad, "here")


class Out:
    def __init__(self, logits):
        self.logits = logits


def test_outputs_of_every_structure_and_their_primary():
    t = torch.zeros(2, 3)
    h = torch.ones(2, 4)
    assert st.output_fields(t) == [("logits", t)]
    assert [n for n, _ in st.output_fields((t, None, h))] == ["output_0", "output_2"]
    assert [n for n, _ in st.output_fields({"loss": None, "logits": t, "hidden": h})] == ["logits", "hidden"]
    assert st.primary({"hidden": h, "logits": t}) is t and st.primary((h, t)) is h and st.primary(Out(t)) is t
    assert st.output_kind({"logits": t}) == "dict" and st.output_kind((t,)) == "tuple" and st.output_kind(t) == "tensor"
    with pytest.raises(ValueError, match="no tensor"):
        st.primary(("text",))


def test_flat_rebuilds_the_inputs_and_flattens_the_outputs():
    class Dict(nn.Module):
        def forward(self, input_ids, attention_mask):
            return {"logits": input_ids.float() * attention_mask, "none": None}

    x = {"input_ids": torch.arange(4).view(2, 2), "attention_mask": torch.tensor([[1, 0], [1, 1]])}
    out = st.Flat(Dict(), x)(x["input_ids"], x["attention_mask"])
    assert isinstance(out, tuple) and len(out) == 1 and out[0].tolist() == [[0.0, 0.0], [2.0, 3.0]]
