"""Experiment: does a block-wise feature-distillation warm-up of substituted blocks help?

    .venv/bin/python experiments/block_warmup.py [--seeds 0 1 2] [--warmups 0 50 150] [--steps 50 150]

On the built-in demo, for several block substitutions (every target replaced), optionally
followed by 50% l1 channel pruning (+ BatchNorm re-estimation, as in the pipeline):
  substitute blocks -> warm-up (training.warmup.warmup_blocks_, W steps, lr 3e-2, batch 32,
  on the teacher's block inputs/outputs over the training inputs) -> [prune 0.5]
  -> distillation fine-tune (S steps, lr 1e-3, batch 64, alpha 0.5, T 4)
  -> val accuracy and cross-entropy of the float model (torch, eval mode; the exported fp32
     ONNX file computes the same function).
W = 0 is today's path (blocks start from their initialisation and only the fine-tune
trains them). Also recorded: each block's normalised error against the teacher block after
the warm-up, and the seconds the warm-up took. Writes experiments/results/block_warmup.json
(per-arm mean/min/max over seeds, per-seed values, date, commit, command) and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from autocompress.config import BlockConfig, DistillConfig, FinetuneConfig, PruneConfig
from autocompress.pipeline import calibration_samples
from autocompress.tasks.demo import demo_task
from autocompress.training import distill_, recalibrate_batchnorm_, teacher_logits
from autocompress.training.warmup import block_errors, warmup_blocks_
from autocompress.techniques import apply
from autocompress.transforms import TransformContext

HERE = Path(__file__).resolve().parent
TARGETS = ("layer1", "layer2", "layer3")
SUBSTITUTIONS = {
    "mbconv_e3_k3 x3": ("mbconv_e3_k3",) * 3,
    "dwsep_k3 x3": ("dwsep_k3",) * 3,
    "shuffle_v2 x3": ("shuffle_v2",) * 3,
    "skip/mbconv_e6_k3/dwsep_k3": ("skip", "mbconv_e6_k3", "dwsep_k3"),
}


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    return 100.0 * float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--warmups", type=int, nargs="+", default=[0, 50, 150])
    ap.add_argument("--steps", type=int, nargs="+", default=[50, 150])
    ap.add_argument("--out", default=str(HERE / "results" / "block_warmup.json"))
    args = ap.parse_args()
    t_start = time.perf_counter()

    task = demo_task()
    x_tr, y_tr, x_val, y_val = task.train.x, task.train.y, task.val.x, task.val.y
    soft = teacher_logits(task.teacher, x_tr)
    tctx = TransformContext(example_input=x_tr[:2], calibration=calibration_samples(task))
    kd = DistillConfig(alpha=0.5, temperature=4.0)

    per_seed: dict[str, list[dict]] = {}
    for label, names in SUBSTITUTIONS.items():
        cfg = BlockConfig(tuple(zip(TARGETS, names)))
        new = [p for p, n in cfg.choices if n != "skip"]
        for prune in (0.0, 0.5):
            for w in args.warmups:
                for seed in args.seeds:
                    torch.manual_seed(seed)
                    student = apply(task.teacher, cfg, tctx)
                    t0 = time.perf_counter()
                    warmup_blocks_(student, task.teacher, new, x_tr, w, seed=seed)
                    t_warm = time.perf_counter() - t0
                    errs = block_errors(student, task.teacher, new, x_tr[:256])
                    if prune:
                        shuffles = tuple(p for p, n in cfg.choices if n == "shuffle_v2")  # as pipeline._prune_cfg
                        student = apply(student, PruneConfig(prune, criterion="l1", exclude=shuffles), tctx)
                        recalibrate_batchnorm_(student, x_tr)
                    for s in args.steps:
                        m = copy.deepcopy(student)
                        distill_(m, task.train, soft, FinetuneConfig(steps=s, lr=1e-3, batch_size=64), kd, seed=seed)
                        acc, ce = evaluate(m, x_val, y_val)
                        key = f"{label} | prune {prune:g} | warmup {w} | ft {s}"
                        per_seed.setdefault(key, []).append(
                            {"seed": seed, "val_acc": acc, "val_ce": ce, "warmup_s": t_warm, "block_err": errs}
                        )
                        print(f"{key} | seed {seed}: acc {acc:.2f} ce {ce:.4f} (warm-up {t_warm:.1f} s)", flush=True)

    summary = {}
    for key, rows in per_seed.items():
        accs, ces = [r["val_acc"] for r in rows], [r["val_ce"] for r in rows]
        summary[key] = {
            "val_acc_mean": statistics.mean(accs), "val_acc_min": min(accs), "val_acc_max": max(accs),
            "val_ce_mean": statistics.mean(ces), "warmup_s_mean": statistics.mean(r["warmup_s"] for r in rows),
        }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    out = {
        "date": dt.date.today().isoformat(), "commit": commit,
        "command": " ".join(shlex.quote(a) for a in [".venv/bin/python", "experiments/block_warmup.py", *sys.argv[1:]]),
        "wall_s": round(time.perf_counter() - t_start, 1), "summary": summary, "per_seed": per_seed,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\n{'arm':60s} {'acc mean':>8s} {'min':>6s} {'max':>6s} {'CE':>7s}")
    for key, s in summary.items():
        print(f"{key:60s} {s['val_acc_mean']:8.2f} {s['val_acc_min']:6.2f} {s['val_acc_max']:6.2f} {s['val_ce_mean']:7.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
