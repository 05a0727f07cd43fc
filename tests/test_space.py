"""Search spaces: validation on load, sampling through a real Optuna trial, recipes."""

from __future__ import annotations

import optuna
import pytest

from autocompress.config import CandidateConfig, QuantizeConfig
from autocompress.errors import ConfigError
from autocompress.space import Choice, Fixed, Range, SearchSpace, load_space, resolve_space_path, schema

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------- loading


def test_global_space_loads_and_searches_the_documented_parameters():
    space = load_space("global")
    assert set(space.params) == {f"{s}.{k}" for s, keys in schema().items() for k in keys} | {"blocks.warmup"}
    assert space.params["prune.ratio"] == Range(float, 0.0, 0.8, 0.05, False)
    assert space.params["finetune.steps"] == Choice((0, 50, 100, 150))
    assert space.params["finetune.lr"] == Range(float, 3e-4, 3e-3, None, True)
    assert space.params["finetune.batch_size"] == Fixed(64)
    assert space.params["quantize.mode"] == Choice(("fp32", "int8"))
    assert "finetune.batch_size" not in space.searched()
    assert "prune.ratio" in space.searched()


def test_missing_keys_take_schema_defaults():
    space = SearchSpace.from_dict({})
    for section, keys in schema().items():
        for key, spec in keys.items():
            assert space.params[f"{section}.{key}"] == Fixed(spec.default)
    assert space.searched() == []
    assert SearchSpace.from_dict(None).params == space.params


@pytest.mark.parametrize(
    "raw, expected",
    [
        (0.5, Fixed(0.5)),
        (0, Fixed(0.0)),  # ints are accepted for float keys
        ([0.25], Fixed(0.25)),  # a one-element list is just a fixed value
        ([0.0, 0.5], Choice((0.0, 0.5))),
        ({"low": 0.1, "high": 0.1}, Fixed(0.1)),
        ({"low": 0.1, "high": 0.5}, Range(float, 0.1, 0.5)),
        ({"low": 0.1, "high": 0.5, "step": 0.1}, Range(float, 0.1, 0.5, 0.1)),
        ({"low": 0.1, "high": 0.5, "log": True}, Range(float, 0.1, 0.5, None, True)),
    ],
)
def test_param_forms(raw, expected):
    assert SearchSpace.from_dict({"prune": {"ratio": raw}}).params["prune.ratio"] == expected


def test_int_keys_parse_as_ints():
    space = SearchSpace.from_dict({"finetune": {"steps": {"low": 0, "high": 100, "step": 10}, "batch_size": 32.0}})
    steps = space.params["finetune.steps"]
    assert isinstance(steps, Range) and steps.kind is int
    assert space.params["finetune.batch_size"] == Fixed(32)
    assert isinstance(space.params["finetune.batch_size"].value, int)


