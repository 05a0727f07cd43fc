"""The search driver (`autocompress search`): resolve inputs, open the run directory, run
the backend over the candidate pipeline, and write the outputs. All user input is
validated before anything is written; a new run directory that fails before its first
trial is removed again."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import yaml

from autocompress.errors import AutocompressError, ConfigError, RunDirError, TaskError, one_line
from autocompress.atomic import write_text_atomic
from autocompress.hardware import HardwareProfile, check_available, load_profile
from autocompress.names import FLOAT_CACHE_DIR
from autocompress.progress import NORMAL, QUIET, VERBOSE, BarSink, LineSink, Tracker, terminal_sink
from autocompress.run import RunDir, check_writable, default_run_dir, load_run_task, new_manifest
from autocompress.space import SearchSpace, load_space

if TYPE_CHECKING:
    from autocompress.backends import Backend


@dataclass(frozen=True)
class SearchOptions:
    """Command-line options; None means 'not given' (defaults, or the run's own on resume)."""

    model: Optional[str] = None
    data: Optional[str] = None
    checkpoint: Optional[str] = None
    task: Optional[str] = None  # FILE.py:FN returning an autocompress.Task (instead of model/data)
    space: Optional[str] = None
    profile: Optional[str] = None
    budget: Optional[int] = None
    time_budget: Optional[float] = None
    seed: Optional[int] = None
    sampler: Optional[str] = None
    out: Optional[str] = None
    resume: Optional[str] = None
    max_acc_drop: Optional[float] = None  # the drop limit in points, for an accuracy metric
    max_metric_drop: Optional[float] = None  # the drop limit in the metric's units (points for accuracy)
    backend: Optional[str] = None  # "optuna" (default) or "ray"
    ray_address: Optional[str] = None
    cpus_per_trial: Optional[float] = None
    max_concurrent: Optional[int] = None
    latency_resource: Optional[str] = None
    accuracy_on_device: Optional[bool] = None  # val accuracy on the --latency-resource node too
    latency: Optional[str] = None  # "measured" (default) or "predicted" (from --table)
    table: Optional[str] = None  # a device latency table (autocompress profile-device)
    fidelity: Optional[str] = None  # multi-fidelity rungs, e.g. "50,150" (fine-tune steps)
    reduction_factor: Optional[int] = None
    workers: Optional[int] = None  # local trials at once (backends.local_pool); None: default_workers()
    device: Optional[str] = None  # where fine-tunes run: "auto" (default: CUDA when there is one), "cpu", "cuda", "cuda:N"
    verbosity: Optional[int] = None  # what the search prints: -1 (--quiet) the run's path only, 0 (default), 1 (-v) stages and details
    max_failures: Optional[int] = None  # stop the search after this many failed trials (autocompress.stopping); this session's
    trial_timeout: Optional[float] = None  # seconds a candidate may take; trials then run in a worker process that is ended and restarted
    worker: Optional[bool] = None  # with --resume: one of several processes sharing the run's study and budget (heartbeats; see README)
    storage: Optional[str] = None  # an RDB URL holding the run's study instead of its study.db (workers on several machines)


DEFAULT_BUDGET = 100
# The accuracy drop (points below the teacher, on val) beyond which a candidate is not
# usable when --max-acc-drop is not given: the hypervolume's reference (autocompress.pareto).
# Trials beyond it are kept in trials.csv and inform the sampler (an Optuna constraint),
# but are not on the front. A metric without points: default_limits.
DEFAULT_DROP_LIMIT = 10.0


DEVICES = ("auto", "cpu", "cuda")


def check_device(device: Optional[str]) -> None:
    """ConfigError unless `device` is auto, cpu, cuda or cuda:N and, for CUDA, there is one."""
    if device is None or device in ("auto", "cpu"):
        return
    index = device.partition(":")[2]
    if not (device == "cuda" or (device.startswith("cuda:") and index.isdigit())):
        raise ConfigError(f"--device must be one of {list(DEVICES)} or cuda:N, got {device!r}")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here (torch.cuda.is_available() is False); use --device cpu or auto")
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def resolve_device(device: Optional[str]) -> str:
    """The device fine-tunes run on: "auto" (or None) is cuda when torch sees one, else cpu."""
    if device not in (None, "auto"):
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def given_limit(o: SearchOptions) -> Optional[float]:
    """The drop limit the options give (--max-metric-drop or --max-acc-drop), or None."""
    return o.max_metric_drop if o.max_metric_drop is not None else o.max_acc_drop


def default_limits(metric, teacher_value: float) -> tuple[float, float]:
    """(drop limit of the front, the climb's step limit) when none is given: the
    hypervolume's reference drop (Metric.drop_reference: 10 points of accuracy, else 10% of
    the teacher's value) and a tenth of it (Metric.near: 1 point, CLIMB_LIMIT, for accuracy)."""
    return metric.drop_reference(teacher_value), metric.near(teacher_value)


def _check_limit_for(o: SearchOptions, metric) -> None:
    """The drop-limit options against the task's metric (known once the task is loaded)."""
    if o.max_acc_drop is not None and not metric.percent:
        raise ConfigError(f"--max-acc-drop is in points of accuracy; the task's metric is {metric.name!r}: "
                          f"give --max-metric-drop in its units, got --max-acc-drop {o.max_acc_drop}")
    if o.max_metric_drop is not None and metric.percent and o.max_metric_drop > 100:
        raise ConfigError(f"--max-metric-drop must be in [0, 100] points for {metric.name!r}, got {o.max_metric_drop}")


def _check_options(o: SearchOptions) -> None:
    from autocompress.backends import BACKENDS, SAMPLERS

    if o.budget is not None and o.budget < 1:
        raise ConfigError(f"--budget must be >= 1, got {o.budget}")
    if o.time_budget is not None and o.time_budget <= 0:
        raise ConfigError(f"--time-budget must be > 0, got {o.time_budget}")
    if o.sampler is not None and o.sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {list(SAMPLERS)}, got {o.sampler!r}")
    if o.max_acc_drop is not None and not 0 <= o.max_acc_drop <= 100:
        raise ConfigError(f"--max-acc-drop must be in [0, 100] points, got {o.max_acc_drop}")
    if o.max_metric_drop is not None and not (0 <= o.max_metric_drop < float("inf")):
        raise ConfigError(f"--max-metric-drop must be a number >= 0 (the metric's units; points for accuracy), got {o.max_metric_drop}")
    if o.max_metric_drop is not None and o.max_acc_drop is not None:
        raise ConfigError("--max-acc-drop and --max-metric-drop set the same limit: give one")
    if o.resume is not None and o.out is not None:
        raise ConfigError("--resume and --out go separately: --resume continues the run in its own directory")
    if o.storage is not None:
        if o.resume is not None:
            raise ConfigError("--storage is given when a run is created: --resume uses the run's own storage (run.json's study)")
        check_storage(o.storage)
    from autocompress.tasks import check_source

    check_source(o.model, o.data, o.checkpoint, o.task)
    if o.backend is not None and o.backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {list(BACKENDS)}, got {o.backend!r}")
    if o.backend == "optuna" or (o.backend is None and o.resume is None):
        _check_no_ray_flags(o)
    if o.device not in (None, "auto", "cpu") and o.backend == "ray":
        raise ConfigError(f"--device {o.device}: fine-tuning on a GPU runs with the local backend; Ray trials fine-tune on their CPUs")
    check_device(o.device)
    if o.workers is not None and o.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {o.workers}")
    if o.worker and o.resume is None:
        raise ConfigError("--worker joins a run: give --resume RUN_DIR (create the run first, e.g. with --budget 1 --out RUN_DIR)")
    if o.worker:
        worker_threads()  # $AUTOCOMPRESS_WORKER_COUNT, checked before any work
    if o.worker and o.backend == "ray":
        raise ConfigError("--worker is for the local backend; with --backend ray, Ray runs the trials at once (--max-concurrent)")
    from autocompress.evaluation.latency import latency_timeout_s

    latency_timeout_s()  # $AUTOCOMPRESS_LATENCY_TIMEOUT, checked before any work
    if o.max_failures is not None and (isinstance(o.max_failures, bool) or not isinstance(o.max_failures, int) or o.max_failures < 1):
        raise ConfigError(f"--max-failures must be an integer >= 1, got {o.max_failures!r}")
    if o.trial_timeout is not None and (isinstance(o.trial_timeout, bool) or not isinstance(o.trial_timeout, (int, float))
                                        or not 0 < o.trial_timeout < float("inf")):
        raise ConfigError(f"--trial-timeout must be a number of seconds > 0, got {o.trial_timeout!r}")
    if o.trial_timeout is not None and o.backend == "ray":
        raise ConfigError("--trial-timeout is for the local backend (trials in worker processes on this machine), not --backend ray")
    if o.verbosity is not None and (isinstance(o.verbosity, bool) or not isinstance(o.verbosity, int) or o.verbosity < QUIET):
        raise ConfigError(f"verbosity must be an integer >= {QUIET} (-1: --quiet, 0: the default, 1: -v), got {o.verbosity!r}")
    if o.workers is not None and o.backend == "ray":
        raise ConfigError("--workers is for the local backend; with --backend ray use --max-concurrent")
    if o.cpus_per_trial is not None and not o.cpus_per_trial > 0:
        raise ConfigError(f"--cpus-per-trial must be > 0, got {o.cpus_per_trial}")
    if o.max_concurrent is not None and o.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent must be >= 1, got {o.max_concurrent}")
    if o.latency_resource is not None and not o.latency_resource.strip():
        raise ConfigError("--latency-resource must name a custom Ray resource, e.g. hw:edge")
    if o.accuracy_on_device and o.latency_resource is None and o.resume is None:
        raise ConfigError("--accuracy-on-device needs --latency-resource (the device's node)")
    if o.latency is not None and o.latency not in ("measured", "predicted"):
        raise ConfigError(f"--latency must be measured or predicted, got {o.latency!r}")
    if o.latency == "predicted" and o.table is None and o.resume is None:
        raise ConfigError("--latency predicted needs --table TABLE.json (make one on the device with autocompress profile-device)")
    if o.latency == "predicted" and o.backend == "ray":
        raise ConfigError("--latency predicted runs with the local backend (nothing is timed, no device is needed)")
    if o.fidelity is not None:
        from autocompress.fidelity import Fidelity

        Fidelity.parse(o.fidelity, o.reduction_factor)
    elif o.reduction_factor is not None and o.resume is None:
        raise ConfigError("--reduction-factor needs --fidelity")


def _check_no_ray_flags(o: SearchOptions) -> None:
    for flag, value in (("--ray-address", o.ray_address), ("--cpus-per-trial", o.cpus_per_trial),
                        ("--max-concurrent", o.max_concurrent), ("--latency-resource", o.latency_resource),
                        ("--accuracy-on-device", o.accuracy_on_device or None)):
        if value is not None:
            raise ConfigError(f"{flag} needs --backend ray")


def _resolve_resume(o: SearchOptions, run: RunDir) -> tuple[dict[str, Any], SearchSpace, HardwareProfile, SearchOptions]:
    """Space, profile and options of a resumed run; refuse anything that differs."""
    m = run.read_manifest()
    space, profile = run.space(), run.profile()
    check_available(profile)
    if o.space is not None:
        given = load_space(o.space)
        if given.fingerprint != space.fingerprint:
            key = next(k for k in space.params if given.params[k] != space.params[k])
            raise RunDirError(
                f"--resume {run.path}: --space {o.space} differs from the run's search space at {key} "
                f"({given.params[key].to_yaml()!r} vs {space.params[key].to_yaml()!r}); resume without --space or start a new run"
            )
    if o.profile is not None and load_profile(o.profile).fingerprint != profile.fingerprint:
        raise RunDirError(f"--resume {run.path}: --profile {o.profile} differs from the run's profile {profile.name!r}")
    task_spec = m["task"]
    if o.model is not None and (task_spec.get("model"), task_spec.get("data")) != (o.model, o.data):
        raise RunDirError(f"--resume {run.path}: the task differs (run: --model {task_spec.get('model')} --data {task_spec.get('data')})")
    if o.task is not None and o.task != task_spec.get("task"):
        raise RunDirError(f"--resume {run.path}: --task {o.task} differs from the run's ({task_spec.get('task') or 'not a --task run'})")
    files = task_spec.get("kind") == "user"  # model and data files; kind "task": one --task file
    if given_limit(o) is not None and given_limit(o) != m.get("max_acc_drop"):  # the run's limit as given (either option)
        flag = "--max-metric-drop" if o.max_metric_drop is not None else "--max-acc-drop"
        raise RunDirError(f"--resume {run.path}: {flag} {given_limit(o)} differs from the run's {m.get('max_acc_drop')}")
    if o.seed is not None and o.seed != m["seed"]:
        raise RunDirError(f"--resume {run.path}: --seed {o.seed} differs from the run's {m['seed']}")
    run_fidelity = m.get("fidelity")
    if o.fidelity is not None or o.reduction_factor is not None:
        from autocompress.fidelity import Fidelity

        given = Fidelity.parse(o.fidelity if o.fidelity is not None else (run_fidelity or {}).get("rungs", ""), o.reduction_factor
                               if o.reduction_factor is not None else (run_fidelity or {}).get("reduction_factor"))
        if run_fidelity is None or given.to_dict() != run_fidelity:
            raise RunDirError(f"--resume {run.path}: multi-fidelity {given.to_dict()} differs from the run's {run_fidelity}")
    resolved = SearchOptions(
        model=task_spec.get("model") if files else None, data=task_spec.get("data") if files else None,
        checkpoint=o.checkpoint or m.get("checkpoint"), task=task_spec.get("task"),
        budget=o.budget or m["budget"], time_budget=o.time_budget, seed=m["seed"], sampler=o.sampler or m["sampler"],
        max_metric_drop=m.get("max_acc_drop"), resume=o.resume, backend=o.backend or m.get("backend", "optuna"),
        latency=m.get("latency", {}).get("mode"), table=o.table or m.get("latency", {}).get("table"),
        fidelity=",".join(map(str, run_fidelity["rungs"])) if run_fidelity else None,
        reduction_factor=run_fidelity["reduction_factor"] if run_fidelity else None, workers=o.workers, device=o.device,
        max_failures=o.max_failures, trial_timeout=o.trial_timeout, worker=o.worker,
    )
    if resolved.backend == "ray":
        if o.worker:
            raise ConfigError(f"--resume {run.path}: --worker is for the local backend; the run searches with Ray")
        if o.trial_timeout is not None:
            raise ConfigError(f"--resume {run.path}: --trial-timeout is for the local backend; the run searches with Ray")
        ray_m = m.get("ray", {})
        resolved = replace(
            resolved, ray_address=o.ray_address or ray_m.get("address"), cpus_per_trial=o.cpus_per_trial or ray_m.get("cpus_per_trial"),
            max_concurrent=o.max_concurrent or ray_m.get("max_concurrent"), latency_resource=o.latency_resource or ray_m.get("latency_resource"),
            accuracy_on_device=bool(ray_m.get("accuracy_on_device")),
        )
        if o.accuracy_on_device is not None and bool(o.accuracy_on_device) != resolved.accuracy_on_device:
            raise RunDirError(f"--resume {run.path}: --accuracy-on-device differs from the run's (accuracy was measured "
                              f"{'on the device' if resolved.accuracy_on_device else 'on the driver'}): the front would mix both")
    else:
        _check_no_ray_flags(o)
    return m, space, profile, resolved


PYTHON_TASK = "python"  # run.json task kind of a task built in Python (autocompress.api.Task)


def _check_python_task(o: SearchOptions) -> None:
    """What a task built in Python (an object, not files a process can load again) cannot do yet."""
    if o.model is not None or o.data is not None or o.task is not None:
        raise ConfigError("give a Task or files (--model/--data, --task), not both")
    if o.checkpoint is not None:
        raise ConfigError("--checkpoint is for --model/--data: load the weights into the Task's model")
    if o.backend == "ray":
        raise ConfigError("backend='ray' needs a task its trials can load from files (--model/--data, or --task FILE.py:FN returning the Task); "
                          "a Task built in Python runs locally")
    if o.workers is not None and o.workers > 1:
        raise ConfigError(f"workers={o.workers}: a Task built in Python runs one trial at a time (workers=1); "
                          "worker processes load their task from files (--model/--data, or --task FILE.py:FN returning the Task)")
    if o.trial_timeout is not None:
        raise ConfigError(f"trial_timeout={o.trial_timeout}: a timed-out trial's worker process is restarted and loads its task from files "
                          "(--model/--data, or --task FILE.py:FN returning the Task); a Task built in Python runs in this process")


def validate(o: SearchOptions, *, python_task: bool = False) -> None:
    """The options' own checks (ConfigError, one line), before any task is loaded."""
    _check_options(o)
    if python_task:
        _check_python_task(o)
    if o.resume is None and o.out is not None:
        RunDir.check_new(Path(o.out))


def check_storage(url: Any) -> None:
    """--storage: an RDB URL Optuna keeps heartbeats in, reachable now (a server: connected
    to once; a SQLite file: its directory writable). ConfigError, one line, else."""
    from autocompress.backends.study import supports_heartbeat

    if not isinstance(url, str) or not supports_heartbeat(url):
        raise ConfigError(f"--storage must be an RDB URL (postgresql://..., mysql://..., sqlite:///FILE), got {_hide_password(url)!r}")
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:  # noqa: BLE001 - sqlalchemy's ArgumentError and friends
        raise ConfigError(f"--storage {_hide_password(url)!r} cannot be read as a database URL") from None
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        from autocompress.atomic import unwritable_reason

        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError(f"--storage {shown}: give a SQLite file (sqlite:///FILE); an in-memory database is gone when the search ends")
        reason = unwritable_reason(Path(parsed.database).resolve().parent)
        if reason is not None:
            raise ConfigError(f"--storage {shown}: the file cannot be written: {reason}")
        return
    engine = None
    try:
        engine = sqlalchemy.create_engine(parsed)
        with engine.connect():
            pass
    except ModuleNotFoundError as exc:
        raise ConfigError(f"--storage {shown}: its database driver is not installed ({exc.name}): pip install it") from None
    except Exception as exc:  # noqa: BLE001 - whatever the server or driver says
        raise ConfigError(f"--storage {shown}: cannot connect: {one_line(exc)}") from None
    finally:
        if engine is not None:
            engine.dispose()


def _hide_password(url: Any) -> Any:
    """'postgresql://me:***@host/db' for 'postgresql://me:secret@host/db' (errors never show a password)."""
    import re

    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url) if isinstance(url, str) else url


