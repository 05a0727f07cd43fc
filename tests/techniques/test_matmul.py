"""The matmul technique: bound to the model (nothing to sample, and why, on a CNN; searched
on TinyEncoder and a Hugging Face BERT), one method per candidate (off when static
quantization is on), labels, the hand recipe only where the bound space can express it,
the structured search's move, the checks of a section and of a profile, and a BERT
candidate built, exported with 4-bit MatMuls and measured by the pipeline."""

from __future__ import annotations

import optuna
import pytest
import torch

from autocompress.climb import _Filling
from autocompress.config import CandidateConfig, MatMulQuantConfig, QuantizeConfig
from autocompress.errors import ConfigError
from autocompress.recipes import recipe_trials
from autocompress.space import SearchSpace, load_space
from autocompress.techniques import technique
from autocompress.testing import conformance_model

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples"
SECTION = {"method": ["none", "dynamic", "int4_wo"], "reduce_range": [False, True], "block_size": [32, 64, 128], "accuracy_level": [0, 4]}


def _bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)).eval()
    return model, {"input_ids": torch.randint(1, 50, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.int64)}


def _asked(space: SearchSpace, params=None) -> tuple[CandidateConfig, dict]:
    """A candidate sampled with `params` (a choice not given: its first value), and every
    parameter the sampling asked for."""
    filling = _Filling(params or {})
    return space.suggest(filling), filling.asked


def test_a_cnn_has_nothing_to_sample_says_why_and_gets_no_recipe():
    model, x = conformance_model("cnn")
    space, notes = load_space("default").bind(model, x[:2])
    assert ("matmul: no Linear layer of the model runs on an input of more than 2 dimensions (those export as MatMul nodes with a "
            "weight; a Linear on 2-D inputs is a Gemm, left float); MatMul quantization is not searched") in notes
    assert not [n for n in space.searched() if n.startswith("matmul.")]
    for q in ("fp32", "int8"):
        cfg, asked = _asked(space, {f"quantize.mode.{i}": q for i in range(3)})
        assert cfg.matmul == MatMulQuantConfig() and not [k for k in asked if k.startswith("matmul.")]
    assert [name for name, _ in recipe_trials(space)] == ["int8 teacher", "prune 50% + KD", "prune 50% + KD + int8"]
    assert all(not [k for k in params if k.startswith("matmul.")] for _, params in recipe_trials(space))
    assert space.recipe({"matmul": {"method": "dynamic"}}) is None
    assert technique("matmul").stronger(space.spec("matmul"), {}) == []


@pytest.mark.parametrize("kind", ["transformer", "bert"])
def test_a_transformer_samples_a_method_unless_static_quantization_is_on(kind):
    model, x = _bert() if kind == "bert" else conformance_model("transformer")
    space, notes = SearchSpace.from_dict({"quantize": {"mode": ["fp32", "int8"]}, "matmul": SECTION}).bind(model, x)
    linears = 12 if kind == "bert" else 13  # BERT's pooler and classifier run on 2-D inputs (Gemm): not counted
    assert (f"matmul: {linears} Linear layers run on inputs of more than 2 dimensions (MatMul nodes with a weight); "
            "MatMul quantization (dynamic, int4_wo) is searched when quantize is off") in notes
    cfg, asked = _asked(space, {"quantize.mode": "fp32", "matmul.method": "dynamic", "matmul.reduce_range": True})
    assert cfg.matmul == MatMulQuantConfig("dynamic", reduce_range=True)
    assert {k for k in asked if k.startswith("matmul.")} == {"matmul.method", "matmul.reduce_range"}  # block size etc.: int4 only
    cfg, asked = _asked(space, {"quantize.mode": "fp32", "matmul.method": "int4_wo", "matmul.block_size": 64, "matmul.accuracy_level": 4})
    assert cfg.matmul == MatMulQuantConfig("int4_wo", block_size=64, accuracy_level=4)
    assert {k for k in asked if k.startswith("matmul.")} == {"matmul.method", "matmul.block_size", "matmul.accuracy_level"}
    cfg, asked = _asked(space, {"quantize.mode": "int8", "matmul.method": "dynamic"})  # static int8: no MatMul method on top
    assert cfg.quantize.active and cfg.matmul == MatMulQuantConfig() and not [k for k in asked if k.startswith("matmul.")]
    cfg, _ = _asked(space, {"quantize.mode": "fp32", "matmul.method": "none"})
    assert cfg.matmul == MatMulQuantConfig() and "matmul" not in cfg.to_dict()  # off: not in the candidate's id
    # a real sampler over the bound space never gives a candidate both
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    cfgs = [space.suggest(study.ask()) for _ in range(60)]
    assert not any(c.quantize.active and c.matmul.active for c in cfgs)
    assert {c.matmul.method for c in cfgs} == {"none", "dynamic", "int4_wo"}


def test_without_a_section_or_before_binding_nothing_is_sampled():
    model, x = conformance_model("transformer")
    space, notes = SearchSpace.from_dict({}).bind(model, x)
    assert not [n for n in notes if n.startswith("matmul")]
    cfg, asked = _asked(space)
    assert cfg.matmul == MatMulQuantConfig() and not [k for k in asked if k.startswith("matmul.")]
    unbound = SearchSpace.from_dict({"matmul": SECTION})  # not bound to a model yet
    cfg, asked = _asked(unbound, {"matmul.method": "dynamic"})
    assert cfg.matmul == MatMulQuantConfig() and not [k for k in asked if k.startswith("matmul.")]
    assert not [k for k in unbound.recipe({}) if k.startswith("matmul.")]