@pytest.mark.parametrize(
    "data, fragments",
    [
        ({"prunning": {"ratio": 0.5}}, ["unknown search-space section", "prunning"]),
        ({"prune": {"rate": 0.5}}, ["unknown key prune.rate"]),
        ({"quantize": {"bits": 8}}, ["unknown key quantize.bits"]),
        ({"prune": {"ratio": "half"}}, ["prune.ratio must be a number", "'half'"]),
        ({"finetune": {"steps": True}}, ["finetune.steps must be a number", "True"]),
        ({"finetune": {"steps": 1.5}}, ["finetune.steps must be an integer", "1.5"]),
        ({"quantize": {"mode": "int2"}}, ["quantize.mode must be one of", "'int2'"]),
        ({"quantize": {"mode": ["int8", "int4"], "format": "qoperator"}}, ["int4", "quantize.format qdq"]),
        ({"quantize": {"mode": 8}}, ["quantize.mode must be one of", "8"]),
        ({"prune": {"ratio": 0.99}}, ["prune.ratio must be in [0, 0.95]", "0.99"]),
        ({"prune": {"ratio": -0.1}}, ["prune.ratio must be in", "-0.1"]),
        ({"prune": {"ratio": float("nan")}}, ["prune.ratio must be finite"]),
        ({"finetune": {"lr": 0}}, ["finetune.lr must be in (0, 1]", "0"]),
        ({"distill": {"temperature": 0.0}}, ["distill.temperature must be in (0, 100]"]),
        ({"finetune": {"batch_size": 0}}, ["finetune.batch_size must be in [1, 4096]"]),
        ({"prune": {"ratio": [0.1, 2.0]}}, ["prune.ratio must be in", "2.0"]),
        ({"prune": {"ratio": {"low": 0.5, "high": 0.2}}}, ["prune.ratio.low must be <= prune.ratio.high", "0.5", "0.2"]),
        ({"prune": {"ratio": {"low": 0.0, "high": 1.5}}}, ["prune.ratio.high must be in", "1.5"]),
        ({"prune": {"ratio": {"low": 0.0, "high": 0.5, "log": True}}}, ["prune.ratio.low must be > 0 for a log range"]),
        ({"finetune": {"lr": {"low": 1e-4, "high": 1e-2, "step": 1e-3, "log": True}}}, ["finetune.lr cannot have both step and log"]),
        ({"prune": {"ratio": {"low": 0.1, "high": 0.5, "log": "yes"}}}, ["prune.ratio.log must be true or false"]),
        ({"prune": {"ratio": {"low": 0.1, "high": 0.5, "step": 0}}}, ["prune.ratio.step must be a positive number"]),
        ({"finetune": {"steps": {"low": 0, "high": 10, "step": 2.5}}}, ["finetune.steps.step must be an integer"]),
        ({"prune": {"ratio": {"low": 0.1}}}, ["prune.ratio range needs both low and high"]),
        ({"prune": {"ratio": {"low": 0.1, "high": 0.5, "by": 2}}}, ["prune.ratio has unknown range key(s)", "by"]),
        ({"quantize": {"mode": {"low": 0, "high": 1}}}, ["quantize.mode takes a value or a list of choices"]),
        ({"quantize": {"mode": []}}, ["quantize.mode must list at least one choice"]),
        ({"finetune": {"steps": [0, 10, 10]}}, ["finetune.steps lists a choice twice"]),
        ({"prune": 3}, ["prune must be a mapping"]),
        ([1, 2], ["search space must be a mapping"]),
    ],
)
def test_invalid_spaces_raise_config_error_naming_key_and_value(data, fragments):
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_dict(data)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("body", [0, [], ""])
def test_falsy_non_mapping_section_is_rejected(body):
    with pytest.raises(ConfigError, match="prune must be a mapping"):
        SearchSpace.from_dict({"prune": body})


def test_errors_from_a_file_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("prune:\n  ratio: 1.5\n")
    with pytest.raises(ConfigError) as info:
        load_space(str(path))
    assert "prune.ratio" in str(info.value) and "1.5" in str(info.value) and str(path) in str(info.value)


