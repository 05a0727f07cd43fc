"""Sample efficiency: the hypervolume a search has reached after n trials, the default search
(TPE after the hand recipes and the climb) against Optuna's RandomSampler (after the same
hand recipes, nothing else), seeded, on the demo or a task of search_at_30.py.

    .venv/bin/python experiments/sample_efficiency.py --task demo --seeds 0,1,2 \
        --arms tpe:50,random:150 [--out runs/eff]

Each (arm, seed) is one `autocompress search` subprocess. The hypervolume after n trials is
that of the complete, non-duplicate trials numbered below n, in the teacher-normalised space
of autocompress.pareto (reference pareto.REFERENCE), each with the latency ratio the study
was told (not the end-of-search re-measurement, which only front points get). Appends one
JSON line per run (the curve every 5 trials; date, commit, command, CPU) to
experiments/results/sample_efficiency.jsonl and prints the medians per arm.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from autocompress.pareto import REFERENCE, hypervolume, normalized_objectives
from autocompress.run import cpu_info

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from search_at_30 import TASKS, commit_here, run_search  # noqa: E402


def curve(out: Path, step: int = 5) -> dict[int, float]:
    """{n: hypervolume of the trials numbered below n} for n = step, 2 step, ..., all."""
    teacher = json.loads((out / "run.json").read_text())["teacher"]
    trials = pd.read_csv(out / "trials.csv").sort_values("number")
    told = trials["latency_ratio_recorded"].where(trials["latency_ratio_recorded"].notna(), trials["latency_ratio"]) \
        if "latency_ratio_recorded" in trials else trials["latency_ratio"]
    ok = trials["state"].eq("COMPLETE") & trials["duplicate_of"].isna()
    n_all = int(trials["number"].max()) + 1
    out_curve = {}
    for n in [*range(step, n_all, step), n_all]:
        sel = ok & (trials["number"] < n)
        pts = normalized_objectives(trials.loc[sel, "val_accuracy"], told[sel], trials.loc[sel, "size_bytes"],
                                    teacher_accuracy=teacher["val_accuracy"], teacher_size_bytes=teacher["size_bytes"])
        out_curve[n] = hypervolume(pts, REFERENCE) if len(pts) else 0.0
    return out_curve


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="demo", choices=list(TASKS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default="tpe:50,random:150", help="sampler:budget, comma-separated")
    ap.add_argument("--out", default="runs/eff")
    ap.add_argument("--note", default="")
    ap.add_argument("--results", default=str(HERE / "results" / "sample_efficiency.jsonl"))
    args = ap.parse_args()
    commit = commit_here()
    rows = []
    for arm in args.arms.split(","):
        sampler, budget = arm.split(":")
        for seed in map(int, args.seeds.split(",")):
            out = Path(args.out) / f"{args.task}-{sampler}-s{seed}"
            command, wall = run_search([*TASKS[args.task], "--sampler", sampler, "--budget", budget, "--seed", str(seed)], out)
            row = {"date": dt.date.today().isoformat(), "commit": commit, "note": args.note, "task": args.task, "sampler": sampler,
                   "budget": int(budget), "seed": seed, "command": command, "cpu": cpu_info(), "wall_s": wall,
                   "hypervolume_at": curve(out)}
            rows.append(row)
            with open(args.results, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{sampler} seed {seed}: {budget} trials, hypervolume {row['hypervolume_at'][max(row['hypervolume_at'])]:.3f}, "
                  f"{row['wall_s']:.0f} s", flush=True)
    table = {}
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        runs = [r["hypervolume_at"] for r in rows if r["sampler"] == sampler]
        ns = sorted(set.intersection(*(set(c) for c in runs)))
        table[sampler] = {n: float(np.median([c[n] for c in runs])) for n in ns}
    print(pd.DataFrame(table).to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
