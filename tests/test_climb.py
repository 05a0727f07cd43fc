"""The structured start (autocompress.climb): which trials it asks for after the hand
recipes, given finished trials. Pure logic on a real SearchSpace; trial values are given."""

from __future__ import annotations

import math

import pytest

from autocompress import climb
from autocompress.climb import Done, plan
from autocompress.recipes import KD, recipe_trials
from autocompress.space import SearchSpace

SPACE = SearchSpace.from_dict({
    "prune": {"ratio": {"low": 0.0, "high": 0.8, "step": 0.05}, "per": "segment", "segments": 2, "criterion": ["l1", "l2"]},
    "lowrank": {"rank_ratio": [1.0, 0.5], "per": "global"},
    "finetune": {"steps": [0, 50, 100], "lr": {"low": 3e-4, "high": 3e-3, "log": True}, "qat": [False, True]},
    "distill": {"alpha": {"low": 0.0, "high": 1.0, "step": 0.1}, "temperature": {"low": 1.0, "high": 8.0, "step": 0.5}},
    "quantize": {"mode": ["fp32", "int8"], "activations": ["uint8", "int8"], "format": ["qoperator", "qdq"]},
})


def fine_tune(space=SPACE):
    return {k: v for k, v in space.recipe(KD).items() if k.startswith(("finetune.", "distill."))}


def recipes_done(values):
    """The hand recipes as finished trials with (drop pts, ratio, size) each; lr and qat as
    the sampler would have drawn them."""
    out = []
    for number, ((name, params), (drop, ratio, size)) in enumerate(zip(recipe_trials(SPACE), values)):
        params = dict(params)
        if params.get("finetune.steps", 0) > 0:
            params.update({"finetune.lr": 1e-3, "finetune.qat": False})
        full, _ = climb.complete(SPACE, params, {})
        out.append(Done(number, full, drop, ratio, size, {}))
    return out


def run_plan(done, *, budget=30, started=None, limit=1.0):
    return plan(SPACE, done, limit=limit, budget=budget, started=len(done) if started is None else started, fine_tune=fine_tune())


def as_done(steps, first, values):
    return [Done(first + i, st.params, *v, attrs=st.attrs) for i, (st, v) in enumerate(zip(steps, values))]


RECIPES = [(0.0, 0.35, 700e3), (0.2, 0.34, 690e3), (0.4, 0.18, 180e3)]  # int8 teacher, prune 50% + KD, + int8


def test_the_first_round_moves_every_segment_of_each_technique_from_the_fastest_usable_recipe():
    done = recipes_done(RECIPES)
    steps = run_plan(done)
    assert [s.attrs[climb.WHAT] for s in steps] == ["prune ratio +0.15, every segment", "lower rank", "int8 weights, every segment"][:len(steps)]
    base = done[2].params
    assert all(s.attrs[climb.BASE] == 2 and s.attrs[climb.ROUND] == 1 and s.attrs[climb.MODE] == "whole" for s in steps)
    prune = steps[0].params
    assert prune["prune.ratio.0"] == prune["prune.ratio.1"] == 0.65
    assert {k: v for k, v in prune.items() if not k.startswith("prune.ratio")} == {k: v for k, v in base.items() if not k.startswith("prune.ratio")}
    assert steps[1].params["lowrank.rank_ratio"] == 0.5
    # the base is int8 already: no quantize move; every step is a complete, valid candidate
    assert len(steps) == 2
    for s in steps:
        assert SPACE.config_from_params(s.params).id != SPACE.config_from_params(base).id


def test_nothing_is_planned_without_a_usable_candidate_or_beyond_the_climbs_share_of_the_budget():
    done = recipes_done([(5.0, 0.35, 700e3), (3.0, 0.34, 690e3), (4.0, 0.18, 180e3)])
    assert run_plan(done) == []  # all beyond 1 pt
    assert run_plan(done, limit=5.0)  # within a 5-pt limit the climb starts
    ok = recipes_done(RECIPES)
    assert run_plan(ok, budget=30, started=math.ceil(climb.CLIMB_SHARE * 30)) == []
    started = math.ceil(climb.CLIMB_SHARE * 30) - 1
    assert len(run_plan(ok, budget=30, started=started)) == 1  # one trial left of the climb's share