def test_load_space_rejects_invalid_yaml_unknown_names_and_missing_files(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("prune: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_space(str(bad))
    with pytest.raises(ConfigError, match=r"unknown search space 'no-such-space'.*default"):
        load_space("no-such-space")
    with pytest.raises(ConfigError, match="no such file"):
        load_space(str(tmp_path / "missing.yaml"))
    assert resolve_space_path("default").name == "default.yaml"


def test_to_dict_round_trips_and_fingerprint_tracks_content():
    space = load_space("global")
    again = SearchSpace.from_dict(space.to_dict())
    assert again.params == space.params
    assert again.fingerprint == space.fingerprint
    changed = space.to_dict()
    changed["finetune"]["steps"] = [0, 50]
    assert SearchSpace.from_dict(changed).fingerprint != space.fingerprint


# --------------------------------------------------------------------------- sampling


def _sample(space: SearchSpace, n: int, seed: int = 0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        cfg = space.suggest(trial)
        out.append((cfg, dict(trial.params)))
        study.tell(trial, 0.0)
    return out


def test_suggest_yields_configs_inside_the_space():
    space = load_space("global")
    p = space.params
    samples = _sample(space, 150)
    for cfg, _ in samples:
        assert isinstance(cfg, CandidateConfig)
        assert p["prune.ratio"].contains(cfg.prune.ratio)
        assert p["finetune.steps"].contains(cfg.finetune.steps)
        assert p["quantize.mode"].contains(cfg.quantize.mode)
        if cfg.finetune.steps > 0:
            assert p["finetune.lr"].contains(cfg.finetune.lr)
            assert cfg.finetune.batch_size == 64
            assert p["distill.alpha"].contains(cfg.distill.alpha)
            assert p["distill.temperature"].contains(cfg.distill.temperature)
        if cfg.quantize.mode == "int8":
            assert cfg.quantize.activations in ("uint8", "int8")
            assert cfg.quantize.format in ("qoperator", "qdq")
    # the stepped value comes back rounded onto its grid (0.7, not 0.7000000000000001)
    assert all(round(cfg.prune.ratio / 0.05, 9).is_integer() and len(repr(cfg.prune.ratio)) <= 5 for cfg, _ in samples)
    # both branches of every condition were exercised
    assert {cfg.finetune.steps > 0 for cfg, _ in samples} == {True, False}
    assert {cfg.quantize.mode for cfg, _ in samples} == {"fp32", "int8"}


def test_conditional_parameters_are_sampled_only_when_they_matter():
    space = load_space("global")
    for cfg, params in _sample(space, 150, seed=1):
        kd_keys = {"finetune.lr", "distill.alpha", "distill.temperature"}
        q_keys = {"quantize.activations", "quantize.format"}
        if cfg.finetune.steps == 0:
            assert cfg.distill is None
            assert not kd_keys & set(params)
            assert cfg.finetune.lr == 0.0 and cfg.finetune.batch_size == 0
        else:
            assert kd_keys <= set(params)
        if cfg.quantize.mode == "fp32":
            assert cfg.quantize.activations is None and cfg.quantize.format is None
            assert not q_keys & set(params)
        else:
            assert q_keys <= set(params)
        assert "finetune.batch_size" not in params  # fixed: never asked of the sampler


def test_config_from_params_rebuilds_the_sampled_config():
    space = load_space("global")
    for cfg, params in _sample(space, 60, seed=2):
        rebuilt = space.config_from_params(params)
        assert rebuilt == cfg
        assert rebuilt.id == cfg.id
    with pytest.raises(ConfigError, match="lacks parameter 'prune.ratio'"):
        space.config_from_params({})


def test_fixed_space_always_gives_the_same_candidate():
    space = SearchSpace.from_dict({"prune": {"ratio": 0.3}, "finetune": {"steps": 10}, "quantize": {"mode": "int8"}})
    configs = {cfg for cfg, _ in _sample(space, 5)}
    assert len(configs) == 1
    (cfg,) = configs
    assert cfg.prune.ratio == 0.3 and cfg.finetune.steps == 10 and cfg.distill is not None
    assert cfg.quantize.activations == "uint8" and cfg.quantize.format == "qoperator"  # schema defaults


# --------------------------------------------------------------------------- recipes


def test_recipe_snaps_ranges_onto_their_grid_and_switches_everything_else_off():
    space = SearchSpace.from_dict(
        {"prune": {"ratio": {"low": 0.0, "high": 0.8, "step": 0.05}}, "finetune": {"steps": {"low": 0, "high": 100, "step": 10}}}
    )
    assert space.recipe({"prune": {"ratio": 0.52}}) == {"prune.ratio": 0.5, "finetune.steps": 0}  # no fine-tune: it is off
    assert space.recipe({"prune": {"ratio": 0.93}})["prune.ratio"] == 0.8  # clamped to high
    out = space.recipe({"finetune": {"steps": 47}})
    assert out == {"prune.ratio": 0.0, "finetune.steps": 50} and isinstance(out["finetune.steps"], int)
    assert space.recipe({"finetune": {"steps": "max"}})["finetune.steps"] == 100
    assert Range(float, 0.1, 0.9, 0.2).snap(0.42) == pytest.approx(0.5)
    assert Range(float, 0.1, 0.9, None).snap(5.0) == 0.9


def test_recipe_choices_pick_the_first_allowed_option():
    space = load_space("global")
    out = space.recipe({"quantize": {"mode": "int8", "activations": ["uint8", "int8"], "format": ["qoperator", "qdq"]}})
    assert out == {"prune.ratio": 0.0, "finetune.steps": 0, "quantize.mode": "int8", "quantize.activations": "uint8",
                   "quantize.format": "qoperator"}
    only_int8 = SearchSpace.from_dict({"quantize": {"mode": ["fp32", "int8"], "activations": ["int8", "uint8"], "format": ["qdq", "qoperator"]}})
    assert only_int8.recipe({"quantize": {"activations": ["int4", "int8"]}}) == {"quantize.activations": "int8"}


def test_recipe_is_dropped_when_the_space_cannot_express_it():
    # a choice without the wanted value
    assert load_space("default").recipe({"finetune": {"steps": 400}}) is None
    # pruning off (ratio 0) where the ratio would snap to a non-zero one; the same for a fine-tune that cannot be off
    assert SearchSpace.from_dict({"prune": {"ratio": {"low": 0.2, "high": 0.6}}}).recipe({}) is None
    assert SearchSpace.from_dict({"finetune": {"steps": {"low": 10, "high": 100}}}).recipe({"quantize": {"mode": "int8"}}) is None
    # a fixed parameter that contradicts what defines the recipe
    assert SearchSpace.from_dict({"quantize": {"mode": "fp32"}}).recipe({"quantize": {"mode": "int8"}}) is None
    assert SearchSpace.from_dict({"prune": {"ratio": 0.0}}).recipe({"prune": {"ratio": 0.5}}) is None


def test_recipe_ignores_fixed_parameters_that_do_not_define_it():
    space = SearchSpace.from_dict({"prune": {"ratio": [0.0, 0.5]}, "distill": {"alpha": 0.3}})
    assert space.recipe({"prune": {"ratio": 0.5}, "distill": {"alpha": 0.5}}) == {"prune.ratio": 0.5}
    # a fixed value that agrees with a defining key is fine and not enqueued
    assert space.recipe({}) == {"prune.ratio": 0.0}
    # low rank is not strict: a space whose rank ratio cannot be 1 keeps its recipes, with its rank
    assert SearchSpace.from_dict({"lowrank": {"rank_ratio": 0.5}}).recipe({}) == {}


# --------------------------------------------------------------------------- segments and settings


def test_default_space_searches_every_technique_per_segment():
    space = load_space("default")
    for section in ("prune", "lowrank", "quantize"):
        assert space.settings_for(section).per == "segment" and space.settings_for(section).segments == 3
    assert space.params["prune.criterion"] == Choice(("l1", "l2", "act_mean", "act_zero"))
    assert space.params["quantize.mode"] == Choice(("fp32", "int8", "int4"))
    assert space.params["lowrank.rank_ratio"] == Choice((1.0, 0.75, 0.5, 0.25))
    again = SearchSpace.from_dict(space.to_dict())
    assert again.fingerprint == space.fingerprint and again.specs == space.specs


def test_segmented_suggest_samples_one_value_per_segment():
    space = load_space("default")
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    seen_int4 = False
    for _ in range(60):
        trial = study.ask()
        cfg = space.suggest(trial)
        assert cfg.prune.segment_ratios is not None and len(cfg.prune.segment_ratios) == 3
        assert {f"prune.ratio.{i}" for i in range(3)} <= set(trial.params)
        assert {f"quantize.mode.{i}" for i in range(3)} <= set(trial.params)
        assert "prune.ratio" not in trial.params
        if cfg.prune.active:
            assert cfg.prune.criterion == trial.params["prune.criterion"]
        else:
            assert "prune.criterion" not in trial.params
        if cfg.quantize.active:
            assert cfg.quantize.segment_bits == tuple(trial.params[f"quantize.mode.{i}"] for i in range(3))
            if "int4" in cfg.quantize.segment_bits:
                seen_int4 = True
                assert cfg.quantize.format == "qdq" and "quantize.format" not in trial.params
        else:
            assert cfg.quantize == QuantizeConfig() and "quantize.activations" not in trial.params
        if "finetune.qat" in trial.params:
            assert cfg.quantize.active and cfg.finetune.steps > 0 and cfg.finetune.qat == trial.params["finetune.qat"]
        else:
            assert cfg.finetune.qat is False
        assert space.config_from_params(trial.params) == cfg
        study.tell(trial, [0.0, 1.0, 1.0])
    assert seen_int4


def test_recipes_fill_every_segment():
    space = load_space("default")
    got = space.recipe({"prune": {"ratio": 0.5}, "quantize": {"mode": "int8"}})
    assert got == {**{f"prune.ratio.{i}": 0.5 for i in range(3)}, **{f"quantize.mode.{i}": "int8" for i in range(3)},
                   **{f"lowrank.rank_ratio.{i}": 1.0 for i in range(3)}, "finetune.steps": 0}  # low rank and fine-tune off


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"prune": {"per": "layer"}}, "prune.per must be one of ['global', 'segment'], got 'layer'"),
        ({"prune": {"segments": 0}}, "prune.segments must be an integer in [1, 16], got 0"),
        ({"lowrank": {"exclude": "fc"}}, "lowrank.exclude must be a list of module names, got 'fc'"),
        ({"quantize": {"exclude": ["fc"]}}, "unknown key quantize.exclude"),
        ({"lowrank": {"rank_ratio": 0}}, "lowrank.rank_ratio must be in (0, 1], got 0"),
        ({"prune": {"round_to": 0}}, "prune.round_to must be in [1, 256], got 0"),
        ({"quantize": {"calibration": "kl"}}, "quantize.calibration must be one of"),
    ],
)
def test_bad_settings_are_rejected(data, fragment):
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_dict(data)
    assert fragment in str(info.value)


