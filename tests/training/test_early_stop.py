"""Early stopping of a fine-tune (training.early_stop): when the metric is read and when the
fine-tune ends."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autocompress.data.split import TensorSplit
from autocompress.training import distill_
from autocompress.training.early_stop import EarlyStop, Plateau
from autocompress.training.plan import TrainPlan


def feed(plateau: Plateau, values: dict[int, float], steps: int) -> tuple[int, list[int]]:
    """Run `steps` steps with the metric `values[step]`; (the step it stopped at, the steps read)."""
    read = []

    def metric_at(step):
        def metric():
            read.append(step)
            return values[step]
        return metric

    for step in range(1, steps + 1):
        if plateau.should_stop(step, metric_at(step)):
            return step, read
    return steps, read


def test_the_metric_is_read_every_few_steps_after_the_warm_up_only():
    rule = EarlyStop(every=10, patience=3, warmup=0.3)
    stopped, read = feed(Plateau(rule, 100), {s: s / 100 for s in range(1, 101)}, 100)  # always improving
    assert stopped == 100 and read == [30, 40, 50, 60, 70, 80, 90, 100]


def test_it_stops_after_patience_checks_without_a_gain():
    rule = EarlyStop(every=10, patience=3, min_delta=0.01, warmup=0.0)
    values = {s: min(s, 40) / 100 for s in range(1, 151)}  # flat from step 40
    stopped, read = feed(Plateau(rule, 150), values, 150)
    assert stopped == 70 and read == [10, 20, 30, 40, 50, 60, 70]


def test_a_gain_below_min_delta_is_none_and_a_real_gain_resets_the_count():
    rule = EarlyStop(every=10, patience=2, min_delta=0.01, warmup=0.0)
    values = {10: 0.5, 20: 0.505, 30: 0.6, 40: 0.6, 50: 0.6, 60: 0.9}
    stopped, _ = feed(Plateau(rule, 60), values, 60)
    assert stopped == 50  # 20: below min_delta (1), 30: a gain (0), 40 (1), 50 (2): stop


def test_distill_stops_when_asked_and_runs_every_step_otherwise():
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    soft = torch.randn(64, 3)
    plan = TrainPlan(steps=30, lr=1e-2, batch_size=16)
    seen = []
    distill_(nn.Linear(4, 3), TensorSplit(x, y), soft, plan, plan, stop=lambda step: seen.append(step) or step == 12)
    assert seen == list(range(1, 13))
    seen.clear()
    distill_(nn.Linear(4, 3), TensorSplit(x, y), soft, plan, plan, stop=lambda step: seen.append(step) or False)
    assert seen == list(range(1, 31))


@pytest.mark.parametrize("early", [False, True])
def test_a_candidate_records_the_steps_it_ran(early, prepared, tmp_path):
    from autocompress.climb import complete
    from autocompress.pipeline import build_candidate, evaluate_candidate
    from autocompress.space import SearchSpace

    space = SearchSpace.from_dict({"prune": {"ratio": 0.25}, "finetune": {"steps": 60, "early_stop": early}})
    cfg = complete(space, {}, {})[1]
    assert cfg.finetune.early_stop is early
    out = evaluate_candidate(cfg, 0, prepared, tmp_path, seed=0)
    if early:
        assert 0 < out.attrs["finetune_steps_run"] <= 60
    else:
        assert "finetune_steps_run" not in out.attrs
    assert ("early_stop" in cfg.to_dict()["finetune"]) is early  # off leaves the candidate ids of before as they were
