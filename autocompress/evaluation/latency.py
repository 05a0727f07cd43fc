"""Latency as a ratio to a reference model timed interleaved in the same process.

CPU speed on shared or virtual machines drifts by tens of percent over seconds, so
absolute times taken at different moments are not comparable. Timing the reference
(the teacher) and the candidate in alternating blocks (R C R C ...) and taking the
median of per-pass ratios cancels the drift; absolute milliseconds are derived from the
reference for display only.

How many passes: at least the profile's `passes`; then more, one pair of blocks at a time,
until the 95% confidence interval of the median per-pass ratio (distribution-free, from
order statistics) has a relative half-width <= `target_ci`, or `max_passes` is reached
(`converged` says which). A candidate whose interval does not lie below 1 is not faster
than the teacher beyond noise (`not_faster`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from autocompress.hardware import HardwareProfile


@dataclass(frozen=True)
class LatencyResult:
    ratio: float  # candidate / reference, median over passes
    ratio_spread: float  # (max - min) / 2 of the per-pass ratios, relative to `ratio`
    candidate_median_ms: float
    candidate_p90_ms: float
    candidate_spread: float  # (p90 - p10) / median of the candidate's single-run times
    reference_median_ms: float
    passes: int
    ratio_low: float = float("nan")  # 95% confidence interval of the ratio (nan: too few passes)
    ratio_high: float = float("nan")
    converged: bool = False  # the interval reached the target width before max_passes
    cached: bool = False  # the same file was timed before under the same profile: that result
    source: str = "measured"  # or "predicted" (from a device latency table, evaluation.predictor)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def ci_halfwidth(self) -> float:
        """Relative half-width of the ratio's confidence interval (inf when undefined)."""
        return relative_halfwidth(self.ratio, self.ratio_low, self.ratio_high)

    @property
    def not_faster(self) -> bool:
        return not_faster(self.ratio, self.ratio_high)


