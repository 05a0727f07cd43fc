"""Block-wise feature distillation ("warm-up") for substituted blocks.

Each new block learns to map the teacher block's input to the teacher block's output:
    L = sum over blocks b of  mean((new_b(x_b) - old_b(x_b))^2) / mean(old_b(x_b)^2)
where x_b is what the *teacher* feeds block b on a minibatch (one no-grad teacher forward
per step, captured by forward hooks). The blocks train independently of each other and of
the rest of the student, so the warm-up is cheap (only the new blocks run backward) and
the later distillation fine-tune starts from blocks that already compute roughly what the
originals did. The normalisation makes blocks of different scale weigh the same."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from autocompress.data import structure as st
from autocompress.transforms.order import hooked

WARMUP_LR = 3e-2
WARMUP_BATCH = 32


def _capture(teacher: nn.Module, paths: Sequence[str], x: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Input and output of each teacher block at `paths` on batch `x` (no gradients)."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    modules = {path: teacher.get_submodule(path) for path in paths}
    path_of = {id(m): path for path, m in modules.items()}

    def hook(mod, inputs, output):
        seen[path_of[id(mod)]] = (inputs[0].detach(), output.detach())

    with hooked(modules.values(), hook), torch.no_grad():
        st.call(teacher, x)
    return seen


def warmup_blocks_(
    student: nn.Module,
    teacher: nn.Module,
    paths: Sequence[str],
    x: Any,
    steps: int,
    *,
    lr: float = WARMUP_LR,
    batch_size: int = WARMUP_BATCH,
    seed: int = 0,
) -> nn.Module:
    """Train the student's blocks at `paths` (in place) to reproduce the teacher's blocks at
    the same paths, `steps` Adam steps (cosine-decayed) on minibatches of `x`. Blocks
    without parameters (skip) are left out. The teacher is not changed."""
    blocks = {p: student.get_submodule(p) for p in paths}
    blocks = {p: b for p, b in blocks.items() if any(True for _ in b.parameters())}
    if steps <= 0 or not blocks:
        return student
    was_training = teacher.training
    teacher.eval()
    params = [q for b in blocks.values() for q in b.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed)
    n = st.rows(x)
    bs = min(batch_size, n)
    perm, pos = torch.randperm(n, generator=gen), 0
    for b in blocks.values():
        b.train()
    try:
        for _ in range(steps):
            if pos + bs > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            feats = _capture(teacher, list(blocks), st.take(x, perm[pos : pos + bs]))
            pos += bs
            loss = sum(
                ((blocks[p](xin) - yout) ** 2).mean() / (yout**2).mean().clamp_min(1e-12) for p, (xin, yout) in feats.items()
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    finally:
        teacher.train(was_training)
    student.eval()
    return student


@torch.no_grad()
def block_errors(student: nn.Module, teacher: nn.Module, paths: Sequence[str], x: Any) -> dict[str, float]:
    """Normalised squared error of each student block against the teacher block on the
    teacher's own block inputs (eval mode): 0 means the block reproduces the original."""
    was = (student.training, teacher.training)
    student.eval()
    teacher.eval()
    try:
        feats = _capture(teacher, paths, x)
        return {
            p: float(((student.get_submodule(p)(xin) - yout) ** 2).mean() / (yout**2).mean().clamp_min(1e-12))
            for p, (xin, yout) in feats.items()
        }
    finally:
        student.train(was[0])
        teacher.train(was[1])
