"""Does ending a fine-tune when the val accuracy stops moving (finetune.early_stop) cost
accuracy, and how much fine-tune time does it save? The candidates a search spends most of
its trials on (uniform pruning + a 150-step distillation fine-tune + int8), built with and
without early stopping, on the demo and the two tasks of search_at_30.py, seeded.

    .venv/bin/python experiments/early_stop.py [--tasks demo,vgg,conv1d] [--seeds 0,1]

Per candidate: val and test accuracy of the deployed ONNX file, fine-tune seconds and the
steps run. Appends one JSON line per candidate to experiments/results/early_stop.jsonl
(date, commit, command, CPU) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from autocompress.climb import complete
from autocompress.hardware import load_profile
from autocompress.pipeline import build_candidate, prepare
from autocompress.evaluation import onnx_accuracy
from autocompress.run import cpu_info
from autocompress.space import load_space
from autocompress.tasks import load_task

HERE = Path(__file__).resolve().parent
TASKS = {
    "demo": (None, None),
    "vgg": (str(HERE / "tasks" / "vgg_patterns.py:build_model"), str(HERE / "tasks" / "vgg_patterns.py:build_data")),
    "conv1d": (str(HERE / "tasks" / "conv1d_signals.py:build_model"), str(HERE / "tasks" / "conv1d_signals.py:build_data")),
}
RATIOS = (0.5, 0.65, 0.8)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="demo,vgg,conv1d")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--results", default=str(HERE / "results" / "early_stop.jsonl"))
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    command = "python experiments/early_stop.py " + " ".join(sys.argv[1:])
    rows = []
    for name in args.tasks.split(","):
        task = load_task(*TASKS[name], progress=lambda s: None)
        space, _ = load_space("default").bind(task.teacher, task.train.x[:2])
        with tempfile.TemporaryDirectory() as tmp:
            ctx = prepare(task, load_profile("cpu-1thread"), Path(tmp))
            try:
                for ratio in RATIOS:
                    for seed in map(int, args.seeds.split(",")):
                        for early in (False, True):
                            params = {"finetune.steps": 150, "finetune.lr": 1e-3, "finetune.qat": False, "finetune.early_stop": early,
                                      "distill.alpha": 0.5, "distill.temperature": 4.0, "prune.criterion": "l1", "prune.round_to": 1,
                                      **{f"prune.ratio.{i}": ratio for i in range(3)}, **{f"quantize.mode.{i}": "int8" for i in range(3)}}
                            cfg = complete(space.with_fixed("finetune.early_stop", early), params, {})[1]
                            res = build_candidate(cfg, ctx, Path(tmp) / f"{ratio}-{seed}-{early}", seed=seed)
                            row = {"date": dt.date.today().isoformat(), "commit": commit, "command": command, "cpu": cpu_info(),
                                   "task": name, "prune": ratio, "seed": seed, "early_stop": early,
                                   "val": res.val_metric, "test": onnx_accuracy(res.onnx_path, task.test.x.numpy(), task.test.y.numpy()),
                                   "steps_run": res.steps_run, "finetune_s": round(res.stage_seconds.get("finetune", 0.0), 2),
                                   "total_s": round(sum(res.stage_seconds.values()), 2)}
                            rows.append(row)
                            with open(args.results, "a") as f:
                                f.write(json.dumps(row) + "\n")
                            print(f"{name} prune {ratio} seed {seed} early_stop {early}: val {row['val']:.4f} test {row['test']:.4f} "
                                  f"steps {row['steps_run']} finetune {row['finetune_s']} s", flush=True)
            finally:
                ctx.close()
    import pandas as pd

    df = pd.DataFrame(rows)
    summary = df.groupby(["task", "early_stop"]).agg(val=("val", "mean"), test=("test", "mean"), steps=("steps_run", "mean"),
                                                     finetune_s=("finetune_s", "sum"), total_s=("total_s", "sum"))
    print(summary.to_string(float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
