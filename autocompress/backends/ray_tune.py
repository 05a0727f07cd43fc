"""The cluster backend: the same search through Ray Tune.

A `tune.Tuner` runs the trials as Ray processes; its search algorithm is Ray's
`OptunaSearch` over the run's own Optuna study (the SQLite file in the run directory, the
same sampler and the same three directions as the local backend), so trials.csv,
pareto.csv, resume and every later command work the same on both backends.

Ray actors serve the trials:
  * `LatencyService` times candidates against the teacher (the teacher's own reference
    timing included) with the usual interleaved protocol. With `latency_resource` it
    requests that custom resource, so it runs on the node that carries the target device
    (`ray start --resources '{"hw:edge": 1}'`); trials may fine-tune anywhere. With
    --accuracy-on-device it also runs the val accuracy there. One actor answers one call
    at a time, so measurements never overlap each other.
  * `ArtifactSink`, pinned to the driver's node, writes each trial's ONNX file and
    state_dict into the run directory: workers need no shared file system.
  * with multi-fidelity, a `RungBoard` (autocompress.fidelity) on the driver's node holds every
    rung's results and answers each trial's promotion question.

Ray 2.60's `OptunaSearch` tells Optuna that a trial a scheduler stopped is COMPLETE with
its last reported values (Tune passes it the last result), and so is any trial that
reported without error, whatever it reported. `_GuardedOptunaSearch` tells COMPLETE only
for a trial whose last report is a finished candidate (`final`), PRUNED for one our
multi-fidelity stage stopped at a rung (`stopped`), and FAIL otherwise, with the reason,
so only full results enter the front. (An errored trial reaches the searcher
without its result through Tune and becomes FAIL either way; the guard does not rely on
that.)

Networking: a local instance, and a cluster addressed as 127.0.0.1 / localhost, are kept
on the loopback interface with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which must be set
before Ray is imported (backends.ray_cluster.open_session does); without it Ray 2.60 swaps
127.0.0.1 for the machine's primary address and listens on every interface.

Ray's private parts, checked against Ray 2.60.0 (RAY_CHECKED_AGAINST): Tune's OptunaSearch
keeps its trials in private attributes, which `_GuardedOptunaSearch` reads through five
small methods at the end of its class and nowhere else; `connect` passes `ray.init` its
underscore options `_node_ip_address` and `_temp_dir` (a local instance on 127.0.0.1 in a
temp dir of its own).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import optuna
import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from autocompress.backends import OBJECTIVES
from autocompress.backends.study import DIRECTIONS, STUDY_NAME, RunStudy, StudyBacked, open_storage
from autocompress.errors import CandidateError, CandidateStopped, one_line
from autocompress.fidelity import RungBoard, board_history
from autocompress.pipeline import evaluate_candidate

RAY_CHECKED_AGAINST = "2.60.0"
METRICS = list(OBJECTIVES)  # the keys trials report their values under; the study names them (backends.objective_names)
MODES = ["max" if d == "maximize" else "min" for d in DIRECTIONS]
LATENCY_ACTOR = "autocompress-latency"
SINK_ACTOR = "autocompress-sink"
_PRIVATE = "_ac_"  # prefix of the config keys we add next to the sampled parameters
_NO_VALUES = dict.fromkeys(METRICS, float("nan"))  # Tune wants the metrics in every report


# --------------------------------------------------------------------------- cluster


@dataclass(frozen=True)
class RayOptions:
    address: Optional[str] = None  # None: start a local Ray instance for this run
    cpus_per_trial: float = 1.0
    max_concurrent: Optional[int] = None  # None: as many as the cluster's CPUs allow
    latency_resource: Optional[str] = None  # e.g. "hw:edge"
    accuracy_on_device: bool = False  # val accuracy measured by the latency service too (on the device's node)
    num_cpus: Optional[int] = None  # for a local instance (default: all cores)


def connect(opts: RayOptions) -> Optional[str]:
    """Join `opts.address`, or start a local instance bound to the loopback interface in a
    temp dir of its own (returned, for removal after shutdown): never another run's."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune tables on the console: we print our own progress
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials resolve the task's files like the driver
    if opts.address is None:
        temp_dir = tempfile.mkdtemp(prefix="acray-")
        ray.init(address="local", num_cpus=opts.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 _temp_dir=temp_dir, log_to_driver=False, configure_logging=False)
        return temp_dir
    ray.init(address=opts.address, log_to_driver=False, configure_logging=False)
    return None