def _check_default_out() -> None:
    """Without --out the run goes to runs/<task>-<time>: refused at once where runs/ cannot be made or written."""
    from autocompress.atomic import unwritable_reason

    parent = default_run_dir("task").parent
    reason = unwritable_reason(parent)
    if reason is not None:
        raise RunDirError(f"--out not given: the default run directory {parent}/<task>-<time> cannot be written: {reason}; give --out DIR")


def search(o: SearchOptions, *, progress: Callable[[str], None] = print, task=None) -> Path:
    """Run (or resume) a search; returns the run directory. `task`: a LoadedTask built by
    the caller (autocompress.api) instead of the demo or --model/--data. With `progress`
    print (the default) the search shows a progress bar where stdout is a terminal, plain
    lines elsewhere; any other `progress` gets plain lines (autocompress.progress)."""
    _check_options(o)
    verbosity = NORMAL if o.verbosity is None else o.verbosity
    sink = terminal_sink(verbosity=verbosity, bar=o.backend != "ray") if progress is print else LineSink(progress, verbosity=verbosity)
    tracker = Tracker(sink)
    try:
        return _search(o, tracker, task=task)
    finally:
        tracker.close()


def _search(o: SearchOptions, tracker: Tracker, *, task) -> Path:
    from autocompress.tasks import load_task

    progress = tracker.note

    resume = o.resume is not None
    if resume:
        run = RunDir.open_existing(Path(o.resume))
        check_writable(run.path, field="--resume")
        kind = run.read_manifest().get("task", {}).get("kind")
        if (kind == PYTHON_TASK) != (task is not None):
            raise RunDirError(f"--resume {run.path}: the run's task was built in Python: resume it with autocompress.search(task, resume=...)"
                              if task is None else f"resume={str(run.path)!r}: the run was not made from a Task built in Python; resume it as it was made")
        manifest, space, profile, o = _resolve_resume(o, run)
    else:
        space = load_space(o.space or "default")
        profile = load_profile(o.profile or "cpu-1thread")
        if o.out is not None:
            RunDir.check_new(Path(o.out))
        else:  # runs/<task>-<time>: the task's name is known once it is loaded, where it goes is known now
            _check_default_out()
    fidelity = None
    if o.fidelity is not None:  # the fine-tune length becomes the rungs' budget: it leaves the search space
        from autocompress.fidelity import Fidelity

        fidelity = Fidelity.parse(o.fidelity, o.reduction_factor)
        if not resume:  # steps: the full fine-tune, or none where the space has none (hand recipes without one, quantization alone)
            from autocompress.schema import Choice, Fixed

            searched = space.params["finetune.steps"].to_yaml()
            none = 0 in space.values_of("finetune.steps")
            space = space.with_param("finetune.steps", Choice((0, fidelity.full_steps)) if none else Fixed(fidelity.full_steps))
            progress(f"multi-fidelity: {fidelity.describe()}; finetune.steps ({searched}) is not searched"
                     + (f": 0 (no fine-tune, no rungs) or {fidelity.full_steps}" if none else ""))
    if task is not None:  # the options as resolved (on resume: the run's own)
        _check_python_task(o)
    space.check_profile(profile)
    table = _load_table(o, profile)
    task = task if task is not None else load_task(o.model, o.data, o.checkpoint, task=o.task, progress=progress)
    _check_limit_for(o, task.metric)
    space, notes = space.bind(task.teacher, task.example)
    for note in notes:
        progress(note)
    if not resume and not task.metric.classification and "distill.temperature" in space.params:
        space = space.with_fixed("distill.temperature", 1.0)  # the teacher term is a mean squared error: T means nothing
        progress(f"distill.temperature is not searched: the metric {task.metric.name!r} is not a classification one "
                 "(the fine-tune distils with the mean squared error to the teacher's outputs)")
    if resume:
        if task.fingerprint != manifest["task_fingerprint"]:
            raise RunDirError(f"--resume {run.path}: the task's model or data changed since the run started (fingerprint {task.fingerprint} != {manifest['task_fingerprint']})")
    else:
        run = RunDir.check_new(Path(o.out) if o.out else default_run_dir(task.name))
    budget = o.budget or DEFAULT_BUDGET
    limit = given_limit(o)
    metric = task.metric
    device = resolve_device(o.device) if (o.backend or "optuna") != "ray" else "cpu"
    seed = 0 if o.seed is None else o.seed
    sampler = o.sampler or "tpe"

    backend_name = o.backend or "optuna"
    if backend_name == "ray" and isinstance(tracker.sink, BarSink):  # a resumed Ray run: Ray's own output and a live bar do not mix
        tracker.sink.close()
        tracker.sink = LineSink(verbosity=tracker.sink.verbosity)
    session = None
    if backend_name == "ray":  # connected before anything is written
        from autocompress.backends.ray_cluster import open_session

        session = open_session(o.ray_address, cpus_per_trial=o.cpus_per_trial or 1.0, max_concurrent=o.max_concurrent,
                               latency_resource=o.latency_resource, accuracy_on_device=bool(o.accuracy_on_device))
    created = not resume
    lock = None
    try:
        if created:
            run.create()
        lock = run.lock(shared=bool(o.worker))
        if created:
            write_text_atomic(run.path / "space.yaml", yaml.safe_dump(space.to_dict(), sort_keys=False))
            write_text_atomic(run.path / "profile.yaml", yaml.safe_dump(profile.to_dict(), sort_keys=False))
        manifest = (manifest if resume else new_manifest()) | {
            "task": task.spec, "task_fingerprint": task.fingerprint, "space_fingerprint": space.fingerprint,
            "profile": profile.name, "profile_fingerprint": profile.fingerprint, "seed": seed, "sampler": sampler,
            "budget": budget, "max_acc_drop": limit, "metric": metric.describe(), "checkpoint": o.checkpoint,
            "input_shape": list(task.input_shape) if task.input_shape is not None else None, "inputs": task.input_shapes,
            "outputs": list(task.output_names), "backend": backend_name, "device": device,
        }
        if created and o.storage is not None:  # the study's own name: a shared RDB holds many runs' studies
            import secrets

            manifest["study"] = {"storage": o.storage, "name": f"autocompress-{run.path.name}-{secrets.token_hex(4)}"}
        if fidelity is not None:
            manifest["fidelity"] = fidelity.to_dict()
        if table is not None:
            manifest["latency"] = {"mode": o.latency or "measured", "table": str(Path(o.table).resolve()), "table_profile": table.profile}
        if session is not None:
            manifest["ray"] = {"address": o.ray_address, "cpus_per_trial": session.opts.cpus_per_trial,
                               "max_concurrent": o.max_concurrent, "latency_resource": o.latency_resource,
                               "accuracy_on_device": bool(o.accuracy_on_device)}
        from autocompress.pipeline import prepare

        progress(f"Run directory: {run.path}" + (f"   (fine-tuning on {device})" if device != "cpu" else ""))
        progress(f"Measuring the teacher under profile {profile.name!r} ...")
        try:
            timing = task.timing_feed(profile)
            remote = None if session is None else (lambda teacher_onnx: session.latency(teacher_onnx, profile, timing, run.path,
                                                                                         (task.val, metric, task.output_kind)))
            with _taking_turns(run, o.worker):  # the teacher's timing too
                ctx = prepare(task, profile, run.path, latency=remote, accuracy_on_device=bool(o.accuracy_on_device),
                              table=table, predicted=o.latency == "predicted", device=device)
            if o.worker:
                ctx._latency_worker = TakingTurns(ctx.latency_worker, run.path)
        except AutocompressError:  # already one line that says what (e.g. the teacher's export is not faithful)
            raise
        except Exception as exc:  # noqa: BLE001 - the user's teacher cannot be exported / run
            raise TaskError(f"the teacher could not be exported to ONNX and measured: {one_line(exc)}") from exc
        manifest.setdefault("teacher", {}).update(
            **{metric.column("val"): ctx.teacher.val_metric, metric.column("test"): ctx.teacher.test_metric},  # val_accuracy, ...
            size_bytes=ctx.teacher.size_bytes, latency_ms=ctx.teacher.latency_ms,
        )
        if ctx.teacher.baselines:  # e.g. the fused fp32 teacher: every table compares with it too
            manifest["teacher"]["baselines"] = {name: {**b, **({"latency_ms": b["latency_ratio"] * ctx.teacher.latency_ms} if "latency_ratio" in b else {})}
                                                for name, b in ctx.teacher.baselines.items()}
        # the drop limit when none is given, and the structured start's (the climb's) step
        # limit: the one given, else CLIMB_LIMIT's share; random search stays random (the
        # baseline it is compared with)
        default_drop, default_climb = default_limits(metric, ctx.teacher.val_metric)
        drop_limit = limit if limit is not None else default_drop
        climb_limit = None if sampler == "random" else (limit if limit is not None else default_climb)
        manifest["drop_limit"] = drop_limit
        if ctx.predicted:
            manifest["teacher"]["latency_source"] = "predicted"
        if session is not None:  # where the teacher's reference timing ran
            manifest["teacher"]["latency_node"] = ctx.latency_worker.node_ids[0]
            if o.accuracy_on_device:
                manifest["teacher"]["accuracy_node"] = ctx.latency_worker.accuracy_node_ids[0]
        if resume:
            manifest.setdefault("resumed", []).append(time.strftime("%Y-%m-%dT%H:%M:%S"))
        if o.worker:
            nonce = worker_nonce()
            import torch

            torch.set_num_threads(worker_threads())  # the workers share the cores
            with _manifest_lock(run):  # other workers write it too: keep their entries
                current = run.read_manifest()
                manifest["resumed"] = current.get("resumed", [])[:] + manifest["resumed"][-1:]
                manifest["timing"] = current.get("timing", [])
                run.write_manifest(manifest)
        else:
            nonce = ""
            run.write_manifest(manifest)
        progress(
            f"Teacher: val {metric.name} {metric.show(ctx.teacher.val_metric)}{'%' if metric.percent else ''}  {ctx.teacher.latency_ms:.3f} ms  "
            f"{ctx.teacher.size_bytes / 1024:.0f} KB   searching {budget} trials (sampler {sampler}, seed {seed})"
        )
        worse = "below" if metric.higher_is_better else "above"
        progress(f"Drop limit: {drop_limit:.4g}{' pt' if metric.percent else ''} {worse} the teacher's val {metric.name}"
                 + (f" (the default; set it with {'--max-acc-drop' if metric.percent else '--max-metric-drop'})" if limit is None else "")
                 + ": the front holds the candidates within it")
        pool = None
        cache_dir = run.path / FLOAT_CACHE_DIR
        if session is None:
            from autocompress.backends.optuna import OptunaBackend
            from autocompress.pipeline import FloatCache

            ctx.float_cache = FloatCache(cache_dir)

            pool = _start_pool(o, task, space, profile, ctx, run, seed=seed, table=table, progress=progress)
            backend = OptunaBackend(run.storage_url, space, sampler=sampler, seed=seed, max_acc_drop=drop_limit, fidelity=fidelity,
                                    climb_limit=climb_limit, pool=pool, metric=task.metric, worker=bool(o.worker), nonce=nonce,
                                    lock_dir=run.path, study_name=run.study_name)
        else:
            from autocompress.backends.ray_tune import RayTuneBackend

            setup = session.setup(task=task, space=space, profile=profile, teacher=ctx.teacher, seed=seed, checkpoint=o.checkpoint,
                                  table=table, teacher_macs=ctx.teacher_macs)
            backend = RayTuneBackend(run.storage_url, space, setup=setup, opts=session.opts, run_path=run.path,
                                     sampler=sampler, seed=seed, max_acc_drop=drop_limit, fidelity=fidelity, climb_limit=climb_limit,
                                     metric=task.metric, study_name=run.study_name)
        backend.open(new=not resume)
        created = False  # from here on the run directory holds results: never removed
        try:
            timing = _drive(backend, ctx, run, budget=budget, time_budget=o.time_budget, seed=seed, tracker=tracker, default_limit=limit is None,
                            max_failures=o.max_failures, worker=bool(o.worker))
            if o.worker:
                timing.update(worker=nonce)
            if pool is not None:
                timing.update(workers=pool.workers, quiet_wait_s=round(pool.quiet_wait_s, 2))
            shutil.rmtree(cache_dir, ignore_errors=True)  # the search ended: nothing builds from it any more
        finally:
            if pool is not None:
                pool.close()
            if hasattr(backend, "close"):
                backend.close()
            ctx.close()
        if o.worker:
            with _manifest_lock(run):
                manifest = run.read_manifest()
                manifest.setdefault("timing", []).append(timing)
                run.write_manifest(manifest)
        else:
            manifest.setdefault("timing", []).append(timing)
            run.write_manifest(manifest)
    except BaseException:
        if created and run.path.exists():
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.close()
        if session is not None:
            session.close()
    return run.path


