"""Candidate configs: content ids, round trips, labels."""

from __future__ import annotations

import dataclasses

import pytest

from autocompress.config import CandidateConfig, DistillConfig, FinetuneConfig, PruneConfig, QuantizeConfig


def _cfg(**over) -> CandidateConfig:
    base = dict(
        prune=PruneConfig(0.5),
        finetune=FinetuneConfig(steps=100, lr=1e-3, batch_size=64),
        distill=DistillConfig(alpha=0.5, temperature=4.0),
        quantize=QuantizeConfig("int8", "uint8", "qoperator"),
    )
    base.update(over)
    return CandidateConfig(**base)


def test_equal_configs_have_equal_ids():
    a, b = _cfg(), _cfg()
    assert a is not b and a == b
    assert a.id == b.id
    assert len(a.id) == 12 and int(a.id, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        dict(prune=PruneConfig(0.55)),
        dict(finetune=FinetuneConfig(steps=101, lr=1e-3, batch_size=64)),
        dict(finetune=FinetuneConfig(steps=100, lr=2e-3, batch_size=64)),
        dict(finetune=FinetuneConfig(steps=100, lr=1e-3, batch_size=32)),
        dict(distill=DistillConfig(alpha=0.6, temperature=4.0)),
        dict(distill=DistillConfig(alpha=0.5, temperature=2.0)),
        dict(distill=None),
        dict(quantize=QuantizeConfig("int8", "int8", "qoperator")),
        dict(quantize=QuantizeConfig("int8", "uint8", "qdq")),
        dict(quantize=QuantizeConfig("fp32")),
    ],
)
def test_different_configs_have_different_ids(change):
    assert _cfg(**change) != _cfg()
    assert _cfg(**change).id != _cfg().id


def test_id_does_not_depend_on_int_vs_float_spelling():
    a = CandidateConfig(prune=PruneConfig(0), distill=DistillConfig(alpha=1, temperature=4))
    b = CandidateConfig(prune=PruneConfig(0.0), distill=DistillConfig(alpha=1.0, temperature=4.0))
    assert a == b
    assert a.id == b.id


def test_dict_round_trip():
    for cfg in (_cfg(), _cfg(distill=None, finetune=FinetuneConfig(0, 0.0, 0), quantize=QuantizeConfig())):
        again = CandidateConfig.from_dict(cfg.to_dict())
        assert again == cfg and again.id == cfg.id


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _cfg().prune.ratio = 0.1  # type: ignore[misc]


def test_describe():
    assert _cfg().describe() == "prune 0.5 l1 · kd 100 a=0.5 T=4 · int8 qop/u8"
    plain = CandidateConfig()
    assert plain.describe() == "no prune · no fine-tune · fp32"
    assert _cfg(quantize=QuantizeConfig("int8", "int8", "qdq")).describe().endswith("int8 qdq/s8")


def test_one_line_keeps_the_type_and_first_line():
    from autocompress.errors import one_line

    assert one_line(RuntimeError("first\nsecond")) == "RuntimeError: first"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(ValueError("x" * 1000), limit=50).endswith("...")
    assert len(one_line(ValueError("x" * 1000), limit=50)) == 50


def test_describe_lists_segments_and_options():
    from autocompress.config import DistillConfig, FinetuneConfig, LowRankConfig

    cfg = CandidateConfig(
        prune=PruneConfig(0.0, (0.0, 0.2, 0.5), "act_mean", 8),
        lowrank=LowRankConfig(1.0, (1.0, 0.5, 0.25)),
        finetune=FinetuneConfig(100, 1e-3, 64),
        distill=DistillConfig(0.5, 4.0),
        quantize=QuantizeConfig("fp32", "uint8", "qdq", "entropy", ("fp32", "int8", "int4")),
    )
    assert cfg.describe() == "prune [0 0.2 0.5] act_mean/8 · rank [1 0.5 0.25] · kd 100 a=0.5 T=4 · [fp32 int8 int4] qdq/u8 entropy"