def check_resource(name: str) -> None:
    total = ray.cluster_resources().get(name, 0)
    if total < 1:
        have = sorted(k for k in ray.cluster_resources() if not k.startswith("node:") and k not in ("CPU", "GPU", "memory", "object_store_memory"))
        raise ValueError(f"--latency-resource {name!r}: no node of the cluster carries it (custom resources: {have or 'none'}); "
                         f"start the device's node with ray start --resources '{{\"{name}\": 1}}'")


@ray.remote(num_cpus=0)  # its latency worker process restarts itself; the actor is not restarted
class LatencyService:
    """Holds the teacher ONNX file and a latency worker process on its node."""

    def __init__(self, teacher_onnx: bytes, profile, timing, val=None, quiet=None):
        from autocompress.evaluation import CachedLatency, LatencyWorker

        self._dir = Path(tempfile.mkdtemp(prefix="autocompress-latency-"))
        self._teacher = self._dir / "teacher.onnx"
        self._teacher.write_bytes(teacher_onnx)
        self._profile = profile
        self._val = val  # (val split, its Metric, output kind) when the metric is measured on the device too
        self._quiet = quiet  # QuietPhase: trials on this node pause while it measures
        self._worker = CachedLatency(LatencyWorker(self._teacher, profile, timing), profile)

    def measure(self, onnx: bytes, fresh: bool = False):
        """(LatencyResult, node id) for an ONNX file's bytes, timed against the teacher
        (an identical file under the same profile: the earlier result, unless `fresh`)."""
        path = self._dir / "candidate.onnx"
        path.write_bytes(onnx)
        if self._quiet is not None:
            ray.get(self._quiet.measure_begin.remote())
        t0 = time.time()
        try:
            result = self._worker.measure(path, fresh=fresh)
        finally:
            t1 = time.time()
            if self._quiet is not None:
                ray.get(self._quiet.measure_end.remote())
        return result, ray.get_runtime_context().get_node_id(), (t0, t1)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def accuracy(self, onnx: bytes):
        """(the task's val metric, node id) of an ONNX file's bytes, run on this node with
        the profile's execution providers (one call at a time: never during a timing)."""
        from autocompress.evaluation import split_metric

        if self._val is None:
            raise RuntimeError("the latency service was started without the validation split (--accuracy-on-device)")
        split, metric, kind = self._val
        path = self._dir / "candidate-accuracy.onnx"
        path.write_bytes(onnx)
        acc = split_metric(path, split, metric, kind=kind, providers=tuple(self._profile.providers))
        return acc, ray.get_runtime_context().get_node_id()

    def close(self) -> None:
        self._worker.close()
        shutil.rmtree(self._dir, ignore_errors=True)


@ray.remote(num_cpus=0)
class QuietPhase:
    """Latency measurement and trials' CPU work on the same node take turns (a
    readers-writer lock: any number of trials compute at once; a measurement waits until
    none does, and trials that want to start wait while a measurement is pending or
    running). Trials step aside between fine-tune steps (`checkpoint`). A holder that
    vanished (a killed trial) cannot block measurements for more than `stale_s`."""

    def __init__(self, stale_s: float = 60.0):
        self._holders: dict[str, float] = {}  # trial token -> last time it was heard of
        self._waiting = 0
        self._measuring = False
        self._cond = None
        self._stale_s = stale_s

    def _c(self):
        import asyncio

        if self._cond is None:  # made on the actor's event loop
            self._cond = asyncio.Condition()
        return self._cond

    def _drop_stale(self) -> None:
        now = time.monotonic()
        for token in [t for t, seen in self._holders.items() if now - seen > self._stale_s]:
            del self._holders[token]

    async def train_begin(self, token: str) -> None:
        c = self._c()
        async with c:
            await c.wait_for(lambda: not self._measuring and self._waiting == 0)
            self._holders[token] = time.monotonic()

    async def train_end(self, token: str) -> None:
        c = self._c()
        async with c:
            self._holders.pop(token, None)
            c.notify_all()

    async def checkpoint(self, token: str) -> bool:
        """Called by a computing trial now and then: steps aside (returns True) if a
        measurement is waiting, else only says it is alive."""
        if self._waiting == 0 and not self._measuring:
            self._holders[token] = time.monotonic()
            return False
        await self.train_end(token)
        await self.train_begin(token)
        return True

    async def measure_begin(self) -> None:
        import asyncio

        c = self._c()
        async with c:
            self._waiting += 1
            try:
                while self._holders or self._measuring:
                    try:
                        await asyncio.wait_for(c.wait(), timeout=1.0)
                    except asyncio.TimeoutError:
                        self._drop_stale()
            finally:
                self._waiting -= 1
            self._measuring = True

    async def measure_end(self) -> None:
        c = self._c()
        async with c:
            self._measuring = False
            c.notify_all()