def latency_lock_name() -> str:
    """The lock file by which the workers of a run on this machine time latency one at a
    time (one per host: workers on other machines sharing the run directory time on their own CPUs)."""
    import socket

    return f".latency.{socket.gethostname()}.lock"


def _taking_turns(run: RunDir, worker: Optional[bool]):
    from contextlib import nullcontext

    from autocompress.atomic import file_lock

    return file_lock(run.path, latency_lock_name()) if worker else nullcontext()


def _manifest_lock(run: RunDir):
    from autocompress.atomic import file_lock

    return file_lock(run.path, ".manifest.lock")


def worker_nonce() -> str:
    """This worker: host, pid and start time (its sampler's seed derives from it; run.json's timing records it)."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{time.time():.6f}"


def worker_count() -> int:
    """$AUTOCOMPRESS_WORKER_COUNT: the --worker processes on this machine (default 2)."""
    import os

    text = os.environ.get("AUTOCOMPRESS_WORKER_COUNT", "2")
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"$AUTOCOMPRESS_WORKER_COUNT must be an integer >= 1 (the --worker processes on this machine), got {text!r}")
    return int(text)


def worker_threads(trials_at_once: int = 1) -> int:
    """Fine-tune threads of one trial of a --worker process: the cores shared by
    $AUTOCOMPRESS_WORKER_COUNT workers on this machine, each running `trials_at_once`
    trials (--workers)."""
    from autocompress.backends.local_pool import threads_per_worker

    return threads_per_worker(worker_count() * trials_at_once)


class TakingTurns:
    """A latency meter whose measurements hold the run's latency lock: several worker
    processes on one machine time their candidates one at a time."""

    def __init__(self, meter, run_path: Path):
        self._meter = meter
        self._run_path = run_path

    def measure(self, *args, **kw):
        from autocompress.atomic import file_lock

        with file_lock(self._run_path, latency_lock_name()):
            return self._meter.measure(*args, **kw)

    def __getattr__(self, name):
        return getattr(self._meter, name)


def _trial_line(rec: dict[str, Any], *, done: int, budget: int, metric) -> str:
    """One finished trial in a line: '[ 12/100] #11  p.5 ft150 kd.5_T4 q8   val  98.50%  3.21x    40 KB   12.3s'."""
    head = f"[{done:>3}/{budget}] #{rec['number']:<3} {str(rec.get('label') or rec.get('description', '')):<34}"
    if rec["state"] == "COMPLETE":
        dup = f" (= #{rec['duplicate_of']})" if "duplicate_of" in rec else ""
        return (f"{head} val {metric.show(rec['val_metric']):>6}{'%' if metric.percent else ''}  {1 / rec['latency_ratio']:5.2f}x  "
                f"{rec['size_bytes'] / 1024:6.0f} KB  {rec.get('t_total', 0):5.1f}s{dup}")
    if rec["state"] == "PRUNED":
        return f"{head} {rec.get('stop_reason', 'stopped')}  {rec.get('t_total', 0):5.1f}s"
    return f"{head} FAILED: {rec.get('failure_reason', '?')}"


def _trial_details(rec: dict[str, Any]) -> list[str]:
    """What -v adds under a trial's line: the candidate in words and its seconds per stage."""
    stages = [f"{k[2:]} {v:.2f}s" for k, v in rec.items() if k.startswith("t_") and k != "t_total" and isinstance(v, (int, float)) and v >= 0.005]
    return [f"      {text}" for text in (rec.get("details"), " · ".join(stages)) if text]


