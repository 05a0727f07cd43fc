"""Command line: `autocompress search ...`, `autocompress profiles`, `autocompress verify
RUN_DIR`. User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Optional, Sequence

from autocompress import __version__
from autocompress.backends import BACKENDS, SAMPLERS
from autocompress.errors import AutocompressError

EXIT_USAGE = 2
EXIT_STOPPED = 3  # search: stopped early because its trials kept failing (autocompress.stopping); the outputs are written
EXIT_INTERRUPTED = 130


def parse_duration(text: str) -> float:
    """'900', '900s', '15m', '1h', '1h30m' -> seconds."""
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or m is None or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"expected a duration like 900, 900s, 15m or 1h30m, got {text!r}")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autocompress", description="Measured, joint compression search for PyTorch models.")
    p.add_argument("--version", action="version", version=f"autocompress {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search", help="search for compressed models; writes a run directory with the Pareto front",
                       description="Without --model/--data, runs on the built-in digits demo.")
    s.add_argument("--model", metavar="FILE.py:FN", help="function returning your trained nn.Module")
    s.add_argument("--data", metavar="FILE.py:FN", help="function returning (train, val[, test]) Datasets of (x, y)")
    s.add_argument("--checkpoint", metavar="FILE", help="state_dict to load into the model (weights_only)")
    s.add_argument("--task", metavar="FILE.py:FN", help="function returning an autocompress.Task (instead of --model/--data)")
    s.add_argument("--space", metavar="NAME|FILE", help="search space: built-in name or YAML file (default: default)")
    s.add_argument("--profile", metavar="NAME|FILE", help="hardware profile: built-in name or YAML file (default: cpu-1thread)")
    s.add_argument("--budget", type=int, metavar="N", help="total trials of the study (default 100; on --resume may be raised)")
    s.add_argument("--time-budget", type=parse_duration, metavar="DURATION", help="wall-clock limit, e.g. 15m; the trial in flight finishes")
    s.add_argument("--seed", type=int, help="seed of the sampler and fine-tuning (default 0)")
    s.add_argument("--workers", type=int, metavar="N", help="trials at once on this machine, each with its share of the cores; "
                   "latency is still timed with nothing else running (default 1, or $AUTOCOMPRESS_WORKERS)")
    s.add_argument("--worker", action="store_true", default=None,
                   help="with --resume: join the run as one of several processes sharing its study and budget "
                        "(SQLite: on this machine; see README 'Several workers on one study')")
    s.add_argument("--storage", metavar="URL", help="an RDB URL (postgresql://..., mysql://..., sqlite:///FILE) for the run's study "
                   "instead of its study.db: workers on several machines share it (see README 'Several workers on one study')")
    s.add_argument("--sampler", choices=SAMPLERS, help="Optuna sampler (default tpe)")
    s.add_argument("--max-failures", type=int, metavar="N", help="stop after N failed trials (outputs written, exit code 3); "
                   "the search also stops when its first 5 trials other than the hand recipes fail with the same error")
    s.add_argument("--trial-timeout", type=parse_duration, metavar="DURATION", help="a trial over it, e.g. 10m, fails as timed out; "
                   "trials then run in a worker process, ended and restarted after a timeout")
    loud = s.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_true", help="print only errors and, at the end, where the results are")
    loud.add_argument("-v", "--verbose", action="count", default=0, help="more detail: a line per pipeline stage, each trial in words")
    s.add_argument("--max-acc-drop", type=float, metavar="PTS", help="accuracy-drop limit in points for the front (constraint)")
    s.add_argument("--device", metavar="DEVICE", help="where fine-tunes run: auto (default: cuda when torch sees one), cpu, cuda or cuda:N; "
                   "export, calibration and latency stay on the CPU under the profile")
    s.add_argument("--max-metric-drop", type=float, metavar="D",
                   help="the same limit for any metric, in its units (points for accuracy and top5): how much worse than the teacher on val")
    s.add_argument("--out", metavar="DIR", help="run directory (default runs/<task>-<time>)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue the study in RUN_DIR up to its (or a raised) budget")
    s.add_argument("--latency", choices=["measured", "predicted"], help="measured (default): timed under --profile; "
                   "predicted: from --table, nothing is timed (verify the front on the device later)")
    s.add_argument("--table", metavar="TABLE.json", help="device latency table (autocompress profile-device); with measured latency "
                   "its predictions are recorded next to the measurements, for autocompress audit")
    f = s.add_argument_group("multi-fidelity (successive halving)")
    f.add_argument("--fidelity", metavar="STEPS,STEPS", help="fine-tune steps per rung, e.g. 50,150: every candidate gets the first, "
                   "only the most promising the full one; finetune.steps is then not searched")
    f.add_argument("--reduction-factor", type=int, metavar="ETA", help="the top 1/ETA of each rung is promoted (default 3; with --fidelity)")
    r = s.add_argument_group("cluster (Ray Tune)")
    r.add_argument("--backend", choices=BACKENDS, help="optuna: trials here, --workers at a time (default); ray: trials as Ray processes")
    r.add_argument("--ray-address", metavar="auto|HOST:PORT", help="join this Ray cluster (default: start a local instance for the run)")
    r.add_argument("--cpus-per-trial", type=float, metavar="N", help="CPUs each trial reserves (default 1)")
    r.add_argument("--max-concurrent", type=int, metavar="N", help="trials at once (default: as many as the CPUs allow)")
    r.add_argument("--latency-resource", metavar="NAME", help="time latency on the node carrying this custom resource, e.g. hw:edge")
    r.add_argument("--accuracy-on-device", action="store_true", default=None,
                   help="measure val accuracy there too, with the profile's execution providers (with --latency-resource)")
    sub.add_parser("profiles", help="list the built-in hardware profiles and whether each runs here")
    d = sub.add_parser("profile-device", help="measure this device's per-layer latency table for --latency predicted / audit",
                       description="Samples candidates from the search space, times them and each of their layer configurations "
                                   "here (as ratios), and writes the table the latency predictor uses.")
    d.add_argument("--out", required=True, metavar="TABLE.json")
    d.add_argument("--profile", metavar="NAME|FILE", help="hardware profile (default: cpu-1thread)")
    d.add_argument("--model", metavar="FILE.py:FN")
    d.add_argument("--data", metavar="FILE.py:FN")
    d.add_argument("--checkpoint", metavar="FILE")
    d.add_argument("--task", metavar="FILE.py:FN", help="function returning an autocompress.Task (instead of --model/--data)")
    d.add_argument("--space", metavar="NAME|FILE", help="search space to sample candidates from (default: default)")
    d.add_argument("--samples", type=int, default=300, metavar="N", help="candidates sampled, timed whole and profiled node by node (default 300; more cover more of the space)")
    d.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("audit", help="compare predicted latency and FLOPs with measured latency for every trial of a run")
    a.add_argument("run_dir", metavar="RUN_DIR")
    a.add_argument("--table", metavar="TABLE.json", help="predict every trial now from this table (default: the predictions recorded by search --table)")
    v = sub.add_parser("verify", help="re-measure a run's front points here and compare with what the run recorded",
                       description="Exit code 1 when a front point's speedup is not reproduced within ±7% (±15% under 0.1 ms).")
    v.add_argument("run_dir", metavar="RUN_DIR")
    v.add_argument("--profile", metavar="NAME|FILE", help="hardware profile to measure with (default: the run's)")
    v.add_argument("--repeats", type=int, default=5, metavar="N", help="independent measurements per point; the median is compared (default 5)")
    rp = sub.add_parser("report", help="write pareto.png, pareto.html and report.md into a run directory from what it recorded",
                        description="Nothing is measured: the files are made from run.json, trials.csv and pareto.csv.")
    rp.add_argument("run_dir", metavar="RUN_DIR")
    sh = sub.add_parser("show", help="a run's summary (teacher and front), or one trial's configuration, metrics, stage times and files")
    sh.add_argument("run_dir", metavar="RUN_DIR")
    sh.add_argument("--trial", type=int, metavar="N", help="show trial N (default: the run's summary)")
    e = sub.add_parser("export", help="copy a chosen trial's deployable ONNX file out of a run",
                       description="--best takes the completed trial with the lowest latency (or smallest size) within the drop "
                                   "limit, ties broken by size (or latency), then by trial number; the limit is the search's unless given.")
    e.add_argument("run_dir", metavar="RUN_DIR")
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="export trial N")
    which.add_argument("--best", action="store_true", help="export the best trial within the drop limit")
    e.add_argument("--max-acc-drop", type=float, metavar="PTS", help="with --best: accuracy-drop limit in points (default: the search's limit)")
    e.add_argument("--max-metric-drop", type=float, metavar="D", help="with --best: the same limit for any metric, in its units")
    e.add_argument("--objective", choices=["latency", "size"], help="with --best: what 'best' means (default latency)")
    e.add_argument("--out", required=True, metavar="FILE.onnx", help="where the ONNX file goes (its directory must exist)")
    e.add_argument("--torch", action="store_true", help="also write the trial's state_dict, to FILE.pt (an error if the run kept none)")
    return p


def _quiet_library_logs(command: str) -> None:
    """The command line prints its own progress, so for this process: Optuna's INFO line per
    trial goes, and so does Ray Tune's advice (Tuner.restore, missing metrics of stopped
    trials), which does not apply here (resume with --resume). Library code leaves both alone."""
    import logging

    if command in ("search", "audit", "profile-device"):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    if command == "search":
        logging.getLogger("ray.tune").setLevel(logging.ERROR)  # read by Ray when it is imported; Ray sets only "ray"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_library_logs(args.command)
    try:
        if args.command == "search":
            from autocompress.api import search

            result = search(
                args.task, model=args.model, data=args.data, checkpoint=args.checkpoint, space=args.space, profile=args.profile,
                budget=args.budget, time_budget=args.time_budget, seed=args.seed, sampler=args.sampler,
                out=args.out, resume=args.resume, max_acc_drop=args.max_acc_drop, max_metric_drop=args.max_metric_drop, device=args.device, backend=args.backend,
                ray_address=args.ray_address, cpus_per_trial=args.cpus_per_trial, max_concurrent=args.max_concurrent,
                latency_resource=args.latency_resource, accuracy_on_device=args.accuracy_on_device, fidelity=args.fidelity,
                latency=args.latency, table=args.table, reduction_factor=args.reduction_factor, workers=args.workers,
                verbosity=-1 if args.quiet else min(args.verbose, 1), max_failures=args.max_failures, trial_timeout=args.trial_timeout, worker=args.worker, storage=args.storage,
            )
            if result.stopped is not None:
                return EXIT_STOPPED
        elif args.command == "profiles":
            from autocompress.hardware import profiles_table

            print(profiles_table())
        elif args.command == "profile-device":
            from autocompress.profile_device import ProfileDeviceOptions, profile_device

            profile_device(ProfileDeviceOptions(out=args.out, profile=args.profile, model=args.model, data=args.data, checkpoint=args.checkpoint, task=args.task,
                                                space=args.space, samples=args.samples, seed=args.seed))
        elif args.command == "audit":
            from autocompress.audit import audit

            audit(args.run_dir, table=args.table)
        elif args.command == "verify":
            from autocompress.verify import VerifyOptions, verify

            table = verify(VerifyOptions(args.run_dir, profile=args.profile, repeats=args.repeats))
            return 0 if table.empty or table["reproduced"].all() else 1
        elif args.command == "report":
            from autocompress.api import report

            for path in report(args.run_dir):
                print(path)
        elif args.command == "show":
            from autocompress.api import show
            from autocompress.inspect_run import render

            print(render(show(args.run_dir, trial=args.trial)))
        elif args.command == "export":
            from autocompress.api import export
            from autocompress.deploy import render_export

            print(render_export(export(args.run_dir, args.out, trial=args.trial, best=args.best, max_acc_drop=args.max_acc_drop,
                                       max_metric_drop=args.max_metric_drop, objective=args.objective, torch=args.torch)))
    except AutocompressError as exc:
        print(f"autocompress: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("autocompress: interrupted; finished trials are saved (resume with --resume RUN_DIR)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
