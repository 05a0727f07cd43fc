"""Compare searches by hypervolume (autocompress.pareto): for each run directory, the
volume its complete trials dominate in the teacher-normalised space (accuracy drop in
points on val, latency ratio, size ratio), reference point pareto.REFERENCE.

    .venv/bin/python experiments/hypervolume.py RUN_DIR [RUN_DIR ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from autocompress.pareto import REFERENCE, hypervolume, normalized_objectives


def run_hypervolume(run_dir: Path) -> dict:
    manifest = json.loads((run_dir / "run.json").read_text())
    teacher = manifest["teacher"]
    trials = pd.read_csv(run_dir / "trials.csv")
    done = trials[(trials["state"] == "COMPLETE") & trials["duplicate_of"].isna()]
    pts = normalized_objectives(done["val_accuracy"], done["latency_ratio"], done["size_bytes"],
                                teacher_accuracy=teacher["val_accuracy"], teacher_size_bytes=teacher["size_bytes"])
    front = pd.read_csv(run_dir / "pareto.csv")
    uses_block = front["description"].str.contains(r"(?:^|· )[\w.]+=(?!keep)", regex=True)
    return {
        "run": str(run_dir), "space_fingerprint": manifest["space_fingerprint"], "seed": manifest["seed"],
        "budget": manifest["budget"], "trials": int(len(done)), "hypervolume": hypervolume(pts, REFERENCE),
        "front_points": int(len(front)), "front_points_with_blocks": int(uses_block.sum()),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = [run_hypervolume(Path(r)) for r in args.runs]
    print(pd.DataFrame(rows).to_string(index=False))
    if args.json:
        Path(args.json).write_text(json.dumps({"reference": REFERENCE, "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