def _stage_reporter(tracker: Tracker, cfg, number: int) -> Callable[[str], None]:
    """on_stage for trial `number`: tells the tracker each stage the candidate enters,
    leaving out the steps of techniques it does not use and repeats of the stage it is in."""
    from autocompress.techniques import techniques

    idle = {t.name for t in techniques() if not t.is_active(cfg[t.name])}
    last: list[str] = []

    def on_stage(name: str) -> None:
        if name not in idle and last != [name]:
            last[:] = [name]
            tracker.stage(number, name)

    return on_stage


def _drive(backend: "Backend", ctx, run: RunDir, *, budget: int, time_budget: Optional[float], seed: int, tracker: Tracker,
           default_limit: bool = False, max_failures: Optional[int] = None, worker: bool = False) -> dict[str, Any]:
    from autocompress.outputs import results_text, write_trials_csv
    from autocompress.pipeline import evaluate_candidate
    from autocompress.stopping import FailureWatch

    teacher = ctx.teacher
    metric = ctx.task.metric
    progress = tracker.note

    def evaluate(cfg, number: int, **kw):  # kw: the backend's fidelity and rung decisions
        return evaluate_candidate(cfg, number, ctx, run.path, seed=seed, on_stage=_stage_reporter(tracker, cfg, number), **kw)

    records: list[dict[str, Any]] = []
    watch = FailureWatch(max_failures)  # this session's trials: a resumed search counts afresh

    def on_trial(rec: dict[str, Any]) -> None:
        records.append(rec)
        watch.see(rec)
        done = backend.finished_count()
        tracker.trial(rec, done=done, line=_trial_line(rec, done=done, budget=budget, metric=metric))
        for line in _trial_details(rec):
            tracker.note(line, level=VERBOSE)
        write_trials_csv(run, backend.records(), teacher, max_acc_drop=backend.max_acc_drop, metric=metric)

    tracker.start(budget=budget, done=backend.finished_count(), records=backend.records(), drop_limit=backend.max_acc_drop,
                  teacher_size_bytes=teacher.size_bytes, time_budget=time_budget)
    t0 = time.perf_counter()
    try:
        backend.optimize(evaluate, budget=budget, time_budget=time_budget, on_trial=on_trial, stop=lambda: watch.stop is not None)
    finally:
        t1 = time.perf_counter()
        tracker.end()
        written = True
        if worker:
            written = _finalize_last(backend, ctx, run, tracker, default_limit=default_limit)
        else:
            _write_results(backend, ctx, run, tracker, default_limit=default_limit)
        progress("")
        if watch.stop is not None:  # said even with --quiet, next to where the results are
            tracker.note(f"{watch.stop.message} ({backend.finished_count()} of {budget} trials finished; "
                         "--resume RUN_DIR continues once the cause is fixed)", level=QUIET)
        tracker.note(f"Results in {run.path}: {results_text(run.path)}" if written else
                     f"Results in {run.path} when the last worker finishes (nothing written by this one)", level=QUIET)
    timing = {"trials": len(records), "search_s": t1 - t0, "finalize_s": time.perf_counter() - t1,
              "trial_s": sum(r.get("t_total", 0.0) for r in records)}
    if watch.stop is not None:
        timing["stopped"] = watch.stop.to_dict()
    return timing


