"""Latency as a ratio to a reference model timed interleaved in the same process.

CPU speed on shared or virtual machines drifts by tens of percent over seconds, so
absolute times taken at different moments are not comparable. Timing the reference
(the teacher) and the candidate in alternating blocks (R C R C ...) and taking the
median of per-pass ratios cancels the drift; absolute milliseconds are derived from the
reference for display only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

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

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize_interleaved(ref_blocks: Sequence[Sequence[float]], cand_blocks: Sequence[Sequence[float]]) -> LatencyResult:
    """Pure summary of interleaved block timings (seconds per run)."""
    if len(ref_blocks) != len(cand_blocks) or not ref_blocks:
        raise ValueError("need the same, non-zero number of reference and candidate blocks")
    ratios = np.array([np.median(c) / np.median(r) for r, c in zip(ref_blocks, cand_blocks)])
    ratio = float(np.median(ratios))
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
    input_shape: tuple[int, ...],
    *,
    reference_session=None,
    clock: Callable[[], float] = time.perf_counter,
) -> LatencyResult:
    """Time candidate vs reference under `profile`: warm both up, then `passes` pairs of
    blocks, alternating which goes first to cancel order effects. The reference block has
    `repeats` runs; the other model's block gets as many runs as make it last about as
    long (from the warm-up medians, within [repeats / 20, repeats * 20]), so both blocks see
    the same stretch of CPU-speed drift, however different the two models' speeds."""
    ref_sess = reference_session or profile.session(reference_path)
    cand_sess = profile.session(candidate_path)
    x = np.random.default_rng(0).standard_normal((profile.batch_size, *input_shape)).astype(np.float32)
    ref_feed = {ref_sess.get_inputs()[0].name: x}
    cand_feed = {cand_sess.get_inputs()[0].name: x}

    def run_ref():
        return ref_sess.run(None, ref_feed)

    def run_cand():
        return cand_sess.run(None, cand_feed)

    warm_ref = _time_block(run_ref, max(profile.warmup, 3), clock)
    warm_cand = _time_block(run_cand, max(profile.warmup, 3), clock)
    cand_repeats = balanced_repeats(profile.repeats, float(np.median(warm_ref[-3:])), float(np.median(warm_cand[-3:])))
    ref_blocks, cand_blocks = [], []
    for p in range(profile.passes):
        if p % 2 == 0:
            ref_blocks.append(_time_block(run_ref, profile.repeats, clock))
            cand_blocks.append(_time_block(run_cand, cand_repeats, clock))
        else:
            cand_blocks.append(_time_block(run_cand, cand_repeats, clock))
            ref_blocks.append(_time_block(run_ref, profile.repeats, clock))
    return summarize_interleaved(ref_blocks, cand_blocks)


def balanced_repeats(repeats: int, ref_seconds: float, cand_seconds: float) -> int:
    """Runs of the candidate that take about as long as `repeats` runs of the reference."""
    if cand_seconds <= 0:
        return repeats * 20
    n = round(repeats * ref_seconds / cand_seconds)
    return int(min(max(n, max(1, repeats // 20)), repeats * 20))


class LatencyWorker:
    """Times candidates in a separate process that does nothing else.

    The searching process trains with torch, calibrates quantizers and allocates a lot;
    small, fast models timed there came out up to ~20% slower (relative to the teacher)
    than the same files timed in a fresh process. The worker (`python -m
    autocompress.evaluation._latency_worker`, which imports onnxruntime and numpy, not
    torch) holds the reference session and times one candidate at a time. A worker that
    dies is restarted for the next candidate."""

    def __init__(self, reference_path, profile: HardwareProfile, input_shape: tuple[int, ...]):
        self._args = (str(reference_path), profile, tuple(input_shape))
        self._proc = None

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

    def measure(self, candidate_path) -> LatencyResult:
        import pickle

        if self._proc is None or self._proc.poll() is not None:
            self._start()
        try:
            pickle.dump(str(candidate_path), self._proc.stdin)
            self._proc.stdin.flush()
            ok, payload = pickle.load(self._proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            self.close()
            raise RuntimeError("the latency worker process died while timing this candidate") from None
        if not ok:
            raise RuntimeError(payload)
        return payload

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
