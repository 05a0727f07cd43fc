"""Short labels (techniques.short_label): each technique's code, and distinct labels for
distinct candidates sampled from real spaces bound to real models."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest

from autocompress.config import CandidateConfig
from autocompress.techniques import short_label, techniques
from autocompress.techniques.blocks import BlockConfig
from autocompress.techniques.distill import DistillConfig
from autocompress.techniques.finetune import FinetuneConfig
from autocompress.techniques.fuse import FuseConfig
from autocompress.techniques.heads import HeadPruneConfig
from autocompress.techniques.layers import LayerDropConfig
from autocompress.techniques.lowrank import LowRankConfig
from autocompress.techniques.matmul import MatMulQuantConfig
from autocompress.techniques.mlp import MlpPruneConfig
from autocompress.techniques.prune import PruneConfig
from autocompress.techniques.quantize import QuantizeConfig
from tests.helpers import FIXTURES


@pytest.mark.parametrize("cfg, label", [
    (CandidateConfig(), "none"),
    (CandidateConfig(prune=PruneConfig(0.5)), "p.5"),
    (CandidateConfig(prune=PruneConfig(segment_ratios=(0.5, 0.3, 0.0), criterion="l2", round_to=8)), "p.5,.3,0_l2_x8"),
    (CandidateConfig(prune=PruneConfig(segment_ratios=(0.5, 0.5, 0.5), criterion="act_mean")), "p.5_am"),  # the same model as 0.5
    (CandidateConfig(lowrank=LowRankConfig(segment_ratios=(1.0, 0.5, 0.25))), "r1,.5,.25"),
    (CandidateConfig(finetune=FinetuneConfig(150, qat=True), distill=DistillConfig(0.7, 4.0), quantize=QuantizeConfig("int8", "uint8", "qdq")),
     "ft150_qat kd.7_T4 q8_qdq"),
    (CandidateConfig(quantize=QuantizeConfig(segment_bits=("int8", "int8", "fp32"), activations="int8", format="qoperator", calibration="entropy")),
     "q88f_s8_ent"),
    (CandidateConfig(quantize=QuantizeConfig(segment_bits=("int4", "int8"), activations="uint8", format="qdq", calibration="percentile")),
     "q48_pct"),  # 4-bit weights are always QDQ
    (CandidateConfig(blocks=BlockConfig((("layer1", "skip"), ("layer2", "mbconv_e3_k5"), ("layer3", "dwsep_k3")), 100)),
     "b1:sk,2:mb3k5,3:dw3_w100"),
    (CandidateConfig(layers=LayerDropConfig(("encoder.layer.3", "encoder.layer.5")), heads=HeadPruneConfig(0.5),
                     mlp=MlpPruneConfig(segment_ratios=(0.8, 0.0), round_to=8)), "h.5 m.8,0_x8 L-3,5"),  # pipeline order
    (CandidateConfig(matmul=MatMulQuantConfig("int4_wo", block_size=32), fuse=FuseConfig(True)), "fz w4b32"),
    (CandidateConfig(matmul=MatMulQuantConfig("dynamic", reduce_range=True), fuse=FuseConfig(True, layer_norm=True)), "fz_ln dyn8_rr"),
])
def test_each_technique_has_a_short_code(cfg, label):
    assert short_label(cfg) == label


def test_every_technique_codes_its_examples_without_spaces_and_nothing_when_off():
    for t in techniques():
        assert t.code(t.off, CandidateConfig()) == "", t.name
        for example in t.examples():
            cfg, others = example if isinstance(example, tuple) else (example, {})
            code = t.code(cfg, CandidateConfig(**{t.name: cfg, **others}))
            assert " " not in code, (t.name, code)
            assert bool(code) == t.is_active(cfg), (t.name, cfg, code)


def _without_optimiser(cfg: CandidateConfig) -> str:
    """The candidate's id but for the fine-tune's learning rate and batch size (not in a label)."""
    return cfg.replace(finetune=replace(cfg.finetune, lr=0.0, batch_size=0)).id


def _others(dist, value) -> list:
    """Other values a trial parameter could take: every other choice, a range's neighbours."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return [c for c in dist.choices if c != value]
    step = dist.step or (dist.high - dist.low) / 7
    return [v for v in (value - step, value + step) if dist.low - 1e-12 <= v <= dist.high + 1e-12]


@pytest.mark.parametrize("space_name, model_kind", [("default", "demo"), (str(FIXTURES / "space_rich.yaml"), "demo"), ("default", "transformer")])
def test_candidates_one_parameter_apart_get_distinct_labels(space_name, model_kind):
    """Sampled candidates, and each with one trial parameter changed: where the candidate
    changes (but for the fine-tune's optimiser), so does its label."""
    from autocompress.errors import ConfigError
    from autocompress.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if model_kind == "demo":
        from tests.backends.test_trial_sequence import _demo_binding

        model, x = _demo_binding()
    else:
        from autocompress.testing import conformance_model

        model, x = conformance_model("transformer")
    space, _ = load_space(space_name).bind(model, x)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7), directions=["maximize", "minimize", "minimize"])
    labels, compared, codes = set(), 0, set()
    for _ in range(40):
        trial = study.ask()
        cfg = space.suggest(trial)
        label, key = short_label(cfg), _without_optimiser(cfg)
        labels.add(label)
        codes |= {code[:2] for code in label.split()}
        for name, value in trial.params.items():
            if name in ("finetune.lr", "finetune.batch_size"):
                continue
            for other in _others(trial.distributions[name], value):
                try:
                    near = space.config_from_params({**trial.params, name: other})
                except ConfigError:  # the change needs parameters the trial did not sample (e.g. a fine-tune's)
                    continue
                if _without_optimiser(near) != key:
                    compared += 1
                    assert short_label(near) != label, (name, value, other, label)
    assert len(labels) >= 35 and compared > 200
    if model_kind == "transformer":  # its own techniques were sampled and coded
        assert {"h.", "m.", "L-"} <= codes
