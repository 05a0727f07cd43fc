"""Benchmark: the demo search at --budget 100, wall time and per-stage breakdown.

    .venv/bin/python experiments/bench_demo.py [--budget 100] [--seed 0] [--workers N] [--space FILE] [--out runs/bench-demo]

Runs `autocompress search` in a subprocess (as a user would), then reads the run
directory: per-stage seconds summed over trials (prune / fine-tune / export / quantize /
accuracy / latency), engine overhead = search-loop wall time minus the time spent inside
candidate builds (with N workers: N x the wall time minus the builds, i.e. the time a
worker sat idle, waiting for a latency measurement or for the driver), the front, its
best speedup within 1 pt (val and test) and the hypervolume of the built trials (as
search_at_30.py). The commit recorded is the one of the autocompress package imported
(run it with PYTHONPATH=<a worktree of another commit> to benchmark that commit). Appends a dated JSON line to experiments/results/bench_demo.jsonl
and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from autocompress.pipeline import stage_names

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sampler", default="tpe")
    ap.add_argument("--space", help="search space (default: the built-in default)")
    ap.add_argument("--workers", type=int, help="trials at once (default: the search's default)")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default="runs/bench-demo")
    ap.add_argument("--results", default=str(HERE / "results" / "bench_demo.jsonl"))
    args = ap.parse_args()
    import autocompress

    root = Path(autocompress.__file__).resolve().parent.parent  # the checkout benchmarked
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "autocompress.cli", "search", "--budget", str(args.budget), "--seed", str(args.seed),
           "--sampler", args.sampler, "--out", str(out), *(["--space", str(Path(args.space).resolve()) if Path(args.space).is_file() else args.space] if args.space else []),
           *(["--workers", str(args.workers)] if args.workers else [])]
    t0 = time.perf_counter()
    # run from the checkout benchmarked: `python -m` puts the working directory first on
    # sys.path, ahead of PYTHONPATH, so another checkout there would be imported instead
    subprocess.run(cmd, check=True, cwd=root)
    wall = time.perf_counter() - t0

    manifest = json.loads((out / "run.json").read_text())
    timing = manifest["timing"][-1]
    trials = pd.read_csv(out / "trials.csv")
    front = pd.read_csv(out / "pareto.csv")
    built = trials[trials["duplicate_of"].isna()]
    stage = {s: float(built.get(f"t_{s}", pd.Series(dtype=float)).fillna(0).sum()) for s in stage_names()}
    in_trials = float(built["t_total"].fillna(0).sum())
    workers = int(timing.get("workers", 1))
    overhead = workers * timing["search_s"] - in_trials
    teacher = manifest["teacher"]
    good = front[(front["acc_drop_pts"] <= 1.0) & (front["speedup"] >= 2.0)]
    if "test_accuracy" in front and teacher.get("test_accuracy") is not None:
        good = good[(teacher["test_accuracy"] - good["test_accuracy"]) * 100 <= 1.0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root).stdout.strip()
    from search_at_30 import analyse

    quality = analyse(out)
    result = {
        "date": dt.date.today().isoformat(),
        "commit": commit or None,
        "note": args.note,
        "command": " ".join(["autocompress", *cmd[3:]]),
        "cpu": manifest["cpu"]["model"],
        "cpu_flags": manifest["cpu"].get("flags"),
        "workers": workers,
        "budget": args.budget,
        "wall_s": round(wall, 1),
        "setup_s": round(wall - timing["search_s"] - timing["finalize_s"], 1),
        "search_s": round(timing["search_s"], 1),
        "finalize_s": round(timing["finalize_s"], 1),
        "stage_s": {k: round(v, 1) for k, v in stage.items()},
        "engine_overhead_s": round(overhead, 1),
        "engine_overhead_share": round(overhead / (workers * timing["search_s"]), 4),
        "finetune_reused": int(built["finetune_reused_from"].notna().sum()) if "finetune_reused_from" in built else 0,
        "hypervolume": round(quality["hypervolume"], 4),
        "best_recipe_speedup_within_1pt": round(quality["best_recipe_speedup"], 2),
        "gain_over_recipes": round(quality["gain"], 3),
        "trials": int(len(trials)),
        "built": int(len(built)),
        "duplicates": int(trials["duplicate_of"].notna().sum()),
        "failed": int((trials["state"] == "FAIL").sum()),
        "front_points": int(len(front)),
        "points_2x_within_1pt": int(len(good)),
        "best_speedup_within_1pt": round(float(good["speedup"].max()), 2) if len(good) else None,
        "teacher": teacher,
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