def _write_results(backend, ctx, run: RunDir, tracker: Tracker, *, default_limit: bool) -> None:
    """The end of a search: the front re-measured, then the tables, plots and clean-up
    (outputs.finalize); a report that fails is said even with --quiet."""
    from autocompress.outputs import finalize

    remeasure_front(backend, ctx, run, progress=tracker.note)
    finalize(run, backend.records(), ctx, max_acc_drop=backend.max_acc_drop, progress=tracker.note, default_limit=default_limit,
             warn=lambda text: tracker.note(text, level=QUIET))


FINALIZED = "finalized_at"  # study attribute: finished trials when a worker last wrote the results


def _finalize_last(backend, ctx, run: RunDir, tracker: Tracker, *, default_limit: bool) -> bool:
    """With --worker: the results are written (front re-measured, tables, non-front
    artifacts deleted) by the last worker to finish only: not while another worker has
    trials running, nor again when another wrote them for the same finished trials.
    Returns whether the results are in place (written here or by another worker)."""
    from autocompress.atomic import file_lock

    rs = backend.run_study
    with file_lock(run.path, ".finalize.lock"):
        rs.recover_stale()
        running = rs.running_count()
        if running:
            tracker.note(f"Other workers have {running} trial(s) running: the last worker to finish writes the results "
                         "(finalize skipped here)", level=QUIET)
            return False
        finished = rs.finished_count()
        if rs.study.user_attrs.get(FINALIZED) == finished:
            tracker.note(f"The results for these {finished} trials were written by another worker", level=QUIET)
            return True
        _write_results(backend, ctx, run, tracker, default_limit=default_limit)
        rs.study.set_user_attr(FINALIZED, finished)
        return True


