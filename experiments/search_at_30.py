"""Does a 30-trial search beat the hand recipes? The demo and two tasks built for this
(experiments/tasks/: a VGG-style CNN on synthetic images, a 1-D convolution + MLP model on
synthetic signals), searched side by side, seeded.

    .venv/bin/python experiments/search_at_30.py [--tasks demo,vgg,conv1d] [--seeds 0,1,2] [--budget 30] [--out runs/at30]
        [--space SPACE.yaml]

Each (task, seed) is one `autocompress search` subprocess, as a user would run it. Read
from the run directory, per run:
  * best_recipe_speedup: the fastest hand recipe within 1 pt of the teacher on val (hand
    recipes off the front have no test accuracy: val only);
  * best_speedup: the fastest front point within 1 pt of the teacher on val and on test;
  * gain: best_speedup / best_recipe_speedup (the acceptance asks >= 1.3, median of 3 seeds);
  * within_1pt / within_10pt: the share of searched (non-recipe) trials within 1 and 10 pt
    on val; hypervolume in the teacher-normalised space of autocompress.pareto.
Appends one JSON line per run to experiments/results/search_at_30.jsonl (date, commit,
command, CPU model and flags) and prints a Markdown table.
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

from autocompress.pareto import REFERENCE, hypervolume, normalized_objectives
from autocompress.run import cpu_info

HERE = Path(__file__).resolve().parent
TASKS = {
    "demo": [],
    "vgg": ["--model", str(HERE / "tasks" / "vgg_patterns.py:build_model"), "--data", str(HERE / "tasks" / "vgg_patterns.py:build_data")],
    "conv1d": ["--model", str(HERE / "tasks" / "conv1d_signals.py:build_model"), "--data", str(HERE / "tasks" / "conv1d_signals.py:build_data")],
}


def commit_here() -> str:
    """The commit of the checkout these scripts run from (a benchmark records it)."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()


def run_search(search_args: list[str], out: Path) -> tuple[str, float]:
    """`autocompress search ... --out out` in a subprocess, as a user runs it, into a fresh
    `out`; (the command as a user would type it, wall seconds)."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "autocompress.cli", "search", *search_args, "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return " ".join(["autocompress", *cmd[3:]]), round(time.perf_counter() - t0, 1)


def analyse(out: Path) -> dict:
    manifest = json.loads((out / "run.json").read_text())
    teacher = manifest["teacher"]
    trials = pd.read_csv(out / "trials.csv")
    front = pd.read_csv(out / "pareto.csv")
    if "recipe" not in trials:  # a space that can express no hand recipe
        trials["recipe"] = None
    done = trials[trials["state"].eq("COMPLETE")]
    drop = (teacher["val_accuracy"] - done["val_accuracy"]) * 100
    recipes = done[done["recipe"].notna() & (drop <= 1.0)]
    best_recipe = float((1 / recipes["latency_ratio"]).max()) if len(recipes) else float("nan")
    ok = front[(front["acc_drop_pts"] <= 1.0) & ((teacher["test_accuracy"] - front["test_accuracy"]) * 100 <= 1.0)]
    best = float(ok["speedup"].max()) if len(ok) else float("nan")
    searched = done[done["recipe"].isna()]
    sdrop = (teacher["val_accuracy"] - searched["val_accuracy"]) * 100
    n_searched = int((trials["recipe"].isna()).sum())
    built = done[done["duplicate_of"].isna()] if "duplicate_of" in done else done
    pts = normalized_objectives(built["val_accuracy"], built["latency_ratio"], built["size_bytes"],
                                teacher_accuracy=teacher["val_accuracy"], teacher_size_bytes=teacher["size_bytes"])
    return {
        "teacher_val": teacher["val_accuracy"], "teacher_test": teacher["test_accuracy"], "teacher_ms": teacher["latency_ms"],
        "trials": int(len(trials)), "failed": int(trials["state"].eq("FAIL").sum()),
        "best_recipe_speedup": best_recipe, "best_speedup": best, "gain": best / best_recipe if best_recipe == best_recipe else float("nan"),
        "best_point": str(ok.loc[ok["speedup"].idxmax(), "description"]) if len(ok) else None,
        "within_1pt": float((sdrop <= 1.0).sum() / n_searched) if n_searched else float("nan"),
        "within_10pt": float((sdrop <= 10.0).sum() / n_searched) if n_searched else float("nan"),
        "hypervolume": hypervolume(pts, REFERENCE),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="demo,vgg,conv1d")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--space", default=None, help="a search space instead of the default")
    ap.add_argument("--out", default="runs/at30")
    ap.add_argument("--note", default="")
    ap.add_argument("--results", default=str(HERE / "results" / "search_at_30.jsonl"))
    args = ap.parse_args()
    commit = commit_here()
    rows = []
    for task in args.tasks.split(","):
        for seed in map(int, args.seeds.split(",")):
            out = Path(args.out) / f"{task}-s{seed}"
            command, wall = run_search([*TASKS[task], "--budget", str(args.budget), "--seed", str(seed),
                                        *(["--space", args.space] if args.space else [])], out)
            row = {"date": dt.date.today().isoformat(), "commit": commit, "note": args.note, "task": task, "seed": seed,
                   "budget": args.budget, "command": command, "cpu": cpu_info(), "wall_s": wall, **analyse(out)}
            rows.append(row)
            with open(args.results, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{task} seed {seed}: best within 1 pt {row['best_speedup']:.2f}x vs recipe {row['best_recipe_speedup']:.2f}x, "
                  f"{100 * row['within_1pt']:.0f}% of searched trials within 1 pt, {row['wall_s']:.0f} s", flush=True)
    df = pd.DataFrame(rows)
    cols = ["task", "seed", "teacher_val", "best_recipe_speedup", "best_speedup", "gain", "within_1pt", "within_10pt", "hypervolume", "failed", "wall_s"]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