def test_exclude_names_are_checked_against_the_model():
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    x = torch.zeros(2, 1, 8, 8)
    SearchSpace.from_dict({"prune": {"exclude": ["0"]}}).bind(model, x)
    with pytest.raises(ConfigError, match="prune.exclude names 'conv1', which is not a module of the model"):
        SearchSpace.from_dict({"prune": {"exclude": ["conv1"]}}).bind(model, x)
    with pytest.raises(ConfigError, match="lowrank.exclude names 'fc'"):
        SearchSpace.from_dict({"lowrank": {"exclude": ["fc"]}}).bind(model, x)


def test_bit_widths_are_checked_against_the_profile_provider():
    from autocompress.hardware import HardwareProfile, supported_bits
    cpu = HardwareProfile(name="cpu")
    assert supported_bits(cpu) == ("fp32", "int8", "int4")
    load_space("default").check_profile(cpu)
    other = HardwareProfile(name="npu", providers=("SomeOtherExecutionProvider",))
    with pytest.raises(ConfigError, match="quantize.mode 'int4' is not run by SomeOtherExecutionProvider .profile 'npu'.; allowed there: \\['fp32'\\]"):
        load_space("default").check_profile(other)
    SearchSpace.from_dict({"quantize": {"mode": "fp32"}}).check_profile(other)


