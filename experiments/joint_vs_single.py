"""Joint vs single technique: the default joint space against the same space restricted to
one technique (experiments/spaces/only_*.yaml: pruning, quantization, low rank or blocks
alone, each with the fine-tune and distillation it needs) or with distillation off
(no_distill.yaml), at equal budget, seeded.

    .venv/bin/python experiments/joint_vs_single.py --task demo --seeds 0,1,2 --budget 30 [--out runs/jvs]

Each (arm, seed) is one `autocompress search` subprocess; per run the hypervolume
(autocompress.pareto, as in search_at_30.py) and the best speedup within 1 pt. Appends one
JSON line per run to experiments/results/joint_vs_single.jsonl (date, commit, command, CPU)
and prints the median hypervolume per arm and the joint arm's over the best single arm.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from search_at_30 import TASKS, analyse, commit_here, run_search  # noqa: E402

from autocompress.run import cpu_info  # noqa: E402

ARMS = {
    "joint": "default",
    "prune only": str(HERE / "spaces" / "only_prune.yaml"),
    "quantize only": str(HERE / "spaces" / "only_quantize.yaml"),
    "lowrank only": str(HERE / "spaces" / "only_lowrank.yaml"),
    "blocks only": str(HERE / "spaces" / "only_blocks.yaml"),
    "no distillation": str(HERE / "spaces" / "no_distill.yaml"),
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="demo", choices=list(TASKS))
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--out", default="runs/jvs")
    ap.add_argument("--note", default="")
    ap.add_argument("--results", default=str(HERE / "results" / "joint_vs_single.jsonl"))
    args = ap.parse_args()
    commit = commit_here()
    rows = []
    for arm in args.arms.split(","):
        for seed in map(int, args.seeds.split(",")):
            out = Path(args.out) / f"{args.task}-{arm.replace(' ', '_')}-s{seed}"
            command, wall = run_search([*TASKS[args.task], "--space", ARMS[arm], "--budget", str(args.budget), "--seed", str(seed)], out)
            row = {"date": dt.date.today().isoformat(), "commit": commit, "note": args.note, "task": args.task, "arm": arm, "seed": seed,
                   "budget": args.budget, "command": command, "cpu": cpu_info(), "wall_s": wall, **analyse(out)}
            rows.append(row)
            with open(args.results, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{arm} seed {seed}: hypervolume {row['hypervolume']:.3f}, best within 1 pt {row['best_speedup']:.2f}x, "
                  f"{row['wall_s']:.0f} s", flush=True)
    df = pd.DataFrame(rows)
    med = df.groupby("arm")[["hypervolume", "best_speedup"]].median()
    print(med.to_string(float_format=lambda v: f"{v:.3f}"))
    if "joint" in med.index and len(med) > 1:
        single = med.drop("joint")["hypervolume"]
        print(f"joint / best single ({single.idxmax()}): {med.loc['joint', 'hypervolume'] / single.max():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