def remeasure_front(backend: "Backend", ctx, run: RunDir, *, progress=print) -> list[tuple[int, float, float]]:
    """Time every front point and hand recipe again (a fresh measurement, never the cache)
    and use those values in the run's tables; the front is recomputed from them until every point on
    it has been re-measured (a point that turns out slower can let another onto the
    front). Logged per point; returns (trial, recorded ratio, re-measured ratio)."""
    from autocompress.outputs import teacher_row
    from autocompress.report import trials_frame
    from autocompress.report.tables import flag_column

    changes: list[tuple[int, float, float]] = []
    if ctx.predicted:
        progress("Latency was predicted (not measured): check the front on the device with autocompress verify")
        return changes
    while True:
        df = trials_frame(backend.records(), teacher_row(ctx.teacher, ctx.task.metric), max_acc_drop=backend.max_acc_drop)
        # the hand recipes too: the front is compared with them, so both are timed alike
        recipe = df["recipe"].notna() & df["state"].eq("COMPLETE") & df["duplicate_of"].isna() if "recipe" in df else False
        todo = df[(df["pareto"] | recipe) & ~flag_column(df, "remeasured")]
        if todo.empty:
            return changes
        if not changes:
            progress(f"Re-measuring the latency of the front and the hand recipes ({len(todo)} points) ...")
        for _, row in todo.iterrows():
            n = int(row["number"])
            try:
                r = ctx.latency_worker.measure(run.path / row["onnx"], fresh=True)
            except Exception as exc:  # noqa: BLE001 - keep the recorded value, say so
                progress(f"  #{n}: re-measurement failed ({one_line(exc)}); the recorded latency stays")
                backend.store_remeasured(n, {"latency_ratio": row["latency_ratio"], "remeasure_failed": one_line(exc)})
                continue
            backend.store_remeasured(n, {"latency_ratio": r.ratio, "latency_ratio_low": r.ratio_low, "latency_ratio_high": r.ratio_high,
                                         "latency_passes": r.passes, "not_faster": r.not_faster})
            changes.append((n, float(row["latency_ratio"]), r.ratio))
            progress(f"  #{n}: {1 / row['latency_ratio']:.2f}x -> {1 / r.ratio:.2f}x ({100 * (r.ratio / row['latency_ratio'] - 1):+.1f}% latency)")