# --------------------------------------------------------------------------- blocks


@pytest.mark.parametrize(
    "blocks, fragment",
    [
        ({"targets": "some"}, "blocks.targets must be 'auto' or a list of module names"),
        ({"choices": ["keep", "mbconv_e6"]}, "blocks.choices: unknown block 'mbconv_e6'"),
        ({"choices": []}, "blocks.choices must be a non-empty list"),
        ({"choices": ["keep", "keep"]}, "blocks.choices lists a block twice"),
        ({"where": "auto"}, "unknown key blocks.where"),
        ({"warmup": -5}, "blocks.warmup must be in [0, 100000], got -5"),
        ({"warmup": [0, 1.5]}, "blocks.warmup must be an integer, got 1.5"),
        ({"targets": ["layer1", "warmup"]}, "a target may not be named 'warmup'"),
    ],
)
def test_bad_blocks_sections_are_rejected(blocks, fragment):
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_dict({"blocks": blocks})
    assert fragment in str(info.value)


def test_blocks_bind_to_the_model_and_exclude_impossible_choices_visibly(tiny_task):
    space = SearchSpace.from_dict({"blocks": {"targets": "auto", "choices": ["keep", "skip", "mbconv_e3_k3"]}})
    assert SearchSpace.from_dict(space.to_dict()).fingerprint == space.fingerprint
    bound, notes = space.bind(tiny_task.teacher, tiny_task.train.x[:2])
    assert bound.spec("blocks").extra.bound == (("block1", ("keep", "skip", "mbconv_e3_k3")), ("block2", ("keep", "mbconv_e3_k3")))
    assert notes[0] == "blocks: targets block1, block2"
    assert any(n.startswith("blocks: skip excluded for block2 (skip cannot map 8 -> 16 channels at stride 2") for n in notes)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        cfg = bound.suggest(trial)
        assert dict(cfg.blocks.choices).get("block1", "keep") == trial.params["blocks.block1"]
        assert "keep" not in dict(cfg.blocks.choices).values()
        seen.add(trial.params["blocks.block2"])
        assert bound.config_from_params(trial.params) == cfg
        study.tell(trial, [0.0, 1.0, 1.0])
    assert seen == {"keep", "mbconv_e3_k3"}


def test_block_warmup_is_sampled_only_when_a_trainable_block_is_substituted(tiny_task):
    plain = SearchSpace.from_dict({"blocks": {"choices": ["keep", "skip"]}})
    assert "warmup" not in plain.to_dict()["blocks"]  # absent means 0: older runs keep their fingerprint
    space = SearchSpace.from_dict({"blocks": {"choices": ["keep", "skip", "mbconv_e3_k3"], "warmup": [0, 100]}})
    assert space.to_dict()["blocks"]["warmup"] == [0, 100]
    assert SearchSpace.from_dict(space.to_dict()).fingerprint == space.fingerprint != plain.fingerprint
    bound, _ = space.bind(tiny_task.teacher, tiny_task.train.x[:2])
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        cfg = bound.suggest(trial)
        trainable = any(name != "skip" for _, name in cfg.blocks.choices)
        assert ("blocks.warmup" in trial.params) == trainable
        assert cfg.blocks.warmup_steps == trial.params.get("blocks.warmup", 0)
        assert bound.config_from_params(trial.params) == cfg
        seen.add((trainable, cfg.blocks.warmup_steps))
        study.tell(trial, [0.0, 1.0, 1.0])
    assert {(True, 0), (True, 100), (False, 0)} <= seen
