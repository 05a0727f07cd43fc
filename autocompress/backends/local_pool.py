"""Several trials at once on this machine: persistent worker processes, each with its own
share of the cores, fed by the local backend's ask/tell loop (backends.optuna).

Why: a fine-tune of a small model keeps one core busy far better than two (two torch
threads on small convolutions mostly wait for each other): two 1-thread fine-tunes of the
demo teacher at once got through 1.40x the steps of one 2-thread fine-tune after another on
a 2-core AVX2 machine. A search gains that only where the parts that run alone are small;
on the demo they were not (experiments/RESULTS.md), so one worker is the default. Two
processes that each use both cores thrash, so every worker sets its torch threads and
its accuracy sessions' threads to its share (cores // workers); the calibration sessions
of ONNX Runtime's quantization tools keep their default (every core).

Latency stays measured alone. The driver keeps the one latency worker process (and its
cache of identical files) and times every candidate for every worker; while it times,
the workers step aside: `QuietBoard` is a readers-writer lock in shared memory (any
number of workers compute at once; a measurement waits until none does, and workers
that want to start wait while one is pending). A worker steps aside between fine-tune
steps and during its own requests to the driver; other stages (export, quantization)
finish first. This is the local form of the Ray backend's QuietPhase.

Workers are started once (spawned: a fresh interpreter, no forked torch state), load the
task themselves with the driver's teacher weights, and build one candidate at a time;
one that dies is restarted and its trial failed with the reason. With a trial timeout
(--trial-timeout; a pool of one worker when it is given alone) a trial that runs over it
is failed as timed out and its worker process ended and started again for the next one
(a trial's work all runs in that process: its latency is timed by the driver, within the
latency worker's own timeout, and counts towards the trial's time).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_ready
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from autocompress.errors import CandidateError, CandidateStopped, one_line

WORKERS_ENV = "AUTOCOMPRESS_WORKERS"
_POLL_S = 0.001


def default_workers() -> int:
    """Trials at once when --workers is not given: $AUTOCOMPRESS_WORKERS, else 1 (one
    after another: a seeded search then asks the same trials every time; with several
    workers the order in which trials finish steers the sampler). On the demo two workers
    did not pay on a 2-core AVX2 machine (100 trials: 1068 s against 939 s one at a time;
    experiments/RESULTS.md): latency is timed alone, and there a quarter of a trial."""
    env = os.environ.get(WORKERS_ENV)
    if not env:
        return 1
    try:
        n = int(env)
    except ValueError:
        n = 0
    if n < 1:
        from autocompress.errors import ConfigError

        raise ConfigError(f"${WORKERS_ENV} must be an integer >= 1, got {env!r}")
    return n


def threads_per_worker(workers: int, cpus: Optional[int] = None) -> int:
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    return max(1, cpus // max(1, workers))


# --------------------------------------------------------------------------- taking turns


class QuietBoard:
    """Shared state of the workers' compute phases and the driver's measurements (see the
    module docstring). Slots: busy[i] per worker, then `pending`; every read and write
    under one lock."""

    def __init__(self, n: int, context=None):
        context = context or mp.get_context("spawn")
        self.n = n
        self._lock = context.Lock()
        self._state = context.RawArray("i", n + 1)

    # worker side
    def try_begin(self, i: int) -> bool:
        with self._lock:
            if self._state[self.n]:
                return False
            self._state[i] = 1
            return True

    def end(self, i: int) -> None:
        with self._lock:
            self._state[i] = 0

    def pending(self) -> bool:
        return bool(self._state[self.n])  # a single int read: a stale value only delays the step aside

    # driver side
    def request(self) -> None:
        with self._lock:
            self._state[self.n] = 1

    def computing(self) -> list[int]:
        with self._lock:
            return [i for i in range(self.n) if self._state[i]]

    def release(self) -> None:
        with self._lock:
            self._state[self.n] = 0

    def clear(self, i: int) -> None:
        """Worker `i` is gone: it computes no more. A worker ended from outside may have died
        holding the lock (held for a few instructions at a time): one that stays taken is freed."""
        self._lock.acquire(timeout=2.0)  # not free 2 s on: the dead worker's
        self._lock.release()  # ours, or the dead worker's
        self.end(i)


class PoolGate:
    """A worker's side of the QuietBoard, the interface of PipelineContext.gate: `busy()`
    while it computes (reentrant), `step()` between fine-tune steps, `paused()` around its
    requests to the driver. Records its compute intervals (wall clock) in `windows`."""

    def __init__(self, board: QuietBoard, index: int):
        self._board = board
        self._i = index
        self._depth = 0
        self._start = 0.0
        self.windows: list[tuple[float, float]] = []

    def _acquire(self) -> None:
        while not self._board.try_begin(self._i):
            time.sleep(_POLL_S)
        self._start = time.time()

    def _release(self) -> None:
        self.windows.append((self._start, time.time()))
        self._board.end(self._i)

    @contextmanager
    def busy(self) -> Iterator[None]:
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
        if self._depth and self._board.pending():
            self._release()
            self._acquire()

    @contextmanager
    def paused(self) -> Iterator[None]:
        if self._depth == 0:
            yield
            return
        self._release()
        try:
            yield
        finally:
            self._acquire()


# --------------------------------------------------------------------------- the worker


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to build candidates like the driver would (picklable)."""

    task_model: Optional[str]
    task_data: Optional[str]
    checkpoint: Optional[str]
    task_spec: Optional[str]  # --task FILE.py:FN (instead of model and data)
    cwd: str
    task_fingerprint: str
    teacher_state: Any  # the driver's teacher weights: every worker compresses the same model
    profile: Any
    teacher: Any  # pipeline.TeacherBaseline
    soft_targets: Any
    calibration: Any
    run_path: str
    seed: int
    threads: int = 1
    table: Any = None
    predicted: bool = False
    teacher_macs: int = 0
    float_cache: Optional[str] = None  # the run's FloatCache folder, shared by the workers
    device: str = "cpu"  # where fine-tunes run (--device)