class QuietGate:
    """A trial's side of QuietPhase: `busy()` while it computes (reentrant), `step()`
    between fine-tune steps (asks the actor at most every `every_s` seconds), and
    `paused()` around its own calls to the latency service. Records the intervals it
    computed (wall clock) in `windows`."""

    def __init__(self, actor, every_s: float = 0.2):
        import uuid

        self._actor = actor
        self._token = uuid.uuid4().hex
        self._every = every_s
        self._depth = 0
        self._start = 0.0
        self._last = 0.0
        self.windows: list[tuple[float, float]] = []

    def _acquire(self) -> None:
        ray.get(self._actor.train_begin.remote(self._token))
        self._start = self._last = time.time()

    def _release(self) -> None:
        self.windows.append((self._start, time.time()))
        ray.get(self._actor.train_end.remote(self._token))

    @contextmanager
    def busy(self):
        if self._depth == 0:
            self._acquire()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._release()

    def step(self) -> None:
        now = time.time()
        if self._depth == 0 or now - self._last < self._every:
            return
        self._last = now
        if ray.get(self._actor.checkpoint.remote(self._token)):
            self.windows.append((self._start, now))  # it stepped aside from `now` until just now
            self._start = self._last = time.time()

    @contextmanager
    def paused(self):
        if self._depth == 0:
            yield
            return
        self._release()
        try:
            yield
        finally:
            self._acquire()


@ray.remote(num_cpus=0)
class ArtifactSink:
    """Writes trial artifacts into the run directory on the driver's node."""

    def __init__(self, run_path: str):
        self._root = Path(run_path)

    def write(self, rel: str, data: bytes) -> None:
        from autocompress.atomic import write_bytes_atomic

        dest = self._root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(dest, data)


def start_services(run_path: Path, teacher_onnx: Path, profile, timing, opts: RayOptions, val=None):
    """Create the latency, artifact and quiet-phase actors for this run; returns
    (latency, sink, quiet, the latency service's node id). `timing`: the feed candidates
    are timed on (LoadedTask.timing_feed); `val`: (the validation split, the task's Metric,
    its output kind), for the metric on the device's node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    pinned = NodeAffinitySchedulingStrategy(here, soft=False)
    sink = ArtifactSink.options(scheduling_strategy=pinned).remote(str(run_path))
    quiet = QuietPhase.options(scheduling_strategy=pinned).remote()
    args = (teacher_onnx.read_bytes(), profile, timing, val, quiet)
    if opts.latency_resource:  # RaySession checked that the cluster carries it
        latency = LatencyService.options(resources={opts.latency_resource: 1}).remote(*args)
    else:
        latency = LatencyService.options(scheduling_strategy=pinned).remote(*args)
    return latency, sink, quiet, ray.get(latency.node_id.remote())


class RemoteLatency:
    """LatencyWorker's interface over the LatencyService actor; remembers where and when
    it measured. With a QuietGate, a call steps out of the trial's busy phase."""

    def __init__(self, actor, gate: Optional[QuietGate] = None):
        self._actor = actor
        self._pause = gate.paused if gate is not None else nullcontext
        self.node_ids: list[str] = []
        self.accuracy_node_ids: list[str] = []
        self.windows: list[tuple[float, float]] = []

    def measure(self, path: Path, *, fresh: bool = False):
        data = Path(path).read_bytes()
        with self._pause():
            result, node, window = ray.get(self._actor.measure.remote(data, fresh))
        self.node_ids.append(node)
        self.windows.append(window)
        return result

    def accuracy(self, path: Path) -> float:
        """Val accuracy of the ONNX file at `path`, measured on the service's node."""
        data = Path(path).read_bytes()
        with self._pause():
            acc, node = ray.get(self._actor.accuracy.remote(data))
        self.accuracy_node_ids.append(node)
        return acc

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class TrialSetup:
    """What a trial needs to rebuild the pipeline context on any node."""

    task_model: Optional[str]
    task_data: Optional[str]
    checkpoint: Optional[str]
    task_fingerprint: str
    space: Any  # the bound SearchSpace
    profile: Any
    teacher: Any  # pipeline.TeacherBaseline of the driver (its numbers; the path is not used)
    seed: int
    latency: Any  # LatencyService handle
    sink: Any  # ArtifactSink handle
    teacher_state: Any = None  # the driver's teacher weights: every node compresses the same model
    cpus_per_trial: float = 1.0
    cwd: Optional[str] = None  # the driver's working directory: relative task paths resolve from it
    accuracy_on_device: bool = False
    quiet: Any = None  # QuietPhase handle: trials on the latency node take turns with measurements
    latency_node: Optional[str] = None
    table: Any = None  # a device latency table: its predictions are recorded next to the measurements
    teacher_macs: int = 0
    task_spec: Optional[str] = None  # --task FILE.py:FN (instead of model and data)


