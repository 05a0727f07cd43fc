"""The fuse technique: bound to the model (a CNN has no attention module: nothing sampled,
a note; a BERT: searched), sampled, labelled and explained; applied with the candidate's
model, whose head count it reads, recording what was fused; and a BERT candidate through
the pipeline, its fused file scoring what the teacher scores, the fused operators on the
trial."""

from __future__ import annotations

import optuna
import torch

from autocompress.config import CandidateConfig, FinetuneConfig, FuseConfig, QuantizeConfig
from autocompress.space import SearchSpace, load_space
from autocompress.tasks.demo import DigitsResNet
from autocompress.techniques import technique

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples"
SECTION = {"enabled": [False, True]}


def _bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)).eval()
    return model, {"input_ids": torch.randint(1, 50, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.int64)}


def test_a_cnn_samples_nothing_and_says_why():
    space, notes = load_space("default").bind(DigitsResNet(), torch.zeros(2, 1, 8, 8))
    assert "fuse: no attention module (query/key/value Linear layers) found; ONNX Runtime's transformer fusion is not searched" in notes
    assert not any(n.startswith("fuse") for n in space.searched())
    assert technique("fuse").recipe_off(space.spec("fuse")) == {}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        assert space.suggest(trial).fuse == FuseConfig() and not any(k.startswith("fuse.") for k in trial.params)
        study.tell(trial, 0.0)
    assert not any(k.startswith("fuse") for k in space.recipe({}))


def test_a_bert_is_searched_labelled_and_explained():
    model, example = _bert()
    space, notes = SearchSpace.from_dict({"fuse": SECTION}).bind(model, example)
    assert "fuse: 2 attention modules (2 heads each); ONNX Runtime's transformer fusion is searched" in notes
    assert space.searched() == ["fuse.enabled"]
    cfg = space.suggest(optuna.trial.FixedTrial({"fuse.enabled": True}))
    assert cfg.fuse == FuseConfig(True) and cfg.fuse.active and "fused" in cfg.describe().split(" · ")
    assert "Attention and bias+GELU fused" in cfg.explain()
    assert space.suggest(optuna.trial.FixedTrial({"fuse.enabled": False})).fuse == FuseConfig()
    assert technique("fuse").recipe_off(space.spec("fuse")) == {"enabled": False}
    assert space.recipe({})["fuse.enabled"] is False  # hand recipes do not fuse

    both, _ = SearchSpace.from_dict({"fuse": {"enabled": True, "layer_norm": [False, True]}}).bind(model, example)
    cfg = both.suggest(optuna.trial.FixedTrial({"fuse.layer_norm": True}))
    assert cfg.fuse == FuseConfig(True, True) and "fused+ln" in cfg.describe().split(" · ") and "residual+LayerNorm" in cfg.explain()

    assert SearchSpace.from_dict({"fuse": SECTION}).suggest(optuna.trial.FixedTrial({})).fuse == FuseConfig()  # unbound: nothing
    assert SearchSpace.from_dict({}).bind(model, example)[0].suggest(optuna.trial.FixedTrial({})).fuse == FuseConfig()  # no section
    # Off, the technique is not part of a candidate's id (ids of runs before it stay valid).
    assert "fuse" not in CandidateConfig().to_dict() and CandidateConfig(fuse=FuseConfig(True)).to_dict()["fuse"] == {"enabled": True,
                                                                                                                      "layer_norm": False}
    assert CandidateConfig(fuse=FuseConfig(True)).float_id == CandidateConfig().float_id  # fine-tuned models are shared


def test_apply_reads_the_head_count_of_the_candidate_s_model_and_records_what_it_fused(tmp_path):
    from autocompress.export import GraphContext, export_onnx

    model, example = _bert()
    src = export_onnx(model, example, tmp_path / "in.onnx")
    record: dict = {}
    ctx = GraphContext(calibration=None, input_shape=None, dst=tmp_path / "out.onnx", model=model, record=record)
    out = technique("fuse").apply(src, FuseConfig(True), ctx)
    assert out == tmp_path / "out.onnx" and record == {"fused_ops": "Attention 2, BiasGelu 2", "fused_num_heads": 2}
    record.clear()  # without a model: the head count from the graph only, which a Hugging Face graph does not state
    technique("fuse").apply(src, FuseConfig(True, layer_norm=True), GraphContext(None, None, tmp_path / "out2.onnx", record=record))
    assert record == {"fused_ops": "BiasGelu 2, SkipLayerNormalization 4", "fused_num_heads": 0}


def test_a_fused_bert_candidate_goes_through_the_pipeline(fast_profile, tmp_path):
    from autocompress.pipeline import evaluate_candidate, prepare
    from autocompress.tasks import load_task

    task = load_task(task=f"{EXAMPLES / 'text_classifier'}.py:task")
    ctx = prepare(task, fast_profile, tmp_path / "run")
    try:
        fused = evaluate_candidate(CandidateConfig(fuse=FuseConfig(True), finetune=FinetuneConfig(steps=0)), 0, ctx, tmp_path, seed=0)
        both = evaluate_candidate(CandidateConfig(fuse=FuseConfig(True), quantize=QuantizeConfig("int8", "uint8", "qoperator"),
                                                  finetune=FinetuneConfig(steps=0)), 1, ctx, tmp_path, seed=0)
    finally:
        ctx.close()
    base = ctx.teacher.baselines["fused"]  # the fused fp32 teacher, measured by prepare: every table compares with it too
    assert base["fused_ops"] == "Attention 2, BiasGelu 2" and base["onnx"] == "teacher/model.fused.onnx" and 0 < base["latency_ratio"] < 2
    assert base["val_metric"] == ctx.teacher.val_metric and (tmp_path / "run" / base["onnx"]).is_file()
    assert fused.attrs["fused_ops"] == "Attention 2, BiasGelu 2" and fused.attrs["fused_num_heads"] == 2
    assert fused.attrs["ort_only"] is True and fused.attrs["val_metric"] == ctx.teacher.val_metric  # the teacher's file, fused
    assert both.attrs["fused_ops"] == "Attention 2, BiasGelu 2" and 0.5 <= both.attrs["val_metric"] <= 1.0
    assert {p.name for p in (tmp_path / "trials" / "1").iterdir()} >= {"model.onnx"}
    assert not (tmp_path / "trials" / "1" / "model.fuse.onnx").exists()  # the intermediate file is removed
