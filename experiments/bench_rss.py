"""Benchmark: peak memory of a search on streamed data, at two dataset sizes 10x apart.

    .venv/bin/python experiments/bench_rss.py [--small 2000] [--factor 10] [--budget 4] [--out runs/bench-rss]

Runs `autocompress search --task experiments/tasks/streamed_images.py:task` (images made on
demand from their index, 48 KiB each in memory) in a subprocess, once with --small train
samples and once with factor x as many (val and test a fifth of train each), with the same
model, space (experiments/spaces/rss_bench.yaml) and seed, under a profile that times
quickly (the timing protocol does not touch the data). While each runs, the resident set
size of the search process and every process under it (the latency worker, the teacher's
training) is read from /proc every 0.1 s and summed; the peak of that sum is recorded,
next to what the data would take in memory (samples x 48 KiB). The claim checked: the
two peaks are within 20% of each other although the larger data would not fit in the
smaller run's whole peak. Appends a dated JSON line to experiments/results/bench_rss.jsonl
and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLE_BYTES = 3 * 64 * 64 * 4
PROFILE = "name: rss-bench\nwarmup: 3\nrepeats: 10\npasses: 3\nmax_passes: 5\n"


def _tree_rss(root_pid: int) -> int:
    """Bytes resident, summed over `root_pid` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def run(n: int, budget: int, out: Path, profile: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "autocompress.cli", "search", "--task", str(HERE / "tasks" / "streamed_images.py") + ":task",
           "--space", str(HERE / "spaces" / "rss_bench.yaml"), "--profile", str(profile), "--budget", str(budget),
           "--seed", "0", "--out", str(out)]
    env = {**os.environ, "AUTOCOMPRESS_BENCH_TRAIN": str(n)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.1)
    if proc.returncode != 0:
        raise SystemExit(f"the search with {n} samples failed (exit {proc.returncode})")
    import pandas as pd

    csv = pd.read_csv(out / "trials.csv")
    n_total = n + 2 * (n // 5)
    return {"train_samples": n, "samples": n_total, "data_bytes_in_memory": n_total * SAMPLE_BYTES, "peak_rss_bytes": peak,
            "wall_s": round(time.perf_counter() - t0, 1), "trials_complete": int(csv["state"].eq("COMPLETE").sum()),
            "trials_failed": int(csv["state"].eq("FAIL").sum())}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--budget", type=int, default=4)
    ap.add_argument("--out", default="runs/bench-rss")
    ap.add_argument("--results", default=str(HERE / "results" / "bench_rss.jsonl"))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    profile = out / "profile.yaml"
    profile.write_text(PROFILE)
    small = run(args.small, args.budget, out / "small", profile)
    large = run(args.small * args.factor, args.budget, out / "large", profile)
    manifest = json.loads((out / "large" / "run.json").read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    ratio = large["peak_rss_bytes"] / small["peak_rss_bytes"]
    record = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": commit or None,
        "command": " ".join(["experiments/bench_rss.py", f"--small {args.small}", f"--factor {args.factor}", f"--budget {args.budget}"]),
        "cpu": manifest["cpu"]["model"], "cpu_flags": manifest["cpu"].get("flags"),
        "small": small, "large": large, "peak_ratio": round(ratio, 3),
        "large_data_exceeds_small_peak": large["data_bytes_in_memory"] > small["peak_rss_bytes"],
        "within_20pct": abs(ratio - 1) <= 0.2,
    }
    with open(args.results, "a") as f:
        f.write(json.dumps(record) + "\n")
    mib = 1 << 20
    print(f"| train samples | data in memory (MiB) | peak RSS, process tree (MiB) | wall (s) | trials complete / failed |\n|---|---|---|---|---|")
    for r in (small, large):
        print(f"| {r['train_samples']} | {r['data_bytes_in_memory'] / mib:.0f} | {r['peak_rss_bytes'] / mib:.0f} | {r['wall_s']} | "
              f"{r['trials_complete']} / {r['trials_failed']} |")
    print(f"\npeak ratio {ratio:.3f} (within 20%: {record['within_20pct']}); the larger data exceed the smaller run's peak: "
          f"{record['large_data_exceeds_small_peak']}; {record['cpu']}, commit {commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
