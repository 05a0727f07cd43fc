"""Block-wise feature distillation of substituted blocks onto the teacher's blocks."""

from __future__ import annotations

import copy

import torch

from autocompress.config import BlockConfig
from autocompress.training.warmup import block_errors, warmup_blocks_
from autocompress.techniques import apply
from autocompress.transforms import TransformContext
from tests.helpers import assert_state_equal, state_snapshot


def _substituted(task, choices):
    ctx = TransformContext(example_input=task.train.x[:2], calibration=task.train.x[:16])
    torch.manual_seed(0)
    return apply(task.teacher, BlockConfig(choices), ctx)


def test_warmup_fits_new_blocks_to_the_teacher_blocks_and_touches_nothing_else(tiny_task):
    teacher, x = tiny_task.teacher, tiny_task.train.x
    student = _substituted(tiny_task, (("block1", "mbconv_e3_k3"), ("block2", "dwsep_k3")))
    paths = ["block1", "block2"]
    teacher_state = state_snapshot(teacher)
    outside = {k: v.clone() for k, v in student.state_dict().items() if not k.startswith(("block1.", "block2."))}
    before = block_errors(student, teacher, paths, tiny_task.val.x)

    warmup_blocks_(student, teacher, paths, x, 60)

    after = block_errors(student, teacher, paths, tiny_task.val.x)  # held-out inputs
    for p in paths:
        assert after[p] < 0.5 * before[p], (p, before[p], after[p])
    assert_state_equal(teacher, teacher_state)
    assert not teacher.training and not student.training
    now = student.state_dict()
    assert all(torch.equal(now[k], v) for k, v in outside.items())  # only the new blocks train


def test_warmup_is_deterministic_for_a_seed_and_a_no_op_without_steps_or_parameters(tiny_task):
    teacher, x = tiny_task.teacher, tiny_task.train.x
    a = _substituted(tiny_task, (("block1", "mbconv_e3_k3"),))
    b = copy.deepcopy(a)
    warmup_blocks_(a, teacher, ["block1"], x, 5, seed=3)
    warmup_blocks_(b, teacher, ["block1"], x, 5, seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    c = _substituted(tiny_task, (("block1", "mbconv_e3_k3"),))
    snap = state_snapshot(c)
    warmup_blocks_(c, teacher, ["block1"], x, 0)
    assert_state_equal(c, snap)

    skip = _substituted(tiny_task, (("block1", "skip"),))  # nothing to train
    snap = state_snapshot(skip)
    warmup_blocks_(skip, teacher, ["block1"], x, 5)
    assert_state_equal(skip, snap)


def test_block_errors_are_zero_for_the_original_blocks(tiny_task):
    same = copy.deepcopy(tiny_task.teacher)
    assert block_errors(same, tiny_task.teacher, ["block1", "block2"], tiny_task.val.x) == {"block1": 0.0, "block2": 0.0}
