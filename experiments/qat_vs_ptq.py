"""Experiment: quantization-aware fine-tuning (QAT) vs post-training quantization (PTQ) on
the built-in demo, measured on the deployed artifact (ORT-quantized ONNX, val accuracy).

    .venv/bin/python experiments/qat_vs_ptq.py [--seeds 0 1 2] [--steps 150]

Student: the demo teacher pruned 0.5 (l1, Torch-Pruning) + BatchNorm recalibration, and
the unpruned teacher for int4 (where weight quantization hurts most). Per weight bit
width (every layer int4, or every layer int8) and seed:
  ptq:           distill_ (steps, lr 1e-3, batch 64, alpha 0.5, T 4) -> export -> quantize_onnx;
  qat:           enable_qat_ (BNs after quantized convs frozen, the default) -> the same
                 distill_ -> bake_ -> export -> quantize_onnx;
  qat_bn_train:  the same with enable_qat_(..., freeze_bn=False) (BNs keep training);
  ptq_frozen_bn: control: ptq with every BN frozen in inference mode during the fine-tune
                 (isolates what freezing BN costs without any quantization).
Quantization: QuantizeConfig(mode=bits, activations='uint8', format='qdq', minmax
calibration on pipeline.calibration_samples). Also recorded: the PTQ arm's float (fp32
ONNX) accuracy, 'no fine-tune' PTQ of the starting model, and for every arm the val
cross-entropy of the quantized model's ORT logits (finer than accuracy on 359 samples).
Writes experiments/results/qat_vs_ptq.json (mean/min/max per arm, per-seed values, the
date, commit and command) and prints a table.
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
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from autocompress.config import (
    DistillConfig,
    FinetuneConfig,
    PruneConfig,
    QuantizeConfig,
)
from autocompress.export import export_onnx, quantize_onnx
from autocompress.pipeline import calibration_samples
from autocompress.tasks.demo import demo_task
from autocompress.training import distill_, recalibrate_batchnorm_, teacher_logits
from autocompress.training.qat import enable_qat_, layer_bits
from autocompress.techniques import apply
from autocompress.transforms import TransformContext

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", default=str(HERE / "results" / "qat_vs_ptq.json"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t_start = time.perf_counter()

    task = demo_task()
    x_tr, y_tr = task.train.x, task.train.y
    x_val, y_val = task.val.x.numpy(), task.val.y.numpy()
    calib_t = calibration_samples(task)
    calib = calib_t.numpy()
    soft = teacher_logits(task.teacher, x_tr)
    example = x_tr[:2]
    ft = FinetuneConfig(steps=args.steps, lr=1e-3, batch_size=64)
    kd = DistillConfig(alpha=0.5, temperature=4.0)

    tctx = TransformContext(example_input=example, calibration=calib_t)
    torch.manual_seed(0)
    pruned = apply(task.teacher, PruneConfig(0.5), tctx)
    recalibrate_batchnorm_(pruned, x_tr)
    starts = {"prune0.5": pruned, "noprune": task.teacher}
    cases = [("prune0.5", "int4"), ("prune0.5", "int8"), ("noprune", "int4")]

    tmp = Path(tempfile.mkdtemp(prefix="qat-vs-ptq-"))
    counter = iter(range(10**6))

    def evaluate(path: Path) -> tuple[float, float]:
        """(val accuracy, val cross-entropy) from ONNX Runtime's logits."""
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        logits = sess.run(None, {sess.get_inputs()[0].name: x_val})[0].astype(np.float64)
        logp = logits - logits.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        return float((logits.argmax(1) == y_val).mean()), float(-logp[np.arange(len(y_val)), y_val].mean())

    def deploy(model: torch.nn.Module, bits: str) -> tuple[tuple[float, float], tuple[float, float]]:
        """((acc, nll) quantized, (acc, nll) fp32) of `model` via ONNX + ORT."""
        i = next(counter)
        fp32 = export_onnx(model, task.input_shape, tmp / f"m{i}.onnx")
        cfg = QuantizeConfig(mode=bits, activations="uint8", format="qdq")
        q = quantize_onnx(fp32, tmp / f"m{i}.q.onnx", calib, cfg).path
        return evaluate(q), evaluate(fp32)

    def freeze_all_bn(model: torch.nn.Module) -> None:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.register_forward_pre_hook(lambda mod, args: setattr(mod, "training", False))

    teacher_val = evaluate(export_onnx(task.teacher, task.input_shape, tmp / "teacher.onnx"))[0]
    results: dict[str, dict] = {}
    for start_name, bits in cases:
        start = starts[start_name]
        key = f"{start_name}/{bits}"
        (q0, _), (f0, _) = deploy(copy.deepcopy(start), bits)
        arms = ("ptq", "qat", "qat_bn_train", "ptq_frozen_bn")
        acc: dict[str, list[float]] = {a: [] for a in (*arms, "ptq_fp32")}
        nll: dict[str, list[float]] = {a: [] for a in arms}
        for seed in args.seeds:
            for arm in arms:
                student = copy.deepcopy(start)
                torch.manual_seed(seed)
                handle = None
                if arm.startswith("qat"):
                    bits_of = layer_bits(student, example, QuantizeConfig(mode=bits))
                    handle = enable_qat_(student, example, bits_of, freeze_bn=arm == "qat")
                if arm == "ptq_frozen_bn":
                    freeze_all_bn(student)
                distill_(student, task.train, soft, ft, kd, seed=seed)
                if handle is not None:
                    handle.bake_()
                (qacc, qnll), (facc, _) = deploy(student, bits)
                acc[arm].append(qacc)
                nll[arm].append(qnll)
                if arm == "ptq":
                    acc["ptq_fp32"].append(facc)
                print(f"  {key:14s} seed {seed} {arm:13s}: val acc {qacc:.4f}  nll {qnll:.4f}"
                      + (f"  (fp32 acc {facc:.4f})" if arm == "ptq" else ""), flush=True)

        def summary(v: list[float]) -> dict:
            return {"mean": statistics.fmean(v), "min": min(v), "max": max(v), "per_seed": v}

        results[key] = {
            "no_finetune_ptq_acc": q0,
            "no_finetune_fp32_acc": f0,
            "accuracy": {arm: summary(v) for arm, v in acc.items()},
            "val_nll": {arm: summary(v) for arm, v in nll.items()},
        }

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE, check=False).stdout.strip()
    record = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "commit": commit,
        "command": " ".join(shlex.quote(a) for a in [".venv/bin/python", "experiments/qat_vs_ptq.py", *sys.argv[1:]]),
        "setup": {
            "task": "demo (digits 16x16)",
            "val_samples": len(y_val),
            "teacher_val_accuracy": teacher_val,
            "finetune": {"steps": args.steps, "lr": 1e-3, "batch_size": 64, "alpha": 0.5, "temperature": 4.0},
            "quantize": "QuantizeConfig(mode=bits, activations='uint8', format='qdq', calibration='minmax'), every layer",
            "seeds": args.seeds,
        },
        "results": results,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")

    print(f"\nteacher val {teacher_val:.4f}; {len(args.seeds)} seeds, {args.steps} steps; val = {len(y_val)} samples")
    print("ORT val accuracy of the quantized model, mean [min, max] over seeds; val NLL mean below\n")
    cols = ("ptq", "qat", "qat_bn_train", "ptq_frozen_bn")
    print("| student / weights | no fine-tune | " + " | ".join(cols) + " | ptq fp32 |")
    print("| --- " * (len(cols) + 3) + "|")
    for key, r in results.items():
        def fmt(a: dict) -> str:
            return f"{a['mean'] * 100:.2f}% [{a['min'] * 100:.2f}, {a['max'] * 100:.2f}]"

        cells = " | ".join(fmt(r["accuracy"][c]) for c in cols)
        print(f"| {key} | {r['no_finetune_ptq_acc'] * 100:.2f}% | {cells} | {r['accuracy']['ptq_fp32']['mean'] * 100:.2f}% |")
        print(f"| {key} val NLL | | " + " | ".join(f"{r['val_nll'][c]['mean']:.4f}" for c in cols) + " | |")
    print(f"\nwrote {out} ({record['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
