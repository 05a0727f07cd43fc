"""What limits the transformers benchmark's text model: is it the fine-tune length? Takes
front or near-front trials of a finished bench_transformers.py run and builds each again
with longer distillation fine-tunes (the default space stops at 150 steps), everything
else as the trial had it (its learning rate, α, T, structure, MatMul quantization).

    .venv/bin/python experiments/finetune_length.py --run runs/bench-transformers/text \
        --trials 15,28 [--steps 150,600,1200] [--set layers.bert.encoder.layer.2=true]

Per build: val and test accuracy of the deployed ONNX file, its latency ratio to the
teacher as exported (the search-time protocol of the run's profile, measured here), the
fine-tune seconds. One JSON line per build is appended to
experiments/results/finetune_length.jsonl (date, commit, command, CPU).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from autocompress.backends.study import trial_params
from autocompress.climb import complete
from autocompress.pipeline import build_candidate, prepare, task_metric
from autocompress.run import RunDir, cpu_info, load_run_task
from autocompress.techniques import short_label

HERE = Path(__file__).resolve().parent


def _parse(item: str) -> tuple[str, object]:
    key, _, text = item.partition("=")
    if text.lower() in ("true", "false"):
        return key, text.lower() == "true"
    try:
        return key, int(text)
    except ValueError:
        try:
            return key, float(text)
        except ValueError:
            return key, text


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--trials", required=True, help="trial numbers, e.g. 15,28")
    ap.add_argument("--steps", default="150,600,1200")
    ap.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                    help="change a trial parameter, e.g. layers.bert.encoder.layer.3=true (true/false, numbers, text)")
    ap.add_argument("--results", default=str(HERE / "results" / "finetune_length.jsonl"))
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    command = "python experiments/finetune_length.py " + " ".join(sys.argv[1:])
    run = RunDir(Path(args.run))
    manifest = run.read_manifest()
    task = load_run_task(run)
    space = run.bound_space(task)
    profile = run.profile()
    profile.pin_process()
    teacher = manifest["teacher"]
    changes = dict(_parse(item) for item in args.set)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = prepare(task, profile, Path(tmp))
        try:
            for number in map(int, args.trials.split(",")):
                params = {**trial_params(run.storage_url, number, run.study_name), **changes}
                for steps in map(int, args.steps.split(",")):
                    space_n = space.with_fixed("finetune.steps", steps)
                    cfg = complete(space_n, {**params, "finetune.steps": steps}, {})[1]
                    res = build_candidate(cfg, ctx, Path(tmp) / f"{number}-{steps}", seed=int(manifest.get("seed", 0)))
                    row = {"date": dt.date.today().isoformat(), "commit": commit, "command": command, "cpu": cpu_info(),
                           "run": str(run.path), "trial": number, "changed": changes, "label": short_label(cfg), "steps": steps,
                           "lr": cfg.finetune.lr,
                           "teacher_val": teacher["val_accuracy"], "teacher_test": teacher["test_accuracy"],
                           "val": res.val_metric, "test": task_metric(res.onnx_path, task, task.test),
                           "latency_ratio": res.latency.ratio, "size_bytes": res.size_bytes,
                           "finetune_s": round(res.stage_seconds.get("finetune", 0.0), 1)}
                    row["val_drop_pts"] = round(100 * (row["teacher_val"] - row["val"]), 2)
                    row["test_drop_pts"] = round(100 * (row["teacher_test"] - row["test"]), 2)
                    with open(args.results, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(f"trial {number}{' changed' if changes else ''} ({row['label']}, lr {cfg.finetune.lr:.2g}) {steps} steps: val {row['val']:.4f} (-{row['val_drop_pts']} pt) "
                          f"test {row['test']:.4f} (-{row['test_drop_pts']} pt) {1 / row['latency_ratio']:.2f}x "
                          f"finetune {row['finetune_s']} s", flush=True)
        finally:
            ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