_CONTEXTS: dict[str, Any] = {}  # per worker process: task fingerprint -> (task, soft targets, calibration)


def _context(setup: TrialSetup):
    import torch

    from autocompress.pipeline import PipelineContext
    from autocompress.tasks import load_task
    from autocompress.training import teacher_logits

    if setup.task_fingerprint not in _CONTEXTS:
        here = os.getcwd()
        if setup.cwd is not None and (setup.task_model is not None or setup.task_spec is not None):
            if not os.path.isdir(setup.cwd):
                raise CandidateError(f"setup: the driver's working directory {setup.cwd} does not exist on node "
                                     f"{ray.get_runtime_context().get_node_id()[:8]}: put the task's files at the same paths on every node")
            os.chdir(setup.cwd)
        try:
            task = load_task(setup.task_model, setup.task_data, setup.checkpoint, task=setup.task_spec, progress=lambda s: None)
        finally:
            os.chdir(here)
        if setup.teacher_state is not None:
            task.teacher.load_state_dict(setup.teacher_state)
            task.teacher.eval()
        if task.fingerprint != setup.task_fingerprint:
            raise CandidateError(f"setup: the task on node {ray.get_runtime_context().get_node_id()[:8]} differs from the "
                                 f"driver's (fingerprint {task.fingerprint} != {setup.task_fingerprint})")
        _CONTEXTS[setup.task_fingerprint] = (task, teacher_logits(task.teacher, task.train), task.calibration)
    task, soft, calib = _CONTEXTS[setup.task_fingerprint]
    torch.set_num_threads(max(1, int(setup.cpus_per_trial)))
    here = ray.get_runtime_context().get_node_id()
    gate = QuietGate(setup.quiet) if setup.quiet is not None and here == setup.latency_node else None  # same cores as the timing
    return PipelineContext(task=task, profile=setup.profile, teacher=setup.teacher, soft_targets=soft, calibration=calib,
                           _latency_worker=RemoteLatency(setup.latency, gate), accuracy_on_device=setup.accuracy_on_device, gate=gate,
                           table=setup.table, teacher_macs=setup.teacher_macs)