def not_faster(ratio: float, ratio_high: float) -> bool:
    """Not below the reference beyond noise: the ratio's interval reaches 1 (or, with no
    interval, the ratio is >= 1)."""
    return ratio_high >= 1.0 if not math.isnan(ratio_high) else ratio >= 1.0


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: the order statistics
    (x_(k), x_(n+1-k)) with the largest k such that P(Binomial(n, 1/2) < k) <= (1 -
    confidence) / 2. (nan, nan) when n is too small for any k (n < 6 at 95%)."""
    x = np.sort(np.asarray(values, dtype=float))
    n, alpha = len(x), (1.0 - confidence) / 2
    k, tail = 0, 0.0
    while True:
        nxt = tail + math.comb(n, k) / 2**n  # P(B < k + 1); int / int: no overflow past n = 1023
        if nxt > alpha or k + 1 > n // 2:
            break
        tail, k = nxt, k + 1
    if k == 0:
        return float("nan"), float("nan")
    return float(x[k - 1]), float(x[n - k])


def relative_halfwidth(center: float, low: float, high: float) -> float:
    if math.isnan(low) or math.isnan(high) or center <= 0:
        return math.inf
    return (high - low) / 2.0 / center


def summarize_interleaved(ref_blocks: Sequence[Sequence[float]], cand_blocks: Sequence[Sequence[float]], *,
                          converged: bool = False) -> LatencyResult:
    """Pure summary of interleaved block timings (seconds per run)."""
    if len(ref_blocks) != len(cand_blocks) or not ref_blocks:
        raise ValueError("need the same, non-zero number of reference and candidate blocks")
    ratios = np.array([np.median(c) / np.median(r) for r, c in zip(ref_blocks, cand_blocks)])
    ratio = float(np.median(ratios))
    low, high = median_interval(ratios)
    cand = np.concatenate([np.asarray(c, dtype=float) for c in cand_blocks]) * 1e3
    ref = np.concatenate([np.asarray(r, dtype=float) for r in ref_blocks]) * 1e3
    med = float(np.median(cand))
    p10, p90 = np.percentile(cand, [10, 90])
    return LatencyResult(
        ratio=ratio,
        ratio_spread=float((ratios.max() - ratios.min()) / 2 / ratio),
        candidate_median_ms=med,
        candidate_p90_ms=float(p90),
        candidate_spread=float((p90 - p10) / med),
        reference_median_ms=float(np.median(ref)),
        passes=len(ratios),
        ratio_low=low,
        ratio_high=high,
        converged=converged,
    )


def _time_block(run: Callable[[], object], n: int, clock: Callable[[], float]) -> list[float]:
    out = []
    for _ in range(n):
        t0 = clock()
        run()
        out.append(clock() - t0)
    return out


def measure_interleaved(
    reference_path,
    candidate_path,
    profile: HardwareProfile,
    timing,
    *,
    reference_session=None,
    clock: Callable[[], float] = time.perf_counter,
    on_block: Callable[[], None] = lambda: None,
) -> LatencyResult:
    """Time candidate vs reference ONNX files under `profile` (see time_interleaved) on
    `timing`: a feed of the task's real samples, or one sample's shape
    (HardwareProfile.feed_for)."""
    ref_sess = reference_session or profile.session(reference_path)
    cand_sess = profile.session(candidate_path)
    ref_feed = profile.feed_for(ref_sess, timing)
    cand_feed = profile.feed_for(cand_sess, timing)
    return time_interleaved(lambda: ref_sess.run(None, ref_feed), lambda: cand_sess.run(None, cand_feed), profile, clock=clock,
                            on_block=on_block)


def time_interleaved(run_ref: Callable[[], object], run_cand: Callable[[], object], profile: HardwareProfile, *,
                     clock: Callable[[], float] = time.perf_counter, on_block: Callable[[], None] = lambda: None) -> LatencyResult:
    """Warm both up, then pairs of blocks, alternating which goes first to cancel order
    effects, for `passes` pairs and then until the ratio's confidence interval is within
    `target_ci` (or `max_passes`). The reference block has `repeats` runs; the other
    model's block gets as many runs as make it last about as long (from the warm-up
    medians, within [repeats / 20, repeats * 20]), so both blocks see the same stretch of
    CPU-speed drift, however different the two models' speeds. `on_block()` after each
    block, outside the timed runs (the latency worker's sign of progress)."""
    warm_ref = _time_block(run_ref, max(profile.warmup, 3), clock)
    on_block()
    warm_cand = _time_block(run_cand, max(profile.warmup, 3), clock)
    on_block()
    cand_repeats = balanced_repeats(profile.repeats, float(np.median(warm_ref[-3:])), float(np.median(warm_cand[-3:])))
    ref_blocks: list[list[float]] = []
    cand_blocks: list[list[float]] = []
    converged = False
    for p in range(max(profile.passes, profile.max_passes)):
        if p % 2 == 0:
            ref_blocks.append(_time_block(run_ref, profile.repeats, clock))
            on_block()
            cand_blocks.append(_time_block(run_cand, cand_repeats, clock))
        else:
            cand_blocks.append(_time_block(run_cand, cand_repeats, clock))
            on_block()
            ref_blocks.append(_time_block(run_ref, profile.repeats, clock))
        on_block()
        if p + 1 >= profile.passes:
            ratios = [float(np.median(c) / np.median(r)) for r, c in zip(ref_blocks, cand_blocks)]
            low, high = median_interval(ratios)
            if relative_halfwidth(float(np.median(ratios)), low, high) <= profile.target_ci:
                converged = True
                break
    return summarize_interleaved(ref_blocks, cand_blocks, converged=converged)


def balanced_repeats(repeats: int, ref_seconds: float, cand_seconds: float) -> int:
    """Runs of the candidate that take about as long as `repeats` runs of the reference."""
    if cand_seconds <= 0:
        return repeats * 20
    n = round(repeats * ref_seconds / cand_seconds)
    return int(min(max(n, max(1, repeats // 20)), repeats * 20))


@runtime_checkable
class LatencyMeter(Protocol):
    """What times candidates against the teacher: the local worker process, the cache in
    front of it, the Ray client of the latency service. `fresh`: a new measurement with the
    profile's full protocol (the teacher, the front and the hand recipes at the end of a
    search: the numbers a user reads); otherwise the search may answer from its cache or
    time with the profile's search-time protocol (HardwareProfile.screening)."""

    def measure(self, path: str | Path, *, fresh: bool = False) -> "LatencyResult": ...

    def close(self) -> None: ...


@runtime_checkable
class DeviceMeter(LatencyMeter, Protocol):
    """A LatencyMeter that also runs the val accuracy where it times (--accuracy-on-device)."""

    def accuracy(self, path: str | Path) -> float: ...


class CachedLatency:
    """A LatencyMeter keyed by the ONNX file's content hash and the profile: an identical
    model is timed once by the wrapped meter (the answer is marked `cached`), with the
    profile's search-time protocol. `fresh=True` times it again with the full protocol (the
    teacher; the end-of-search re-measurement of the front and the recipes)."""

    def __init__(self, worker: LatencyMeter, profile: HardwareProfile):
        self._worker = worker
        self._profile_key = profile.fingerprint
        self._seen: dict[str, LatencyResult] = {}
        self.hits = 0

    def key(self, data: bytes) -> str:
        import hashlib

        return hashlib.sha256(data).hexdigest() + ":" + self._profile_key

    def measure(self, path, *, fresh: bool = False) -> LatencyResult:
        from dataclasses import replace
        from pathlib import Path

        key = self.key(Path(path).read_bytes())
        if not fresh and key in self._seen:
            self.hits += 1
            return replace(self._seen[key], cached=True)
        result = self._worker.measure(path, screen=not fresh)
        self._seen[key] = result
        return result

    def close(self) -> None:
        self._worker.close()


LATENCY_TIMEOUT_ENV = "AUTOCOMPRESS_LATENCY_TIMEOUT"
DEFAULT_LATENCY_TIMEOUT_S = 300.0
PROGRESS = "progress"  # the latency worker's sign of life between blocks of timed runs (its answers are tuples)


def latency_timeout_s() -> float:
    """Seconds the latency worker may go without progress (a finished block of timed runs,
    or the answer) before it is taken for hung: $AUTOCOMPRESS_LATENCY_TIMEOUT, else 300.
    Generous: a block is `repeats` runs (40 in the built-in profiles), a session is made in
    seconds; a slow model's long measurement still goes on block after block."""
    import os

    env = os.environ.get(LATENCY_TIMEOUT_ENV)
    if not env:
        return DEFAULT_LATENCY_TIMEOUT_S
    try:
        value = float(env)
    except ValueError:
        value = float("nan")
    if not 0 < value < math.inf:
        from autocompress.errors import ConfigError

        raise ConfigError(f"${LATENCY_TIMEOUT_ENV} must be a number of seconds > 0, got {env!r}")
    return value


class LatencyWorker:
    """Times candidates in a separate process that does nothing else.

    The searching process trains with torch, calibrates quantizers and allocates a lot;
    small, fast models timed there came out up to ~20% slower (relative to the teacher)
    than the same files timed in a fresh process. The worker (`python -m
    autocompress.evaluation._latency_worker`, which imports onnxruntime and numpy, not
    torch) holds the reference session and times one candidate at a time. A worker that
    dies is restarted for the next candidate; one that has not answered within `timeout_s`
    (an ONNX Runtime session that hangs) is killed, the request fails with TimeoutError,
    and a new worker serves the next candidate."""

    def __init__(self, reference_path, profile: HardwareProfile, timing, *, timeout_s: Optional[float] = None):
        """`timing`: what models are timed on, the task's feed of real samples (input name
        -> numpy array) or one sample's shape (HardwareProfile.feed_for). `timeout_s`: per
        request (None: latency_timeout_s())."""
        self._args = (str(reference_path), profile, timing if isinstance(timing, dict) else tuple(timing))
        self._proc = None
        self.timeout_s = latency_timeout_s() if timeout_s is None else float(timeout_s)
        if not 0 < self.timeout_s < math.inf:
            raise ValueError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")

    def _start(self) -> None:
        import pickle
        import subprocess
        import sys

        self._proc = subprocess.Popen(
            [sys.executable, "-m", "autocompress.evaluation._latency_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        pickle.dump(self._args, self._proc.stdin)
        self._proc.stdin.flush()

    def measure(self, candidate_path, *, fresh: bool = False, screen: bool = False) -> LatencyResult:
        """Time the ONNX file against the reference (always a new measurement: the worker
        keeps no earlier answers, so `fresh` changes nothing), with the profile's full
        protocol, or its search-time one (HardwareProfile.screening) if `screen`."""
        return self._ask("screen" if screen and not fresh else "measure", candidate_path)

    def node_costs(self, candidate_path) -> tuple[list, list[float]]:
        """(the candidate's optimized-graph nodes, each node's kernel time in context / the
        reference's summed kernel time): evaluation.graph_profile.node_costs, in the worker."""
        return self._ask("nodes", candidate_path)

    def _ask(self, kind: str, candidate_path):
        import pickle

        if self._proc is None or self._proc.poll() is not None:
            self._start()
        try:
            pickle.dump((kind, str(candidate_path)), self._proc.stdin)
            self._proc.stdin.flush()
            ok, payload = self._reply()
        except TimeoutError:  # an OSError, but the worker did not die: it was killed
            raise
        except (EOFError, OSError, pickle.UnpicklingError):
            self.close()
            raise RuntimeError("the latency worker process died while timing this candidate") from None
        if not ok:
            raise RuntimeError(payload)
        return payload

    def _reply(self):
        """The worker's answer, read in a thread so that waiting for it can end. While it
        times, the worker says PROGRESS after each block of runs; past `timeout_s` with
        neither that nor an answer (a session that hangs), the worker (this one process) is
        killed, which also ends the read, and TimeoutError is raised; the next request starts
        a new worker. A long measurement of a slow model is not cut short."""
        import pickle
        import queue
        import threading

        proc = self._proc
        messages: "queue.Queue[tuple[bool, object]]" = queue.Queue()

        def read() -> None:
            try:
                while True:
                    message = pickle.load(proc.stdout)
                    messages.put((True, message))
                    if message != PROGRESS:
                        return
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                messages.put((False, exc))

        reader = threading.Thread(target=read, name="latency-worker-reply", daemon=True)
        reader.start()
        while True:
            try:
                ok, value = messages.get(timeout=self.timeout_s)
            except queue.Empty:
                break
            if not ok:
                raise value
            if value != PROGRESS:
                return value
        # silent for timeout_s: hung
        self._proc = None
        proc.kill()  # this worker only; its end closes the pipe, which ends the read
        proc.wait()
        reader.join(10)
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        raise TimeoutError(f"latency worker timed out after {self.timeout_s:g} s without progress; it was killed and is restarted "
                           f"for the next candidate (${LATENCY_TIMEOUT_ENV} sets the limit)")

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()  # the worker exits at end of input
            proc.wait(timeout=10)
        except Exception:  # noqa: BLE001
            proc.kill()
            proc.wait()
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> "LatencyWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