class _DriverLatency:
    """LatencyMeter over the driver: the request steps out of the worker's busy phase."""

    def __init__(self, conn, gate: PoolGate):
        self._conn = conn
        self._gate = gate
        self.windows: list[tuple[float, float]] = []  # wall-clock intervals in which the driver timed this candidate

    def ask(self, *message):
        with self._gate.paused():
            self._conn.send(message)
            kind, value = self._conn.recv()
        if kind == "error":
            raise RuntimeError(value)
        return value

    def measure(self, path: Path, *, fresh: bool = False):
        result, window = self.ask("measure", str(path), fresh)
        self.windows.append(window)
        return result

    def accuracy(self, path: Path) -> float:  # pragma: no cover - accuracy on a device is the Ray backend's
        raise RuntimeError("accuracy on the device runs with the Ray backend")

    def close(self) -> None:
        pass


PARENT_CHECK_S = 1.0


def leave_with_parent(parent: int, *, every_s: float = PARENT_CHECK_S) -> None:
    """End this process when `parent` (the driver that started it) is gone: a driver killed
    with SIGKILL cannot end its workers, and an orphan would go on fine-tuning beside the
    resumed search (and write into the run). Checked from a daemon thread."""
    import threading

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(every_s)

    threading.Thread(target=watch, name="autocompress-parent-watch", daemon=True).start()


def _worker_main(conn, index: int, board: QuietBoard, setup: WorkerSetup, parent: Optional[int] = None) -> None:
    """A worker process: set up once, then build the candidates it is sent until told to stop
    (or until the driver, `parent`, is gone)."""
    if parent is not None:
        leave_with_parent(parent)
    try:
        import torch

        torch.set_num_threads(setup.threads)
        from autocompress.evaluation import accuracy as accuracy_module
        from autocompress.pipeline import FloatCache, PipelineContext, evaluate_candidate
        from autocompress.tasks import load_task

        accuracy_module.set_default_threads(setup.threads)
        os.chdir(setup.cwd)
        task = load_task(setup.task_model, setup.task_data, setup.checkpoint, task=setup.task_spec, progress=lambda s: None)
        task.teacher.load_state_dict(setup.teacher_state)
        task.teacher.eval()
        if task.fingerprint != setup.task_fingerprint:
            raise RuntimeError(f"the task loaded in a worker differs from the driver's (fingerprint {task.fingerprint} != {setup.task_fingerprint})")
    except Exception as exc:  # noqa: BLE001 - reported to the driver, which stops the search
        conn.send(("setup_failed", one_line(exc)))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message[0] == "stop":
            return
        _, number, cfg, with_fidelity, fidelity = message
        gate = PoolGate(board, index)
        latency = _DriverLatency(conn, gate)
        ctx = PipelineContext(task=task, profile=setup.profile, teacher=setup.teacher, soft_targets=setup.soft_targets,
                              calibration=setup.calibration, _latency_worker=latency, gate=gate, table=setup.table,
                              predicted=setup.predicted, teacher_macs=setup.teacher_macs,
                              float_cache=FloatCache(Path(setup.float_cache)) if setup.float_cache else None, device=setup.device)
        kw = {}
        if with_fidelity:
            kw = {"fidelity": fidelity, "at_rung": lambda rung, acc, ratio: latency.ask("rung", rung, acc, ratio)}
        t0 = time.perf_counter()
        try:
            outcome = evaluate_candidate(cfg, number, ctx, Path(setup.run_path), seed=setup.seed, **kw)
            attrs = dict(outcome.attrs, busy_windows=gate.windows, measure_windows=latency.windows)
            reply = ("done", "complete", (outcome.values, attrs), time.perf_counter() - t0)
        except CandidateStopped as stop:
            reply = ("done", "stopped", (stop.reason, stop.rung_results), time.perf_counter() - t0)
        except CandidateError as exc:
            reply = ("done", "failed", str(exc), time.perf_counter() - t0)
        except KeyboardInterrupt:
            return
        except Exception as exc:  # noqa: BLE001 - outside the pipeline's stages: still this candidate's failure
            reply = ("done", "failed", f"worker: {one_line(exc)} ({traceback.extract_tb(exc.__traceback__)[-1].name})", time.perf_counter() - t0)
        conn.send(reply)