def _start_pool(o: SearchOptions, task, space: SearchSpace, profile: HardwareProfile, ctx, run: RunDir, *, seed: int, table, progress):
    """The local backend's worker processes when more than one trial runs at once, or when
    trials have a --trial-timeout (one worker: a trial over it is ended with its process,
    which is then restarted); None: trials one after another in this process."""
    import os

    from autocompress.backends.local_pool import TrialPool, WorkerSetup, default_workers, threads_per_worker

    workers = o.workers if o.workers is not None else default_workers()
    if workers < 2 and o.trial_timeout is None:
        return None
    threads = worker_threads(workers) if o.worker else threads_per_worker(workers)  # --worker: the other workers' trials share the cores too
    setup = WorkerSetup(task_model=o.model, task_data=o.data, checkpoint=o.checkpoint, task_spec=o.task, cwd=os.getcwd(), task_fingerprint=task.fingerprint,
                        teacher_state=task.teacher.state_dict(), profile=profile, teacher=ctx.teacher, soft_targets=ctx.soft_targets,
                        calibration=ctx.calibration, run_path=str(run.path.resolve()), seed=seed, threads=threads, table=table,
                        predicted=ctx.predicted, teacher_macs=ctx.teacher_macs,
                        float_cache=str(ctx.float_cache.root) if ctx.float_cache is not None else None, device=ctx.device)
    limit = f"; a trial over --trial-timeout {o.trial_timeout:g} s fails and its process is restarted" if o.trial_timeout is not None else ""
    if workers > 1:
        progress(f"Trials: {workers} at a time in worker processes ({threads} thread{'s' if threads > 1 else ''} each; "
                 f"latency is timed while they wait; --workers 1 for one at a time here){limit}")
    else:
        progress(f"Trials: one at a time in a worker process{limit}")
    pool = TrialPool(setup, workers, measure=lambda path, fresh: ctx.latency_worker.measure(path, fresh=fresh), trial_timeout_s=o.trial_timeout)
    try:
        return pool.start()
    except BaseException:
        pool.close()
        raise


def _load_table(o: SearchOptions, profile: HardwareProfile):
    """The --table for this run (None without one); refused when made for another profile."""
    if o.table is None:
        return None
    from autocompress.evaluation.predictor import LatencyTable

    return LatencyTable.load_for(o.table, profile.name, profile.fingerprint)


def load_trial_model(run_dir: str | Path, number: int, *, task=None):
    """The fine-tuned float PyTorch model of trial `number` (e.g. a front point), ready to
    keep training: the teacher is pruned and factorized again exactly as in the search
    and the saved state_dict is loaded. `task`: the run's task, if already loaded."""
    import torch

    from autocompress.backends.study import trial_params
    from autocompress.pipeline import rebuild_student

    run = RunDir.open_existing(Path(run_dir))
    weights = run.trial_dir(number) / "model.pt"
    if not weights.is_file():
        raise RunDirError(f"{run.path}: trial {number} has no saved model (only front points keep theirs)")
    task = task if task is not None else load_run_task(run)
    cfg = run.bound_space(task).config_from_params(trial_params(run.storage_url, number, run.study_name))
    model = rebuild_student(task, cfg)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


__all__ = ["SearchOptions", "load_trial_model", "search"]