def test_a_structural_move_from_a_candidate_without_fine_tune_gets_the_recipes_distillation():
    done = recipes_done([(0.0, 0.35, 700e3), (3.0, 0.34, 690e3), (4.0, 0.30, 180e3)])  # only the int8 teacher is usable
    steps = run_plan(done)
    prune = next(s for s in steps if s.attrs[climb.WHAT].startswith("prune"))
    cfg = SPACE.config_from_params(prune.params)
    assert cfg.prune.segment_ratios == (0.15, 0.15) and cfg.finetune.steps == 100
    assert (cfg.distill.alpha, cfg.distill.temperature) == (KD["distill"]["alpha"], KD["distill"]["temperature"])
    assert cfg.quantize.active  # the base's int8 stays


def test_moves_that_pay_are_combined_then_the_climb_goes_on_from_the_best():
    done = recipes_done(RECIPES)
    r1 = run_plan(done)
    done += as_done(r1, 3, [(0.5, 0.12, 100e3), (0.8, 0.16, 150e3)])  # both pay (faster than 0.18), both within 1 pt
    combo, = run_plan(done)
    assert combo.attrs[climb.KIND] == "combo" and combo.attrs[climb.ROUND] == 1
    assert combo.params["prune.ratio.0"] == 0.65 and combo.params["lowrank.rank_ratio"] == 0.5
    done += as_done([combo], 5, [(0.9, 0.10, 90e3)])
    r2 = run_plan(done)
    assert r2 and all(s.attrs[climb.ROUND] == 2 and s.attrs[climb.BASE] == 5 and s.attrs[climb.MODE] == "whole" for s in r2)
    assert r2[0].params["prune.ratio.0"] == 0.8


def test_when_whole_moves_stop_paying_single_segments_move_then_finer_and_then_the_climb_ends():
    done = recipes_done(RECIPES)
    r1 = run_plan(done)
    done += as_done(r1, 3, [(1.5, 0.12, 100e3), (0.5, 0.179, 170e3)])  # too inaccurate; not faster by 2%
    r2 = run_plan(done)
    assert [s.attrs[climb.WHAT] for s in r2] == ["prune ratio +0.15, segment 0", "prune ratio +0.15, segment 1"]
    assert all(s.attrs[climb.MODE] == "parts" and s.attrs[climb.BASE] == 2 for s in r2)
    assert r2[0].params["prune.ratio.0"] == 0.65 and r2[0].params["prune.ratio.1"] == 0.5
    done += as_done(r2, 5, [(2.0, 0.15, 150e3), (None, None, None)])  # one beyond the limit, one failed
    r3 = run_plan(done)  # one segment at a time by a finer step; the lower rank was tried already
    assert [s.attrs[climb.WHAT] for s in r3] == ["prune ratio +0.05, segment 0", "prune ratio +0.05, segment 1"]
    assert all(s.attrs[climb.MODE] == "fine" and s.attrs[climb.ROUND] == 3 for s in r3)
    assert (r3[0].params["prune.ratio.0"], r3[0].params["prune.ratio.1"]) == (0.55, 0.5)
    done += as_done(r3, 7, [(1.2, 0.17, 170e3), (0.9, 0.179, 175e3)])  # beyond the limit; not faster by 2%
    assert run_plan(done) == []


def test_a_move_already_built_is_not_asked_again():
    done = recipes_done(RECIPES)
    r1 = run_plan(done)
    built = [Done(3, r1[0].params, 0.5, 0.2, 200e3, {})]  # the sampler built the prune move already
    again = run_plan(done + built)
    assert [s.attrs[climb.WHAT] for s in again] == [s.attrs[climb.WHAT] for s in r1[1:]]


def test_better_wants_a_real_gain():
    a = Done(0, {}, 0.0, 1.0, 100.0)
    assert climb.better(Done(1, {}, 0.0, 0.97, 100.0), a)
    assert not climb.better(Done(1, {}, 0.0, 0.99, 100.0), a)
    assert climb.better(Done(1, {}, 0.0, 1.01, 89.0), a)  # as fast, much smaller
    assert not climb.better(Done(1, {}, 0.0, 1.05, 50.0), a)  # smaller but slower


