"""Hypervolume per CPU-minute with and without multi-fidelity (successive halving over the
fine-tune length) on the demo.

Each arm is one `autocompress search` run in this process with the same seed and the same
wall-clock budget. A sampling thread records the CPU seconds of the whole process tree
(this process, the latency worker, any other child; from /proc) once a second; each
complete trial is placed on that CPU axis by its completion time, so the hypervolume
curve is "volume dominated by the complete trials finished after c CPU-minutes"
(autocompress.pareto, the teacher-normalised space and reference point of
experiments/hypervolume.py; duplicates and stopped trials add nothing).

    .venv/bin/python experiments/multi_fidelity.py --time-budget 420 --seed 0 \
        --fidelity 50,150 --json experiments/results/multi_fidelity.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import optuna

from autocompress.pareto import REFERENCE, hypervolume, normalized_objectives
from autocompress.driver import SearchOptions, search

_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """user + system CPU seconds of `root` and all its live descendants, plus what its
    reaped children used."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        parents[pid] = int(fields[1])
        own = (int(fields[11]) + int(fields[12])) / _TICK
        reaped = (int(fields[13]) + int(fields[14])) / _TICK
        times[pid] = own + reaped
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return sum(times.get(p, 0.0) for p in tree)


class CpuClock:
    """(wall time, process-tree CPU seconds) samples, once a second, in a thread."""

    def __init__(self, period: float = 1.0):
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)

    def _run(self, period: float) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), tree_cpu_seconds(os.getpid())))
            self._stop.wait(period)

    def __enter__(self) -> "CpuClock":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), tree_cpu_seconds(os.getpid())))

    def cpu_at(self, wall: float) -> float:
        walls, cpus = zip(*self.samples)
        return float(np.interp(wall, walls, cpus))


def run_arm(name: str, out: Path, *, seed: int, time_budget: float, fidelity: str | None, eta: int | None) -> dict:
    lines: list[str] = []
    with CpuClock() as clock:
        t0 = time.time()
        cpu0 = clock.samples[0][1] if clock.samples else tree_cpu_seconds(os.getpid())
        search(SearchOptions(out=str(out), seed=seed, budget=10_000, time_budget=time_budget, fidelity=fidelity, reduction_factor=eta),
               progress=lambda s: (lines.append(s), print(f"[{name}] {s}", flush=True)))
        t1 = time.time()
    manifest = json.loads((out / "run.json").read_text())
    teacher = manifest["teacher"]
    study = optuna.load_study(study_name="autocompress", storage=f"sqlite:///{out / 'study.db'}")
    trials = [t for t in study.trials if t.datetime_complete is not None]
    states = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    done = sorted((t for t in trials if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs),
                  key=lambda t: t.datetime_complete)
    # a search's first CPU goes to loading the task and measuring the teacher: the curve starts at 0 anyway
    cpu_done = [(clock.cpu_at(t.datetime_complete.replace(tzinfo=None).timestamp()) - cpu0) / 60.0 for t in done]
    curve = []
    for i in range(1, len(done) + 1):
        sub = done[:i]
        pts = normalized_objectives([t.values[0] for t in sub], [t.values[1] for t in sub], [t.values[2] for t in sub],
                                    teacher_accuracy=teacher["val_accuracy"], teacher_size_bytes=teacher["size_bytes"])
        curve.append((round(cpu_done[i - 1], 3), round(hypervolume(pts, REFERENCE), 4)))
    cpu_total = (clock.samples[-1][1] - cpu0) / 60.0
    hv = curve[-1][1] if curve else 0.0
    return {
        "arm": name, "run": str(out), "seed": seed, "fidelity": manifest.get("fidelity"), "time_budget_s": time_budget,
        "wall_s": round(t1 - t0, 1), "cpu_minutes": round(cpu_total, 2), "trials": states, "hypervolume": hv,
        "hypervolume_per_cpu_minute": round(hv / cpu_total, 4) if cpu_total else None, "curve_cpu_min_hv": curve,
    }


def hv_at(curve: list, cpu_min: float) -> float:
    return max([hv for c, hv in curve if c <= cpu_min], default=0.0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time-budget", type=float, default=420)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fidelity", default="50,150")
    ap.add_argument("--reduction-factor", type=int, default=3)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--arms", default="full,mf")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for arm in args.arms.split(","):
        out = Path(args.runs_dir) / f"fidelity-{arm}-s{args.seed}"
        fid = args.fidelity if arm == "mf" else None
        rows.append(run_arm(arm, out, seed=args.seed, time_budget=args.time_budget, fidelity=fid, eta=args.reduction_factor if fid else None))
    marks = [2, 4, 6, 8, 10, 12]
    for r in rows:
        r["hv_at_cpu_minutes"] = {str(m): hv_at(r["curve_cpu_min_hv"], m) for m in marks}
        print(f"{r['arm']:>5}: {r['trials']} HV {r['hypervolume']:.3f} in {r['cpu_minutes']:.1f} CPU-min "
              f"({r['hypervolume_per_cpu_minute']} per CPU-min); HV at CPU-min {r['hv_at_cpu_minutes']}")
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        path = Path(args.json)
        old = json.loads(path.read_text()) if path.exists() else {"runs": []}
        old["runs"] = [r for r in old["runs"] if (r["arm"], r["seed"]) not in {(x["arm"], x["seed"]) for x in rows}] + rows
        old.update(reference=REFERENCE, machine=f"{platform.machine()} {os.cpu_count()} cores", command=" ".join(sys.argv),
                   date=datetime.now(timezone.utc).strftime("%Y-%m-%d"), commit=commit)
        path.write_text(json.dumps(old, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
