"""The heads technique: attention modules found when the space is bound (none on a CNN:
nothing sampled, hand recipes unchanged), a ratio per segment of attention modules, the
structured search's moves, labels, and a BERT built from a config whose candidate without
half its heads is built, fine-tuned, exported and measured by the pipeline."""

from __future__ import annotations

import optuna
import torch

from autocompress.config import CandidateConfig, FinetuneConfig, HeadPruneConfig, MlpPruneConfig
from autocompress.space import SearchSpace
from autocompress.tasks.demo import DigitsResNet
from autocompress.techniques import technique
from autocompress.testing import conformance_model

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples"
SECTION = {"ratio": {"low": 0.0, "high": 0.75, "step": 0.25}, "per": "segment", "segments": 3}


class Asked(optuna.trial.FixedTrial):
    """A FixedTrial that records the names it was asked for."""

    def __init__(self, params):
        super().__init__(params)
        self.asked = []

    def _suggest(self, name, distribution):
        self.asked.append(name)
        return super()._suggest(name, distribution)


def test_a_cnn_has_no_heads_to_sample_and_its_recipes_are_unchanged():
    space, notes = SearchSpace.from_dict({"heads": SECTION}).bind(DigitsResNet(), torch.randn(2, 1, 8, 8))
    assert any(n.startswith("heads: no attention module") for n in notes)
    trial = Asked({})
    assert space.suggest(trial).heads == HeadPruneConfig() and not [n for n in trial.asked if n.startswith("heads.")]
    assert not any(k.startswith("heads.") for k in space.recipe({}))
    assert technique("heads").stronger(space.spec("heads"), {}) == []


def test_an_encoder_samples_a_ratio_per_segment_of_its_attention_modules():
    model, x = conformance_model("transformer")  # 2 attention modules: 3 segments become 2
    space, notes = SearchSpace.from_dict({"heads": SECTION}).bind(model, x[:2])
    assert "heads: 2 attention modules (4 heads)" in notes
    cfg = space.suggest(optuna.trial.FixedTrial({"heads.ratio.0": 0.5, "heads.ratio.1": 0.0})).heads
    assert cfg == HeadPruneConfig(segment_ratios=(0.5, 0.0))
    assert technique("heads").label(cfg, None) == "heads [0.5 0]"
    assert "50%, 0% of the attention heads removed in 2 segments" in technique("heads").explain(cfg, None)
    assert space.recipe({})["heads.ratio.0"] == 0.0
    moves = technique("heads").stronger(space.spec("heads"), {"heads.ratio.0": 0.5, "heads.ratio.1": 0.75})
    assert moves[0].whole and moves[0].changes == {"heads.ratio.0": 0.75}
    pruned = technique("heads").apply(model, cfg, type("Ctx", (), {"example_input": x[:2]})())
    assert [layer.attention.num_heads for layer in pruned.layers] == [2, 4]


def test_a_bert_without_half_its_heads_and_mlp_width_goes_through_the_pipeline(fast_profile, tmp_path):
    import onnxruntime as ort

    from autocompress.pipeline import build_candidate, prepare
    from autocompress.tasks import load_task

    task = load_task(task=f"{EXAMPLES / 'text_classifier'}.py:task")
    ctx = prepare(task, fast_profile, tmp_path / "run")
    try:
        cfg = CandidateConfig(heads=HeadPruneConfig(0.5), mlp=MlpPruneConfig(0.5), finetune=FinetuneConfig(steps=20))
        assert cfg.describe().startswith("heads 0.5 · mlp 0.5")
        res = build_candidate(cfg, ctx, tmp_path / "c")
    finally:
        ctx.close()
    assert res.size_bytes < ctx.teacher.size_bytes and 0.5 <= res.val_metric <= 1.0
    session = ort.InferenceSession(str(res.onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    from autocompress.pipeline import rebuild_student

    student = rebuild_student(task, cfg)  # the architecture is rebuilt exactly for the saved weights
    student.load_state_dict(torch.load(res.state_dict_path, weights_only=True))
    assert student.bert.encoder.layer[0].attention.self.num_attention_heads == 1