@pytest.mark.parametrize("name", ["default", "global"])
def test_the_built_in_spaces_climb_from_their_recipes(name):
    """On the built-in spaces bound to the demo architecture every planned step is a
    candidate of the space, and blocks move one target at a time after a whole move."""
    from autocompress.space import load_space
    from tests.backends.test_trial_sequence import _demo_binding

    space, _ = load_space(name).bind(*_demo_binding())
    recipes = [Done(i, climb.complete(space, {**p, "finetune.lr": 1e-3, "finetune.qat": False}, {})[0], *v, {})
               for i, ((_, p), v) in enumerate(zip(recipe_trials(space), RECIPES))]
    ft = {k: v for k, v in space.recipe(KD).items() if k.startswith(("finetune.", "distill."))}
    steps = plan(space, recipes, limit=1.0, budget=100, started=3, fine_tune=ft)
    whats = [s.attrs[climb.WHAT] for s in steps]
    assert whats[0].startswith("prune ratio +0.15")
    assert ("cheaper blocks, every target" in whats) == (name == "default")
    for s in steps:
        assert space.config_from_params(s.params).finetune.steps > 0


def _fake(cfg):
    """Pruning makes it faster and, beyond 0.6 of the channels, less accurate; int8 faster."""
    import numpy as np

    from autocompress.pipeline import Outcome

    p = float(np.mean(cfg.prune.segment_ratios or (cfg.prune.ratio,)))
    drop = 1.5 if cfg.prune.active and cfg.finetune.steps == 0 else max(0.0, p - 0.6) * 20
    ratio = (1 - 0.7 * p) * (0.6 if cfg.quantize.active else 1.0) * (0.9 if cfg.lowrank.active else 1.0)
    return Outcome((0.97 - drop / 100, ratio, 1e6 * (1 - p)), {"metric_drop": drop})


def test_the_local_backend_climbs_after_the_recipes_and_hands_over_to_the_sampler(tmp_path):
    from autocompress.backends.optuna import OptunaBackend

    budget = 15
    b = OptunaBackend(f"sqlite:///{tmp_path / 's.db'}", SPACE, seed=0, max_acc_drop=10.0, climb_limit=1.0)
    b.open(new=True)
    b.optimize(lambda cfg, n, **kw: _fake(cfg), budget=budget)
    trials = b.study.trials
    assert len(trials) == budget and all(t.state.name == "COMPLETE" for t in trials)
    assert [t.user_attrs.get("recipe") is not None for t in trials[:3]] == [True] * 3
    climbed = [t for t in trials if climb.ROUND in t.user_attrs]
    assert trials[3].user_attrs.get(climb.ROUND) == 1  # the climb starts right after the recipes
    assert 3 <= len(climbed) <= math.ceil(climb.CLIMB_SHARE * budget) - 3
    assert any(climb.ROUND not in t.user_attrs and "recipe" not in t.user_attrs for t in trials)  # the sampler has the rest
    usable = lambda ts: min(t.values[1] for t in ts if t.user_attrs["metric_drop"] <= 1.0)  # noqa: E731
    assert usable(climbed) < 0.98 * usable(trials[:3])  # it found faster usable candidates than the recipes
    # the climb's trials carry what they tried, in trials.csv's records
    rec = b.records()[3]
    assert rec["climb_what"] and rec["climb"] == "move" and rec["climb_base"] == 2



def _block_moves(space, params):
    from autocompress.techniques import technique

    return technique("blocks").stronger(space.spec("blocks"), climb.complete(space, params, {})[0])


def test_a_block_move_warms_the_new_block_up_when_the_space_searches_it():
    from autocompress.space import load_space
    from tests.backends.test_trial_sequence import _demo_binding

    plain, _ = load_space("default").bind(*_demo_binding())
    assert all("blocks.warmup" not in m.changes for m in _block_moves(plain, {}))  # fixed at 0: left alone
    data = plain.to_dict()
    data["blocks"]["warmup"] = [0, 50]
    warm, _ = SearchSpace.from_dict(data).bind(*_demo_binding())
    got = _block_moves(warm, {})  # every block kept
    assert got[0].whole and got[0].changes == {"blocks.layer1": "dwsep_k3", "blocks.layer2": "dwsep_k3", "blocks.layer3": "dwsep_k3",
                                               "blocks.warmup": 50}
    assert [m.changes for m in got[1:]] == [{"blocks.layer1": "dwsep_k3", "blocks.warmup": 50}, {"blocks.layer2": "dwsep_k3", "blocks.warmup": 50},
                                            {"blocks.layer3": "dwsep_k3", "blocks.warmup": 50}]
    skipped = [m.changes for m in _block_moves(warm, {"blocks.layer1": "dwsep_k3", "blocks.warmup": 0})]
    assert {"blocks.layer1": "skip"} in skipped  # nothing to warm up in a skipped block
