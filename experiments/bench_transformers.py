"""Transformers benchmark: a BERT-style encoder and a ViT-style model, each trained here on a
task where one attention average is not enough (experiments/tasks/regions.py), searched with
the default space under the `cpu-1thread` profile (batch 1) at --budget 60.

    .venv/bin/python experiments/bench_transformers.py [--models text,vit] [--budget 60] [--seed 0]
        [--time-budget 50m] [--out runs/bench-transformers]

Resumable: a model whose run directory exists is continued with `autocompress search
--resume DIR --budget N`; with --time-budget each call stops after that long (the trial in
flight finishes, outputs are written) and the next call goes on, so the benchmark can be
split over several sessions. Each call first trains the teachers (once, cached) and checks
that depth matters: the 4-layer teacher against a 1-layer, 1-head model of the same width
trained the same way (val accuracy, recorded in results/regions_depth.jsonl; the goal is a
gap of at least 5 points).

When a model's run has reached the budget, one JSON line is appended to
results/bench_transformers.jsonl (date, commit, command, CPU model and flags): the teacher
(val, test, latency as exported, the fused fp32 teacher's latency), and the front's best
point within 1 pt of the teacher on val and on test that is >= 4x smaller: its speedup
against the teacher as exported and against the fused fp32 teacher, its size reduction,
its drops, and the techniques it uses; also the best speedup at <= 1 pt regardless of
size, and every front point within 1 pt. The chosen points are timed again at the end, in
this process, interleaved with the teacher as exported and with the fused fp32 teacher
(`remeasured`): the search's own timings may have shared the CPU with other work.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from autocompress.run import cpu_info

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "tasks"))
import regions as pc  # noqa: E402

TASK_FILE = HERE / "tasks" / "regions.py"
DEPTH_RESULTS = HERE / "results" / "regions_depth.jsonl"
RESULTS = HERE / "results" / "bench_transformers.jsonl"
TECHNIQUES = {"heads": "heads", "mlp": "mlp", "drop ": "layers", "prune ": "prune", "rank": "lowrank", "fused": "fuse",
              "dyn8": "matmul", "w4": "matmul", "int8": "quantize", "int4": "quantize", "kd ": "distill", "mbconv": "blocks"}


def commit_here() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()


def check_depth(name: str) -> dict:
    """The teacher's val accuracy against a 1-layer, 1-head model of the same width trained
    the same way (recorded once per task-file version)."""
    key = pc._cache(name).stem
    if DEPTH_RESULTS.exists():
        for line in DEPTH_RESULTS.read_text().splitlines():
            row = json.loads(line)
            if row["key"] == key:
                return row
    t0 = time.perf_counter()
    teacher = pc.teacher(name, log=lambda s: print(f"  {name} teacher: {s}", flush=True))
    taught = time.perf_counter() - t0
    shallow = pc.train(pc.model_of(name, 1, 1), pc.maker(name), log=lambda s: print(f"  {name} 1-layer 1-head: {s}", flush=True))
    _, val, test = pc.splits(name)
    row = {"date": dt.date.today().isoformat(), "commit": commit_here(), "key": key, "model": name, "cpu": cpu_info(),
           "teacher_val": pc.accuracy(teacher, val), "shallow_val": pc.accuracy(shallow, val),
           "teacher_test": pc.accuracy(teacher, test), "shallow_test": pc.accuracy(shallow, test), "steps": pc.STEPS,
           "teacher_train_s": round(taught, 1)}
    row["gap_pts"] = 100 * (row["teacher_val"] - row["shallow_val"])
    DEPTH_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(DEPTH_RESULTS, "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def search(name: str, out: Path, budget: int, seed: int, time_budget: str | None) -> str:
    spec = f"{TASK_FILE}:{name}_task"
    if (out / "run.json").exists():
        args = ["search", "--resume", str(out), "--budget", str(budget)]
    else:
        args = ["search", "--task", spec, "--budget", str(budget), "--seed", str(seed), "--profile", "cpu-1thread", "--out", str(out)]
    if time_budget:
        args += ["--time-budget", time_budget]
    subprocess.run([sys.executable, "-m", "autocompress.cli", *args], check=True)
    return " ".join(["autocompress", *args])


def techniques_of(description: str) -> list[str]:
    """The techniques a description names ('no prune', 'no fine-tune' name none)."""
    said = description.replace("no prune", "").replace("no fine-tune", "")
    return sorted({t for code, t in TECHNIQUES.items() if code in said})


def analyse(out: Path) -> dict:
    manifest = json.loads((out / "run.json").read_text())
    teacher = manifest["teacher"]
    metric = manifest.get("metric", {}).get("name", "accuracy")
    val_col, test_col = f"val_{metric}", f"test_{metric}"
    trials = pd.read_csv(out / "trials.csv")
    front = pd.read_csv(out / "pareto.csv")
    fused = teacher.get("baselines", {}).get("fused", {}).get("latency_ratio")  # the fused fp32 teacher's latency / the teacher's
    front["test_drop"] = 100 * (teacher[test_col] - front[test_col])
    front["vs_fused"] = front["speedup"] * fused if fused else float("nan")
    ok = front[(front["acc_drop_pts"] <= 1.0) & (front["test_drop"] <= 1.0)]
    small = ok[ok["size_reduction"] >= 4.0]

    def point(row) -> dict:
        return {"trial": int(row["number"]), "description": row["description"], "speedup": float(row["speedup"]),
                "speedup_vs_fused": float(row["vs_fused"]), "size_reduction": float(row["size_reduction"]),
                "val_drop_pts": float(row["acc_drop_pts"]), "test_drop_pts": float(row["test_drop"]),
                "techniques": techniques_of(row["description"])}

    return {
        "teacher_val": teacher[val_col], "teacher_test": teacher[test_col], "teacher_ms": teacher["latency_ms"],
        "teacher_size": teacher["size_bytes"], "fused_latency_ratio": fused,
        "trials": int(len(trials)), "failed": int(trials["state"].eq("FAIL").sum()),
        "best_small": point(small.loc[small["speedup"].idxmax()]) if len(small) else None,
        "best_within_1pt": point(ok.loc[ok["speedup"].idxmax()]) if len(ok) else None,
        "front_within_1pt": [point(r) for _, r in ok.sort_values("speedup", ascending=False).iterrows()],
        "targets_met": bool(len(small) and (small["speedup"] >= 3).any() and (small["vs_fused"] >= 1.5).any()
                            and ((small["speedup"] >= 3) & (small["vs_fused"] >= 1.5)).any()),
    }


def remeasure(out: Path, trial: int) -> dict:
    """Time trial's ONNX file again here against the teacher as exported and the fused fp32
    teacher, interleaved, under the run's profile, on the task's timing feed."""
    import yaml

    from autocompress.evaluation import measure_interleaved
    from autocompress.hardware import profile_from_dict
    from autocompress.run import RunDir, load_run_task

    profile = profile_from_dict(yaml.safe_load((out / "profile.yaml").read_text()))
    profile.pin_process()
    feed = load_run_task(RunDir(out)).timing_feed(profile)
    path = out / pd.read_csv(out / "pareto.csv").set_index("number").loc[trial, "onnx"]
    row = {}
    for name, ref in (("exported", out / "teacher" / "model.onnx"), ("fused", out / "teacher" / "model.fused.onnx")):
        if ref.exists():
            r = measure_interleaved(ref, path, profile, feed)
            row[f"speedup_vs_{name}"] = round(1.0 / r.ratio, 3)
            row[f"{name}_ms"] = round(r.reference_median_ms, 4)
            row["candidate_ms"] = round(r.candidate_median_ms, 4)
    return row


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="text,vit")
    ap.add_argument("--budget", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-budget", default=None, help="per call, e.g. 50m: stop there and resume on the next call")
    ap.add_argument("--out", default="runs/bench-transformers")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    os.environ.setdefault("AUTOCOMPRESS_WORKERS", "1")
    for name in args.models.split(","):
        depth = check_depth(name)
        print(f"{name}: teacher val {100 * depth['teacher_val']:.1f}%, 1-layer 1-head {100 * depth['shallow_val']:.1f}% "
              f"(gap {depth['gap_pts']:.1f} pt; goal >= 5)", flush=True)
        out = Path(args.out) / name
        t0 = time.perf_counter()
        command = search(name, out, args.budget, args.seed, args.time_budget)
        wall = round(time.perf_counter() - t0, 1)
        done = pd.read_csv(out / "trials.csv")
        if int((done["number"] >= 0).sum()) < args.budget:
            print(f"{name}: {int((done['number'] >= 0).sum())} of {args.budget} trials so far ({wall:.0f} s); run again to go on")
            continue
        row = {"date": dt.date.today().isoformat(), "commit": commit_here(), "note": args.note, "model": name, "budget": args.budget,
               "seed": args.seed, "command": command, "cpu": cpu_info(), "wall_s_last_call": wall, "depth": depth, **analyse(out)}
        for key in ("best_small", "best_within_1pt"):
            if row[key]:
                row[key]["remeasured"] = remeasure(out, row[key]["trial"])
        with open(RESULTS, "a") as f:
            f.write(json.dumps(row) + "\n")
        best = row["best_small"] or row["best_within_1pt"]
        print(f"{name}: best at <= 1 pt (val and test), >= 4x smaller: "
              + (f"{best['speedup']:.2f}x vs exported, {best['speedup_vs_fused']:.2f}x vs fused, {best['size_reduction']:.1f}x smaller: "
                 f"{best['description']}" if best else "none"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