def run_trial(config: dict[str, Any], setup: TrialSetup, fidelity=None, board=None) -> None:
    """The Tune trainable: build and measure one candidate, report it once (`final`), or
    report its failure reason (a candidate that fails is not retried). With multi-fidelity
    the rung decisions come from `board` (a RungBoard actor) and a candidate that is not
    promoted reports `stopped`."""
    number = int(config[_PRIVATE + "number"])
    if _PRIVATE + "duplicate_of" in config:  # already built and measured: nothing to do
        tune.report({"final": True, "duplicate": True, **_NO_VALUES})
        return
    params = {k: v for k, v in config.items() if not k.startswith(_PRIVATE)}
    local = Path(tempfile.mkdtemp(prefix="autocompress-trial-"))
    t0 = time.perf_counter()
    try:
        try:
            ctx = _context(setup)
        except CandidateError:
            raise
        except Exception as exc:  # noqa: BLE001 - the same on every try: recorded, not retried
            raise CandidateError(f"setup: {one_line(exc)}") from exc
        cfg = setup.space.config_from_params(params)
        kw = {}
        if fidelity is not None:
            kw = {"fidelity": fidelity, "at_rung": lambda rung, acc, ratio: ray.get(board.decide.remote(rung, number, acc, ratio))}
        outcome = evaluate_candidate(cfg, number, ctx, local, seed=setup.seed, **kw)
        ray.get([setup.sink.write.remote(outcome.attrs[k], (local / outcome.attrs[k]).read_bytes()) for k in ("onnx", "state_dict")])
        attrs = dict(outcome.attrs, t_total=time.perf_counter() - t0,
                     latency_node=ctx.latency_worker.node_ids[-1], trial_node=ray.get_runtime_context().get_node_id())
        if setup.accuracy_on_device:
            attrs["accuracy_node"] = ctx.latency_worker.accuracy_node_ids[-1]
        # wall-clock intervals: when this trial computed on the latency node, and when its latencies were timed
        attrs["measure_windows"] = ctx.latency_worker.windows
        if ctx.gate is not None:
            attrs["busy_windows"] = ctx.gate.windows
        # Tune flattens nested results for searchers: the attributes travel as one JSON string
        tune.report({"final": True, **dict(zip(METRICS, outcome.values)), "attrs_json": json.dumps(attrs)})
    except CandidateStopped as stop:
        attrs = {"rung_results": stop.rung_results, "t_total": time.perf_counter() - t0}
        tune.report({"final": False, "stopped": True, "stop_reason": stop.reason, "attrs_json": json.dumps(attrs), **_NO_VALUES})
    except CandidateError as exc:
        tune.report({"final": False, "failure_reason": str(exc), "t_total": time.perf_counter() - t0, **_NO_VALUES})
    finally:
        shutil.rmtree(local, ignore_errors=True)


# --------------------------------------------------------------------------- searcher


class _DefineByRun:
    """OptunaSearch's define-by-run function: our space samples through the Optuna trial;
    a config that was already built is marked so the trial only copies its result."""

    def __init__(self, run_study: RunStudy, built: dict[str, int]):
        self.run_study = run_study
        self.built = built

    def __call__(self, trial) -> dict[str, Any]:
        ot = trial.ot_trial
        cfg = self.run_study.space.suggest(trial)
        self.run_study.describe(ot, cfg)
        extra = {_PRIVATE + "number": ot.number}
        if cfg.id in self.built:
            extra[_PRIVATE + "duplicate_of"] = self.built[cfg.id]
        return extra


class _GuardedOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna COMPLETE only for a finished candidate, FAIL (with
    the reason) for everything else, and stores the candidate's attributes on the trial."""

    def __init__(self, *args, define: _DefineByRun, budget: Optional[int] = None, **kwargs):
        super().__init__(*args, space=define, **kwargs)
        self._define = define
        self.budget = budget  # the search's: the structured start plans against it (None: no structured start)
        self.numbers: dict[str, int] = {}  # Tune trial id -> Optuna trial number
        self.pending: dict[str, Any] = {}  # errored trials waiting for their reason
        self.stopping = False  # the search stops early (autocompress.stopping): Tune ends the trials in flight

    def suggest(self, trial_id: str):
        if self.budget is not None:
            self._define.run_study.using(self._study()).plan_ahead(self.budget)
        config = super().suggest(trial_id)
        if config is not None:
            self.numbers[trial_id] = self._open_trial(trial_id).number
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # several objectives: Optuna takes no intermediate values

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        ot_trial = self._open_trial(trial_id)
        if ot_trial is None or self._is_done(trial_id):
            return
        rs, built = self._define.run_study.using(self._study()), self._define.built
        if result and result.get("final") and not error:
            if result.get("duplicate"):
                rs.tell_duplicate(ot_trial, built[ot_trial.user_attrs["candidate_id"]])
            else:
                rs.tell_complete(ot_trial, [result[m] for m in METRICS], json.loads(result["attrs_json"]))
                built.setdefault(ot_trial.user_attrs["candidate_id"], ot_trial.number)
        elif result and result.get("stopped") and not error:  # not promoted at a rung: never in the front
            attrs = json.loads(result["attrs_json"])
            ot_trial.set_user_attr("t_total", attrs["t_total"])
            rs.tell_stopped(ot_trial, result["stop_reason"], attrs["rung_results"])
            built.setdefault(ot_trial.user_attrs["candidate_id"], ot_trial.number)
        elif error:
            # Tune tells the callbacks what went wrong only after this call (on_trial_error):
            # the trial stays open until fail() is given the reason (or finish_pending()).
            self.pending[trial_id] = ot_trial
            return
        elif self.stopping and not (result or {}).get("failure_reason"):  # ended by the early stop: built again on --resume
            rs.interrupt(ot_trial, "ended: the search stopped early; re-enqueued")
        else:
            reason = (result or {}).get("failure_reason") or "stopped before it finished"
            if result and "t_total" in result:
                ot_trial.set_user_attr("t_total", result["t_total"])
            rs.tell_failed(ot_trial, reason)
        self._mark_done(trial_id)

    def fail(self, trial_id: str, reason: str) -> None:
        """Record an errored trial as FAIL with `reason` (from the Tune callback)."""
        ot_trial = self.pending.pop(trial_id, None)
        if ot_trial is not None:
            self._define.run_study.using(self._study()).tell_failed(ot_trial, reason)
            self._mark_done(trial_id)

    def finish_pending(self) -> None:
        for trial_id in list(self.pending):
            self.fail(trial_id, "the trial's process failed")

    # ---- OptunaSearch's private state (Ray 2.60.0): the only place it is read or written
    def open_trials(self) -> list[tuple[str, Any]]:
        """(Tune trial id, Optuna trial) of every trial asked for and not yet told."""
        return [(tid, t) for tid, t in self._ot_trials.items() if tid not in self._completed_trials]

    def _open_trial(self, trial_id: str):
        return self._ot_trials.get(trial_id)

    def _is_done(self, trial_id: str) -> bool:
        return trial_id in self._completed_trials

    def _mark_done(self, trial_id: str) -> None:
        self._completed_trials.add(trial_id)

    def _study(self) -> optuna.Study:
        return self._ot_study


