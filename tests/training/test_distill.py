"""Knowledge distillation: the loss against hand-computed values, and the fine-tune loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autocompress.config import DistillConfig, FinetuneConfig
from autocompress.data.split import TensorSplit
from autocompress.training import distill_, kd_loss, recalibrate_batchnorm_, teacher_logits
from tests.helpers import assert_state_equal, state_snapshot

STUDENT = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -0.5], [-1.0, 1.5, 0.3, 0.8]])
TEACHER = np.array([[3.0, 1.0, -2.0, 0.5], [0.0, -1.0, 2.5, 0.0], [0.5, 2.0, -0.5, 1.0]])
TARGETS = np.array([0, 2, 3])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def hand_ce(s: np.ndarray, y: np.ndarray) -> float:
    p = _softmax(s)
    return float(np.mean([-np.log(p[i, y[i]]) for i in range(len(y))]))


def hand_kl(p: np.ndarray, q: np.ndarray) -> float:
    """Mean over rows of KL(p || q) = sum_k p_k (log p_k - log q_k)."""
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def _loss(alpha: float, temperature: float, s=STUDENT, t=TEACHER, y=TARGETS) -> float:
    return kd_loss(
        torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64), torch.tensor(y), alpha=alpha, temperature=temperature
    ).item()


def test_alpha_one_is_pure_cross_entropy():
    expected = hand_ce(STUDENT, TARGETS)
    for temperature in (1.0, 4.0):
        assert _loss(1.0, temperature) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_alpha_zero_is_t_squared_kl_teacher_to_student(temperature):
    p_teacher = _softmax(TEACHER / temperature)
    q_student = _softmax(STUDENT / temperature)
    expected = temperature**2 * hand_kl(p_teacher, q_student)
    assert expected > 0
    assert _loss(0.0, temperature) == pytest.approx(expected, rel=1e-10)
    # the teacher is the target distribution: the reversed KL is a different number
    assert _loss(0.0, temperature) != pytest.approx(temperature**2 * hand_kl(q_student, p_teacher), rel=1e-3)


def test_kl_is_not_taken_on_raw_logits():
    """The classic bug: F.kl_div(student_logits, teacher_logits) without (log-)softmax."""
    temperature = 2.0
    s, t = torch.tensor(STUDENT), torch.tensor(TEACHER)
    raw = (F.kl_div(s / temperature, t / temperature, reduction="batchmean") * temperature**2).item()
    raw_no_t = F.kl_div(s, t, reduction="batchmean").item()
    no_t_squared = hand_kl(_softmax(TEACHER / temperature), _softmax(STUDENT / temperature))
    got = _loss(0.0, temperature)
    for wrong in (raw, raw_no_t, no_t_squared):
        assert got != pytest.approx(wrong, rel=1e-3)


def test_mixed_alpha_is_the_weighted_sum():
    alpha, temperature = 0.3, 3.0
    soft = temperature**2 * hand_kl(_softmax(TEACHER / temperature), _softmax(STUDENT / temperature))
    expected = alpha * hand_ce(STUDENT, TARGETS) + (1 - alpha) * soft
    assert _loss(alpha, temperature) == pytest.approx(expected, rel=1e-10)


def test_soft_term_vanishes_when_student_matches_teacher():
    assert _loss(0.0, 4.0, s=TEACHER) == pytest.approx(0.0, abs=1e-12)
    # and the whole loss is differentiable w.r.t. the student only
    s = torch.tensor(STUDENT, requires_grad=True)
    t = torch.tensor(TEACHER, requires_grad=True)
    kd_loss(s, t, torch.tensor(TARGETS), alpha=0.5, temperature=4.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


# --------------------------------------------------------------------------- training loop


@pytest.fixture
def student_setup(tiny_module, tiny_task):
    x, y = tiny_task.train.x, tiny_task.train.y
    return tiny_module, tiny_task.teacher, x, y, teacher_logits(tiny_task.teacher, x)


def test_teacher_logits_batched_equals_one_pass(tiny_module):
    torch.manual_seed(0)
    model = tiny_module.TinyResNet()
    model.train()
    x = torch.randn(23, 3, 8, 8)
    out = teacher_logits(model, x, batch=5)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        ref = model(x)
    assert out.shape == (23, 4)
    torch.testing.assert_close(out, ref)
    assert not out.requires_grad


def test_distill_with_zero_steps_changes_nothing(student_setup):
    mod, _teacher, x, y, soft = student_setup
    student = mod.TinyResNet()
    snap = state_snapshot(student)
    out = distill_(student, TensorSplit(x, y), soft, FinetuneConfig(steps=0), DistillConfig())
    assert out is student and not student.training
    assert_state_equal(student, snap)


def test_distill_reduces_the_kd_loss_and_is_deterministic(student_setup):
    mod, _teacher, x, y, soft = student_setup
    ft, kd = FinetuneConfig(steps=30, lr=1e-2, batch_size=32), DistillConfig(alpha=0.5, temperature=4.0)

    def fresh():
        torch.manual_seed(1)
        return mod.TinyResNet()

    def loss_of(m):
        with torch.no_grad():
            return kd_loss(m.eval()(x), soft, y, alpha=kd.alpha, temperature=kd.temperature).item()

    a = fresh()
    before = loss_of(a)
    distill_(a, TensorSplit(x, y), soft, ft, kd, seed=3)
    assert not a.training
    assert loss_of(a) < 0.7 * before

    b = distill_(fresh(), TensorSplit(x, y), soft, ft, kd, seed=3)
    assert_state_equal(b, state_snapshot(a))  # same seed, same weights
    c = distill_(fresh(), TensorSplit(x, y), soft, ft, kd, seed=4)
    assert any(not torch.equal(v, a.state_dict()[k]) for k, v in c.state_dict().items())


def test_distill_handles_batch_larger_than_the_data(student_setup):
    mod, _teacher, x, y, soft = student_setup
    student = mod.TinyResNet()
    distill_(student, TensorSplit(x[:10], y[:10]), soft[:10], FinetuneConfig(steps=3, lr=1e-3, batch_size=64), DistillConfig())
    assert all(torch.isfinite(p).all() for p in student.parameters())


def test_recalibrate_batchnorm_reestimates_running_mean():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3))
        model[0].bias.zero_()
    bn = model[1]
    bn.running_mean.fill_(100.0)
    bn.momentum = 0.3
    x = torch.randn(40, 3) * 2 + torch.tensor([1.0, -2.0, 5.0])
    out = recalibrate_batchnorm_(model, x, batch=10)
    assert out is model and not model.training
    torch.testing.assert_close(bn.running_mean, x.mean(0))  # equal batches: mean of batch means
    assert bn.momentum == 0.3  # restored
    assert bn.num_batches_tracked.item() == 4


def test_recalibrate_without_batchnorm_is_a_no_op():
    model = nn.Linear(2, 2).train()
    snap = state_snapshot(model)
    assert recalibrate_batchnorm_(model, torch.randn(4, 2)) is model
    assert_state_equal(model, snap)


def test_the_task_s_loss_replaces_the_label_term_and_mse_the_soft_term_outside_classification():
    from autocompress.training.distill import FineTuneLoss

    torch.manual_seed(0)
    student, teacher, y = torch.randn(8, 1), torch.randn(8, 1), torch.randn(8, 1)
    got = []

    def loss(outputs, targets):
        got.append(outputs)
        return ((outputs - targets).abs()).mean()

    regression = FineTuneLoss(classification=False, loss=loss)
    value = regression(student, teacher, y, alpha=0.3, temperature=4.0)
    expected = 0.3 * (student - y).abs().mean() + 0.7 * F.mse_loss(student, teacher)
    assert torch.allclose(value, expected) and got[0] is student
    assert torch.allclose(regression(student, teacher, y, alpha=0.3, temperature=1.0), value)  # T means nothing here
    own = FineTuneLoss(classification=False, loss=loss, distill_loss=lambda s, t: (s - t).abs().sum())
    assert torch.allclose(own(student, teacher, y, alpha=0.5, temperature=4.0), 0.5 * (student - y).abs().mean() + 0.5 * (student - teacher).abs().sum())
    logits, soft, classes = torch.randn(8, 3), torch.randn(8, 3), torch.randint(0, 3, (8,))
    assert torch.allclose(FineTuneLoss()(logits, soft, classes, alpha=0.4, temperature=2.0),
                          kd_loss(logits, soft, classes, alpha=0.4, temperature=2.0))