def test_labels_and_words():
    t = technique("matmul")
    cases = {
        MatMulQuantConfig(): ("", ""),
        MatMulQuantConfig("dynamic"): ("dyn8", "int8 dynamic quantization of the MatMul weights (activations quantized at run time)"),
        MatMulQuantConfig("dynamic", reduce_range=True): ("dyn8 rr", "int8 dynamic quantization of the MatMul weights (activations "
                                                                    "quantized at run time, 7-bit weights)"),
        MatMulQuantConfig("int4_wo", block_size=32): ("w4 b32", "4-bit weight-only quantization of the MatMul weights (blocks of 32, "
                                                                "float compute)"),
        MatMulQuantConfig("int4_wo", block_size=64, accuracy_level=4): ("w4 b64 a4", "4-bit weight-only quantization of the MatMul "
                                                                                     "weights (blocks of 64, int8 compute)"),
    }
    for cfg, (label, words) in cases.items():
        candidate = CandidateConfig(matmul=cfg)
        assert (t.label(cfg, candidate), t.explain(cfg, candidate)) == (label, words)
    assert CandidateConfig(matmul=MatMulQuantConfig("dynamic")).describe().endswith("dyn8")
    assert CandidateConfig().describe() == CandidateConfig(matmul=MatMulQuantConfig()).describe()
    cfg = CandidateConfig(matmul=MatMulQuantConfig("int4_wo", block_size=64))
    assert CandidateConfig.from_dict(cfg.to_dict()) == cfg and cfg.float_id == CandidateConfig().float_id  # a graph technique


def test_the_int8_dynamic_recipe_on_a_bert():
    model, example = _bert()
    space, _ = load_space("default").bind(model, example)
    recipes = dict(recipe_trials(space))
    assert list(recipes) == ["int8 teacher", "int8 dynamic teacher", "fused teacher", "fused + int8 dynamic teacher", "prune 50% + KD",
                             "prune 50% + KD + int8"]
    both, _ = _asked(space, recipes["fused + int8 dynamic teacher"])
    assert both.matmul == MatMulQuantConfig("dynamic") and both.fuse.enabled and not both.quantize.active
    cfg, _ = _asked(space, recipes["int8 dynamic teacher"])
    assert cfg.matmul == MatMulQuantConfig("dynamic") and not cfg.quantize.active and cfg.describe().endswith("fp32 · dyn8")
    for name in ("int8 teacher", "prune 50% + KD", "prune 50% + KD + int8"):
        assert _asked(space, recipes[name])[0].matmul == MatMulQuantConfig()
    no_dynamic, _ = SearchSpace.from_dict({"matmul": {"method": ["none", "int4_wo"]}}).bind(model, example)
    assert no_dynamic.recipe({"matmul": {"method": "dynamic"}}) is None


def test_the_structured_search_moves_to_int8_dynamic_when_nothing_is_quantized():
    model, x = conformance_model("transformer")
    space, _ = load_space("default").bind(model, x)
    t, spec = technique("matmul"), space.spec("matmul")
    fp32 = {f"quantize.mode.{i}": "fp32" for i in range(3)}
    [move] = t.stronger(spec, {**fp32, "matmul.method": "none"})
    assert move.whole and move.changes == {"matmul.method": "dynamic"}
    assert t.stronger(spec, {**fp32, "matmul.method": "none"}, scale=1 / 3) == []
    assert t.stronger(spec, {**fp32, "matmul.method": "int4_wo"}) == []
    assert t.stronger(spec, {**fp32, "quantize.mode.1": "int8", "matmul.method": "none"}) == []


def test_bad_sections_and_profiles_are_refused():
    with pytest.raises(ConfigError, match=r"matmul.block_size must be one of \[32, 64, 128\], got 48"):
        SearchSpace.from_dict({"matmul": {"method": "int4_wo", "block_size": [32, 48]}})
    with pytest.raises(ConfigError, match="matmul.accuracy_level takes a value or a list of choices from \\[0, 4\\], not a range"):
        SearchSpace.from_dict({"matmul": {"accuracy_level": {"low": 0, "high": 4}}})
    with pytest.raises(ConfigError, match="matmul.method must be one of"):
        SearchSpace.from_dict({"matmul": {"method": "int8"}})
    from autocompress.hardware import HardwareProfile

    SearchSpace.from_dict({"matmul": SECTION}).check_profile(HardwareProfile(name="cpu"))
    other = HardwareProfile(name="npu", providers=("SomeOtherExecutionProvider",))
    with pytest.raises(ConfigError, match=r"^matmul.method 'dynamic' is not run by SomeOtherExecutionProvider \(profile 'npu'\); "
                                          r"allowed there: \['none'\]$"):
        SearchSpace.from_dict({"matmul": SECTION}).check_profile(other)
    SearchSpace.from_dict({"matmul": {"method": "none"}}).check_profile(other)


def test_a_bert_with_4_bit_matmuls_goes_through_the_pipeline(fast_profile, tmp_path):
    import onnx

    from autocompress.pipeline import build_candidate, prepare
    from autocompress.tasks import load_task

    task = load_task(task=f"{EXAMPLES / 'text_classifier'}.py:task")
    ctx = prepare(task, fast_profile, tmp_path / "run")
    try:
        res = build_candidate(CandidateConfig(matmul=MatMulQuantConfig("int4_wo", block_size=32)), ctx, tmp_path / "c")
    finally:
        ctx.close()
    assert res.ort_only and res.size_bytes < 0.7 * ctx.teacher.size_bytes and 0.5 <= res.val_metric <= 1.0
    ops = {n.op_type for n in onnx.load(str(res.onnx_path)).graph.node}
    assert "MatMulNBits" in ops and "Gemm" in ops  # the pooler and classifier stay float
