"""Re-check a run's front in a fresh process: for every point in pareto.csv, reload the
ONNX file, recompute val (and test) accuracy, and re-time it interleaved with the
teacher under the run's profile. Prints recorded vs re-measured values.

    .venv/bin/python experiments/check_front.py RUN_DIR [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

from autocompress.evaluation import measure_interleaved, onnx_accuracy
from autocompress.hardware import profile_from_dict
from autocompress.run import RunDir, load_run_task


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--json")
    args = ap.parse_args()
    run = Path(args.run_dir)
    profile = profile_from_dict(yaml.safe_load((run / "profile.yaml").read_text()))
    task = load_run_task(RunDir(Path(run)))
    front = pd.read_csv(run / "pareto.csv")
    teacher = run / "teacher" / "model.onnx"
    rows = []
    for _, r in front.iterrows():
        path = run / r["onnx"]
        val = onnx_accuracy(path, task.val.x.numpy(), task.val.y.numpy())
        test = onnx_accuracy(path, task.test.x.numpy(), task.test.y.numpy()) if task.test is not None else float("nan")
        lat = measure_interleaved(teacher, path, profile, task.input_shape)
        rows.append({
            "trial": int(r["number"]), "val_recorded": r["val_accuracy"], "val_now": val,
            "test_recorded": r.get("test_accuracy"), "test_now": test,
            "speedup_recorded": r["speedup"], "speedup_now": 1 / lat.ratio,
            "speedup_change_pct": 100 * ((1 / lat.ratio) / r["speedup"] - 1),
        })
    df = pd.DataFrame(rows)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    exact = bool((df["val_recorded"] == df["val_now"]).all())
    within = bool((df["speedup_change_pct"].abs() <= 15).all())
    print(f"\naccuracy reproduced exactly: {exact}; every speedup within ±15%: {within} "
          f"(max change {df['speedup_change_pct'].abs().max():.1f}%)")
    if args.json:
        Path(args.json).write_text(json.dumps({"exact_accuracy": exact, "speedup_within_15pct": within, "rows": rows}, indent=2))
    return 0 if exact and within else 1


if __name__ == "__main__":
    sys.exit(main())
