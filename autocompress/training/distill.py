"""Knowledge distillation: L = alpha * CE(student, y) + (1 - alpha) * T^2 * KL(p_T || q_T)
with p_T = softmax(teacher / T), q_T = softmax(student / T). The KL term takes the
student's log-softmax and the teacher's softmax (kl_div on raw logits is a common bug),
and T^2 keeps the soft term's gradient scale independent of T (Hinton et al., 2015).

A task that is not a classification (FineTuneLoss) gives its own label term
`loss(outputs, targets)`, and the teacher term is the mean squared error between the
student's and the teacher's primary outputs, or the task's `distill_loss`; T is unused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from autocompress.data import structure as st

if TYPE_CHECKING:
    from autocompress.techniques.distill import DistillConfig
    from autocompress.techniques.finetune import FinetuneConfig
    from autocompress.training.plan import TrainPlan


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_T || q_T): the teacher term of a classification's distillation."""
    return F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
    ) * (temperature**2)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    hard = F.cross_entropy(student_logits, targets)
    return alpha * hard + (1.0 - alpha) * soft_kl(student_logits, teacher_logits, temperature)


@dataclass(frozen=True)
class FineTuneLoss:
    """The task's side of the fine-tune loss: `loss(outputs, targets)` on the model's
    outputs as it returns them (None: cross-entropy on the primary output), and
    `distill_loss(student, teacher)` on the primary outputs (None: T^2 * KL for a
    classification, else the mean squared error)."""

    classification: bool = True
    loss: Optional[Callable[[Any, Any], torch.Tensor]] = None
    distill_loss: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None

    def __call__(self, outputs: Any, teacher: torch.Tensor, targets: Any, *, alpha: float, temperature: float) -> torch.Tensor:
        student = st.primary(outputs)
        hard = self.loss(outputs, targets) if self.loss is not None else F.cross_entropy(student, targets)
        if self.distill_loss is not None:
            soft = self.distill_loss(student, teacher)
        elif self.classification:
            soft = soft_kl(student, teacher, temperature)
        else:
            soft = F.mse_loss(student, teacher.to(student.dtype))
        return alpha * hard + (1.0 - alpha) * soft


CLASSIFICATION = FineTuneLoss()

SOFT_TARGET_BYTES = 256 << 20  # teacher outputs of a split held in memory are cached up to this size


@torch.no_grad()
def teacher_logits(teacher: nn.Module, train: Any, *, batch: int = 512) -> Optional[torch.Tensor]:
    """The teacher's primary outputs (data.structure.primary) for every row of a split held
    in memory (a TensorSplit, or inputs batched along the first axis), computed once without
    gradients; None for a streamed split or when they would exceed SOFT_TARGET_BYTES (the
    fine-tune then runs the teacher on each batch)."""
    from autocompress.data.split import Split, TensorSplit

    if isinstance(train, Split):
        if not isinstance(train, TensorSplit):
            return None
        train = train.x
    n = st.rows(train)
    was_training = teacher.training
    teacher.eval()
    try:
        first = st.primary(st.call(teacher, st.take(train, slice(0, 1))))
        if n * first.numel() * first.element_size() > SOFT_TARGET_BYTES:
            return None
        return torch.cat([st.primary(st.call(teacher, st.take(train, slice(i, i + batch)))) for i in range(0, n, batch)])
    finally:
        teacher.train(was_training)


def distill_(
    student: nn.Module,
    train: Any,
    soft_targets: Optional[torch.Tensor],
    finetune: "FinetuneConfig | TrainPlan",
    distill: "DistillConfig | TrainPlan",
    *,
    teacher: Optional[nn.Module] = None,
    seed: int = 0,
    between_steps: Optional[Callable[[], None]] = None,
    stop: Optional[Callable[[int], bool]] = None,
    objective: FineTuneLoss = CLASSIFICATION,
    device: str = "cpu",
) -> nn.Module:
    """Fine-tune `student` in place for `finetune.steps` steps of Adam (cosine-decayed
    learning rate) on minibatches of the training split (data.split.Split) with the
    teacher's outputs: `soft_targets` precomputed for every row (teacher_logits), or, when
    None, `teacher` run on each batch. `finetune` has steps, lr and batch_size, `distill`
    alpha and temperature (their configs, or one training.plan.TrainPlan for both).
    `between_steps()` is called after every step (e.g. to let a latency measurement on
    the same cores go first); `stop(step)` after every step (1-based) ends the fine-tune
    when it returns True (early stopping). `objective`: the task's loss (FineTuneLoss;
    default the classification's distillation loss). `device`: where the steps run
    ("cpu", "cuda", "cuda:1"): the student (and the teacher, when it runs per batch) is
    moved there for the fine-tune and both come back to the CPU at the end, so `stop`
    sees the student on the device."""
    if finetune.steps <= 0:
        return student.eval()
    if soft_targets is None and teacher is None:
        raise ValueError("distill_ needs soft_targets or the teacher")
    on = torch.device(device)
    if on.type != "cpu":
        student.to(on)
        if teacher is not None:
            teacher.to(on)
    try:
        return _steps(student, train, soft_targets, finetune, distill, teacher, seed, between_steps, stop, objective, on)
    finally:
        if on.type != "cpu":
            student.cpu()
            if teacher is not None:
                teacher.cpu()


def _steps(student, train, soft_targets, finetune, distill, teacher, seed, between_steps, stop, objective, on) -> nn.Module:
    def there(t):
        return t.to(on, non_blocking=True) if on.type != "cpu" else t

    opt = torch.optim.Adam(student.parameters(), lr=finetune.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=finetune.steps)
    if teacher is not None:
        teacher.eval()
    student.train()
    batches = train.stream(finetune.batch_size, seed)
    for step in range(1, finetune.steps + 1):
        inputs, targets, idx = next(batches)
        inputs, targets = st.apply(inputs, there), there(torch.as_tensor(targets))
        if soft_targets is not None and idx is not None:
            soft = there(soft_targets[idx])
        else:
            with torch.no_grad():
                soft = st.primary(st.call(teacher, inputs))
        loss = objective(st.call(student, inputs), soft, targets, alpha=distill.alpha, temperature=distill.temperature)
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
def recalibrate_batchnorm_(model: nn.Module, x: Any, *, batch: int = 256) -> nn.Module:
    """Re-estimate BatchNorm running statistics on the inputs `x` (a tensor, tuple or dict
    batched along the first axis; in place). After channels are removed the old statistics
    no longer match; this costs one forward pass."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.train()
    for i in range(0, st.rows(x), batch):
        st.call(model, st.take(x, slice(i, i + batch)))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()
