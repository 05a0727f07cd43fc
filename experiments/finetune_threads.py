"""Does one thread per fine-tune, two fine-tunes at once, beat two threads one after another?

    .venv/bin/python experiments/finetune_threads.py [--steps 60]

Distils the demo teacher into a copy of itself (batch 64) in fresh processes: once with 2
torch threads alone, once with 1 thread alone, and twice with 1 thread side by side.
Prints the seconds of each; the throughput gain of the pair is 2 x (2-thread time) /
(slower of the pair).
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
from dataclasses import replace


def one(threads: int, steps: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from autocompress.tasks.demo import demo_task
    from autocompress.training import distill_, teacher_logits
    from autocompress.training.plan import TrainPlan

    task = demo_task(progress=lambda s: None)
    soft = teacher_logits(task.teacher, task.train.x)
    student = copy.deepcopy(task.teacher)
    plan = replace(TrainPlan(), steps=steps, batch_size=64)
    t0 = time.perf_counter()
    distill_(student, task.train, soft, plan, plan, seed=0)
    print(f"{time.perf_counter() - t0:.2f}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        one(args.child, args.steps)
        return 0
    cmd = lambda t: [sys.executable, __file__, "--child", str(t), "--steps", str(args.steps)]  # noqa: E731
    two = float(subprocess.run(cmd(2), capture_output=True, text=True, check=True).stdout)
    single = float(subprocess.run(cmd(1), capture_output=True, text=True, check=True).stdout)
    procs = [subprocess.Popen(cmd(1), stdout=subprocess.PIPE, text=True) for _ in range(2)]
    pair = [float(p.communicate()[0]) for p in procs]
    print(f"2 threads alone {two:.1f} s; 1 thread alone {single:.1f} s; two 1-thread at once {pair[0]:.1f} and {pair[1]:.1f} s; "
          f"throughput of the pair {2 * two / max(pair):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
