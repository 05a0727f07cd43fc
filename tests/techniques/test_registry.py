"""The registry refuses a malformed registration with a clear message, and a candidate
config behaves as frozen data over it."""

from __future__ import annotations

import pickle

import pytest

from autocompress.config import CandidateConfig, PruneConfig, QuantizeConfig
from autocompress.schema import Key
from autocompress.techniques import Technique, pipeline_order, register_technique, technique, techniques, unregister_technique


class _Dummy(Technique):
    schema = {"k": Key(int, 0, 0, 3)}


@pytest.mark.parametrize(
    "name, kw, cls_attrs, fragment",
    [
        ("prune", {"stage": "model", "order": 1}, {}, "'prune' is already registered"),
        ("not a name", {"stage": "model", "order": 1}, {}, "is not an identifier"),
        ("dummy", {"stage": "training", "order": 1}, {}, "stage must be one of ('model', 'finetune', 'graph'), got 'training'"),
        ("dummy", {"stage": "model", "order": 1}, {"needs": ("nothing",)}, "needs ['nothing'], which must be registered before it"),
        ("dummy", {"stage": "model", "order": 1}, {"switch": "ratio"}, "switch 'ratio' is not a key of its schema"),
    ],
)
def test_malformed_registrations_are_refused(name, kw, cls_attrs, fragment):
    cls = type("D", (_Dummy,), dict(cls_attrs))
    with pytest.raises(ValueError) as info:
        register_technique(name, **kw)(cls)
    assert fragment in str(info.value)
    assert "dummy" not in [t.name for t in techniques()]


def test_only_technique_subclasses_register_and_unknown_names_are_named():
    with pytest.raises(TypeError, match="must subclass"):
        register_technique("dummy", stage="model", order=1)(object)
    with pytest.raises(ValueError, match=r"unknown technique 'nope'; registered: \['prune', 'lowrank', 'quantize', 'finetune', 'distill', 'blocks', 'layers', 'heads', 'mlp', 'matmul', 'fuse'\]"):
        technique("nope")
    with pytest.raises(ValueError, match="needed by another technique"):
        unregister_technique("quantize")  # finetune reads it


def test_sampling_order_and_pipeline_order():
    assert [t.name for t in techniques()] == ["prune", "lowrank", "quantize", "finetune", "distill", "blocks", "layers", "heads", "mlp",
                                              "matmul", "fuse"]
    assert [t.name for t in pipeline_order()] == ["blocks", "heads", "mlp", "layers", "prune", "lowrank", "finetune", "distill", "fuse",
                                                  "quantize", "matmul"]
    assert [t.name for t in pipeline_order("graph")] == ["fuse", "quantize", "matmul"]


def test_candidate_config_is_frozen_data():
    cfg = CandidateConfig(prune=PruneConfig(0.5), quantize=QuantizeConfig("int8", "uint8", "qdq"))
    assert cfg.prune == cfg["prune"] == PruneConfig(0.5) and cfg.blocks == technique("blocks").off
    assert [name for name, _ in cfg.items()] == [t.name for t in pipeline_order()]
    with pytest.raises(AttributeError, match="frozen"):
        cfg.prune = PruneConfig(0.1)
    with pytest.raises(TypeError, match=r"unknown technique\(s\) \['prunning'\]"):
        CandidateConfig(prunning=PruneConfig(0.5))
    with pytest.raises(AttributeError, match="no technique 'nope'"):
        cfg.nope
    other = cfg.replace(prune=PruneConfig(0.25))
    assert other.prune.ratio == 0.25 and cfg.prune.ratio == 0.5 and other.quantize == cfg.quantize
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and hash(again) == hash(cfg) and again.id == cfg.id
    assert CandidateConfig.from_dict(cfg.to_dict()) == cfg.canonical()