# --------------------------------------------------------------------------- the driver's side


@dataclass
class Finished:
    """A candidate a worker finished: kind 'complete' (payload (values, attrs)), 'stopped'
    ((reason, rung results)) or 'failed' (reason)."""

    worker: int
    number: int
    kind: str
    payload: Any
    seconds: float


class TrialPool:
    """`workers` persistent worker processes and the driver's side of their requests.
    `measure(path, fresh)` times a file with the driver's latency meter; `decide(number,
    rung, acc, ratio)` answers a rung's promotion question (multi-fidelity)."""

    def __init__(self, setup: WorkerSetup, workers: int, *, measure: Callable[[Path, bool], Any],
                 decide: Optional[Callable[[int, int, float, float], Any]] = None, start_timeout_s: float = 600.0,
                 trial_timeout_s: Optional[float] = None):
        if workers < 1:
            raise ValueError(f"a pool runs one or more workers, got {workers}")
        if trial_timeout_s is not None and not trial_timeout_s > 0:
            raise ValueError(f"trial_timeout_s must be > 0, got {trial_timeout_s}")
        self._setup = setup
        self.workers = workers
        self._measure = measure
        self._decide = decide
        self._start_timeout = start_timeout_s
        self.trial_timeout_s = trial_timeout_s  # seconds a trial may take (None: no limit)
        self._started: dict[int, float] = {}  # worker -> time.monotonic() its trial was sent
        self._mp = mp.get_context("spawn")
        self.board = QuietBoard(workers, self._mp)
        self._procs: list[Any] = [None] * workers
        self._conns: list[Any] = [None] * workers
        self._running: dict[int, int] = {}  # worker -> trial number
        self.measure_windows: list[tuple[float, float]] = []
        self.quiet_wait_s = 0.0

    # ---- lifecycle
    def start(self) -> "TrialPool":
        for i in range(self.workers):
            self._spawn(i)
        for i in range(self.workers):
            self._await_ready(i)
        return self

    def _spawn(self, i: int) -> None:
        here, there = self._mp.Pipe(duplex=True)
        proc = self._mp.Process(target=_worker_main, args=(there, i, self.board, self._setup, os.getpid()), daemon=True,
                                name=f"autocompress-trial-worker-{i}")
        proc.start()
        there.close()
        self._procs[i], self._conns[i] = proc, here

    def _await_ready(self, i: int) -> None:
        conn = self._conns[i]
        if not conn.poll(self._start_timeout):
            raise RuntimeError(f"trial worker {i} did not start within {self._start_timeout:.0f} s")
        try:
            kind, value = conn.recv()
        except EOFError:
            raise RuntimeError(f"trial worker {i} exited while starting (exit code {self._procs[i].exitcode})") from None
        if kind != "ready":
            raise RuntimeError(f"trial worker {i} could not set up: {value}")

    def close(self) -> None:
        for i, conn in enumerate(self._conns):
            if conn is None:
                continue
            try:
                conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
        for i, proc in enumerate(self._procs):
            if proc is None:
                continue
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if self._conns[i] is not None:
                self._conns[i].close()
        self._procs = [None] * self.workers
        self._conns = [None] * self.workers

    def __enter__(self) -> "TrialPool":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- work
    def idle(self) -> list[int]:
        return [i for i in range(self.workers) if i not in self._running]

    def running(self) -> dict[int, int]:
        return dict(self._running)

    def set_decider(self, decide: Callable[[int, int, float, float], Any]) -> None:
        """How a rung's promotion question is answered: decide(number, rung, acc, ratio)."""
        self._decide = decide

    def submit(self, worker: int, number: int, cfg, *, fidelity=None) -> None:
        self._running[worker] = number
        self._started[worker] = time.monotonic()
        self._conns[worker].send(("run", number, cfg, self._decide is not None and fidelity is not None, fidelity))

    def next_finished(self) -> Finished:
        """Serve the workers' requests until one finishes a candidate (or dies, or runs over
        the trial timeout: its trial fails with the reason and the worker is restarted)."""
        while True:
            live = {self._conns[i]: i for i in self._running}
            for conn in wait_ready(list(live), timeout=self._until_deadline()):
                i = live[conn]
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    return self._died(i)
                if message[0] == "done":
                    number = self._running.pop(i)
                    self._started.pop(i, None)
                    _, kind, payload, seconds = message
                    return Finished(i, number, kind, payload, seconds)
                self._serve(i, message)
            late = self._overdue()
            if late is not None:
                return self._timed_out(late)

    def _until_deadline(self) -> Optional[float]:
        """Seconds until the first running trial's timeout (None: no timeout)."""
        if self.trial_timeout_s is None or not self._started:
            return None
        return max(0.0, min(self._started.values()) + self.trial_timeout_s - time.monotonic())

    def _overdue(self) -> Optional[int]:
        """A worker whose trial has run over the timeout, if any."""
        if self.trial_timeout_s is None:
            return None
        now = time.monotonic()
        return next((i for i, t0 in self._started.items() if now - t0 >= self.trial_timeout_s), None)

    def _timed_out(self, i: int) -> Finished:
        """End worker `i` (its process only) and start it again; its trial fails as timed out."""
        number = self._running.pop(i)
        seconds = time.monotonic() - self._started.pop(i)
        proc = self._procs[i]
        proc.terminate()  # SIGTERM: ends it at once, within native code too (it installs no handler)
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
        self._restart(i)
        return Finished(i, number, "failed", f"timed out after {self.trial_timeout_s:g} s (--trial-timeout); "
                                             "its worker process was ended and restarted", seconds)

    def _restart(self, i: int) -> None:
        """Worker `i`, whose process has ended: its connection closed, its slot of the board
        cleared, a fresh process started and ready."""
        self._conns[i].close()
        self.board.clear(i)
        self._spawn(i)
        self._await_ready(i)

    def _serve(self, i: int, message) -> None:
        try:
            if message[0] == "measure":
                _, path, fresh = message
                with self.quiet():
                    start = time.time()
                    result = self._measure(Path(path), fresh)
                    value = (result, (start, time.time()))
            elif message[0] == "rung" and self._decide is not None:
                _, rung, acc, ratio = message
                value = self._decide(self._running[i], rung, acc, ratio)
            else:
                raise RuntimeError(f"unknown request {message[0]!r}")
        except Exception as exc:  # noqa: BLE001 - the worker's candidate fails with it
            self._conns[i].send(("error", one_line(exc)))
        else:
            self._conns[i].send(("ok", value))

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Held while the driver measures: no worker computes meanwhile."""
        t0 = time.perf_counter()
        self.board.request()
        try:
            while True:
                flagged = self.board.computing()
                busy = [i for i in flagged if self._procs[i] is not None and self._procs[i].is_alive()]
                for i in set(flagged) - set(busy):  # a worker that died while computing
                    self.board.clear(i)
                if not busy:
                    break
                time.sleep(_POLL_S)
            self.quiet_wait_s += time.perf_counter() - t0
            start = time.time()
            try:
                yield
            finally:
                self.measure_windows.append((start, time.time()))
        finally:
            self.board.release()

    def _died(self, i: int) -> Finished:
        number = self._running.pop(i)
        self._started.pop(i, None)
        proc = self._procs[i]
        proc.join(timeout=5)
        code = proc.exitcode
        self._restart(i)
        return Finished(i, number, "failed", f"worker: the trial's process died (exit code {code}); restarted", 0.0)

    def interrupt(self) -> list[int]:
        """Stop every worker at once (Ctrl-C); the trial numbers they were building."""
        numbers = list(self._running.values())
        self._running.clear()
        self._started.clear()
        for proc in self._procs:
            if proc is not None and proc.is_alive():
                proc.terminate()
        self.close()
        return numbers


__all__ = ["WORKERS_ENV", "Finished", "PoolGate", "QuietBoard", "TrialPool", "WorkerSetup", "default_workers",
           "threads_per_worker"]