class _StopAll(tune.Stopper):
    """Ends the whole experiment once `stop()` is true (autocompress.stopping); never one trial alone."""

    def __init__(self, stop: Callable[[], bool], searcher: _GuardedOptunaSearch):
        self._stop = stop
        self._searcher = searcher

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        if self._stop():
            self._searcher.stopping = True
        return self._searcher.stopping


class _Progress(tune.Callback):
    def __init__(self, searcher: _GuardedOptunaSearch, on_trial: Callable[[int], None]):
        self._searcher = searcher
        self._on_trial = on_trial

    def on_trial_complete(self, iteration, trials, trial, **info):
        number = self._searcher.numbers.get(trial.trial_id)
        if number is not None:
            self._on_trial(number)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = trial.get_error()
        self._searcher.fail(trial.trial_id, f"the trial's process failed: {one_line(error)}" if error else "the trial's process failed")
        number = self._searcher.numbers.get(trial.trial_id)
        if number is not None:
            self._on_trial(number)


# --------------------------------------------------------------------------- backend


class RayTuneBackend(StudyBacked):
    """Backend (see backends.Backend) over the run's RunStudy, as the local backend's;
    trials run through a Ray Tune Tuner (see the module docstring). `setup` is what every
    trial needs."""

    def __init__(self, storage_url: str, space, *, setup: TrialSetup, opts: RayOptions, run_path: Path, sampler: str = "tpe",
                 seed: int = 0, max_acc_drop: Optional[float] = None, fidelity=None, climb_limit: Optional[float] = None, metric=None,
                 study_name: str = STUDY_NAME):
        self.run_study = RunStudy(storage_url, space, sampler=sampler, seed=seed, max_acc_drop=max_acc_drop, fidelity=fidelity,
                                  climb_limit=climb_limit, metric=metric, study_name=study_name)
        self.setup = setup
        self.opts = opts
        self.run_path = Path(run_path)

    def optimize(self, evaluate=None, *, budget: int, time_budget: Optional[float] = None,
                 on_trial: Callable[[dict[str, Any]], None] = lambda record: None, clock=time.monotonic,
                 stop: Callable[[], bool] = lambda: False) -> None:
        """Run trials until `budget` are finished or `stop()` is true (`evaluate` is unused:
        trials build their candidates themselves from `setup`). Stopped that way, the trials
        in flight are ended, marked interrupted and enqueued again, as after Ctrl-C (built on --resume)."""
        rs = self.run_study
        remaining = budget - rs.finished_count()
        if remaining <= 0:
            return
        searcher = _GuardedOptunaSearch(
            define=_DefineByRun(rs, rs.built_candidates()), metric=METRICS, mode=MODES, sampler=rs.sampler(),
            study_name=rs.study_name, storage=open_storage(rs.storage_url), budget=budget,
        )
        board = None
        if rs.fidelity is not None:  # one rung board for all trials, on the driver's node, seeded with the study's rungs
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = ray.get_runtime_context().get_node_id()
            board = ray.remote(num_cpus=0)(RungBoard).options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(
                rs.fidelity, board_history(rs.study.get_trials(deepcopy=False)))
        trainable = tune.with_resources(tune.with_parameters(run_trial, setup=self.setup, fidelity=rs.fidelity, board=board),
                                        {"cpu": self.opts.cpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=remaining, max_concurrent_trials=self.opts.max_concurrent,
                                        time_budget_s=time_budget, reuse_actors=True),  # a trial process keeps its loaded task
            run_config=tune.RunConfig(
                name="tune", storage_path=str((self.run_path / "ray").resolve()), verbose=0, stop=_StopAll(stop, searcher),
                failure_config=tune.FailureConfig(max_failures=1),
                callbacks=[_Progress(searcher, lambda number: on_trial(rs.record_of(number)))],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
        try:
            tuner.fit()
        finally:
            searcher.finish_pending()
        if self._close_interrupted(searcher) and not stop():
            raise KeyboardInterrupt  # Tune caught Ctrl-C and stopped: the CLI says so, outputs are written

    def _close_interrupted(self, searcher: _GuardedOptunaSearch) -> bool:
        """Trials Tune left running (it stops on Ctrl-C): FAIL 'interrupted', params enqueued
        again so a resumed run builds them, as the local backend's recovery does."""
        open_trials = searcher.open_trials()
        for tid, ot_trial in open_trials:
            self.run_study.interrupt(ot_trial, "interrupted (Ctrl-C); re-enqueued")
            searcher._mark_done(tid)
        return bool(open_trials)


class RaySession:
    """One search's use of Ray: connect (or start a local instance), create the services,
    describe the trials, and disconnect (a local instance is stopped) on close()."""

    def __init__(self, opts: RayOptions):
        self.opts = opts
        try:
            self.temp_dir = connect(opts)
        except Exception as exc:  # noqa: BLE001 - a bad address or a cluster that is not up
            where = f"--ray-address {opts.address}" if opts.address else "a local Ray instance"
            raise ConnectionError(f"{where}: could not connect: {one_line(exc)}") from exc
        if opts.latency_resource:
            try:
                check_resource(opts.latency_resource)
            except ValueError:
                ray.shutdown()
                raise
        self.latency_actor = None
        self.sink = None
        self.quiet = None
        self.latency_node: Optional[str] = None

    def latency(self, teacher_onnx: Path, profile, timing, run_path: Path, val=None) -> RemoteLatency:
        self.latency_actor, self.sink, self.quiet, self.latency_node = start_services(
            Path(run_path), Path(teacher_onnx), profile, timing, self.opts, val if self.opts.accuracy_on_device else None)
        return RemoteLatency(self.latency_actor)

    def setup(self, *, task, space, profile, teacher, seed: int, checkpoint: Optional[str], table=None, teacher_macs: int = 0) -> TrialSetup:
        spec = task.spec
        user = spec.get("kind") == "user"  # model and data files; the demo is loaded by name; "task": one --task file
        return TrialSetup(
            task_model=spec.get("model") if user else None, task_data=spec.get("data") if user else None, task_spec=spec.get("task"),
            checkpoint=checkpoint, task_fingerprint=task.fingerprint,
            space=space, profile=profile, teacher=teacher, seed=seed, latency=self.latency_actor, sink=self.sink,
            teacher_state={k: v.detach().cpu() for k, v in task.teacher.state_dict().items()}, cpus_per_trial=self.opts.cpus_per_trial,
            cwd=os.getcwd(), accuracy_on_device=self.opts.accuracy_on_device, quiet=self.quiet, latency_node=self.latency_node,
            table=table, teacher_macs=teacher_macs,
        )

    def close(self) -> None:
        if self.latency_actor is not None:  # its temp dir and latency worker; the actor ends with the driver
            try:
                ray.get(self.latency_actor.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a dead actor or node: nothing left to tidy from here
                pass
        ray.shutdown()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
