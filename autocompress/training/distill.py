"""Knowledge distillation: L = alpha * CE(student, y) + (1 - alpha) * T^2 * KL(p_T || q_T)
with p_T = softmax(teacher / T), q_T = softmax(student / T). The KL term takes the
student's log-softmax and the teacher's softmax (kl_div on raw logits is a common bug),
and T^2 keeps the soft term's gradient scale independent of T (Hinton et al., 2015)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from autocompress.techniques.distill import DistillConfig
    from autocompress.techniques.finetune import FinetuneConfig
    from autocompress.training.plan import TrainPlan


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    hard = F.cross_entropy(student_logits, targets)
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
    ) * (temperature**2)
    return alpha * hard + (1.0 - alpha) * soft


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: torch.Tensor, *, batch: int = 512) -> torch.Tensor:
    """Teacher outputs for every row of `x`, computed once, without gradients."""
    was_training = teacher.training
    teacher.eval()
    out = torch.cat([teacher(x[i : i + batch]) for i in range(0, len(x), batch)])
    teacher.train(was_training)
    return out


def distill_(
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    soft_targets: torch.Tensor,
    finetune: "FinetuneConfig | TrainPlan",
    distill: "DistillConfig | TrainPlan",
    *,
    seed: int = 0,
    between_steps: Optional[Callable[[], None]] = None,
    stop: Optional[Callable[[int], bool]] = None,
) -> nn.Module:
    """Fine-tune `student` in place for `finetune.steps` steps of Adam (cosine-decayed
    learning rate) on minibatches of (x, y) with precomputed teacher logits. `finetune`
    has steps, lr and batch_size, `distill` alpha and temperature (their configs, or one
    training.plan.TrainPlan for both).
    `between_steps()` is called after every step (e.g. to let a latency measurement on
    the same cores go first); `stop(step)` after every step (1-based) ends the fine-tune
    when it returns True (early stopping)."""
    if finetune.steps <= 0:
        return student.eval()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(student.parameters(), lr=finetune.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=finetune.steps)
    student.train()
    n, bs = len(y), min(finetune.batch_size, len(y))
    perm, pos = torch.randperm(n, generator=gen), 0
    for step in range(1, finetune.steps + 1):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + bs]
        pos += bs
        loss = kd_loss(student(x[idx]), soft_targets[idx], y[idx], alpha=distill.alpha, temperature=distill.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if between_steps is not None:
            between_steps()
        if stop is not None and stop(step):
            break
    return student.eval()


@torch.no_grad()
def recalibrate_batchnorm_(model: nn.Module, x: torch.Tensor, *, batch: int = 256) -> nn.Module:
    """Re-estimate BatchNorm running statistics on `x` (in place). After channels are
    removed the old statistics no longer match; this costs one forward pass."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.train()
    for i in range(0, len(x), batch):
        model(x[i : i + batch])
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()
