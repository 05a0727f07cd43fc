"""Benchmark: trials per minute of the demo search with the local backend and with the Ray
backend at 1 and 2 concurrent trials on this machine.

    .venv/bin/python experiments/ray_concurrency.py [--budget 24] [--seed 0]

Each arm is a fresh `autocompress search` subprocess on the demo (the default space, the
same seed and budget) into runs/ray-bench-<arm>; trials per minute = trials / the search
loop's wall time (run.json timing.search_s: without start-up and the final outputs), and
also over the whole command's wall time (with Ray's start-up). Appends to
experiments/results/ray_concurrency.jsonl and prints a table.
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

HERE = Path(__file__).resolve().parent
ARMS = {
    "optuna": [],
    "ray-1": ["--backend", "ray", "--max-concurrent", "1", "--cpus-per-trial", "1"],
    "ray-2": ["--backend", "ray", "--max-concurrent", "2", "--cpus-per-trial", "1"],
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--results", default=str(HERE / "results" / "ray_concurrency.jsonl"))
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    rows = []
    for arm in args.arms:
        out = Path("runs") / f"ray-bench-{arm}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "autocompress.cli", "search", "--budget", str(args.budget), "--seed", str(args.seed),
               "--out", str(out), *ARMS[arm]]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        timing = json.loads((out / "run.json").read_text())["timing"][-1]
        trials = pd.read_csv(out / "trials.csv")
        built = trials[trials["duplicate_of"].isna() & (trials["state"] == "COMPLETE")]
        row = {
            "date": dt.date.today().isoformat(), "commit": commit, "arm": arm,
            "command": " ".join(["autocompress", *cmd[3:]]), "trials": int(len(trials)),
            "failed": int((trials["state"] == "FAIL").sum()), "wall_s": round(wall, 1), "search_s": round(timing["search_s"], 1),
            "trials_per_min_search": round(len(trials) / timing["search_s"] * 60, 2),
            "trials_per_min_wall": round(len(trials) / wall * 60, 2),
            "mean_trial_s": round(float(built["t_total"].mean()), 2),
            "mean_finetune_s": round(float(built["t_finetune"].mean()), 2),
            "mean_latency_s": round(float(built["t_latency"].mean()), 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(args.results, "a") as f:
            f.write(json.dumps(row) + "\n")
    print(pd.DataFrame(rows)[["arm", "trials", "failed", "wall_s", "search_s", "trials_per_min_search", "trials_per_min_wall",
                              "mean_trial_s", "mean_finetune_s", "mean_latency_s"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
