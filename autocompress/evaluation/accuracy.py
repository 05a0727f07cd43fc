"""The metric measured on the ONNX file itself: what is deployed is what is measured."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

_DEFAULT_THREADS = 0  # ORT's default: every core


def set_default_threads(threads: int) -> None:
    """Threads of the accuracy sessions when a call does not say (0 = ORT's default). A
    process that shares the machine with other trials sets its share of the cores."""
    global _DEFAULT_THREADS
    _DEFAULT_THREADS = int(threads)


def _session(path, threads: Optional[int], providers: tuple[str, ...]):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = _DEFAULT_THREADS if threads is None else threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=list(providers))


def onnx_outputs(path: str | Path, split, *, batch: int = 256, threads: Optional[int] = None,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({output name: outputs of every sample, concatenated}, targets) of the ONNX model at
    `path` on a data.split.Split, read batch by batch; each batch's inputs fed by the
    session's own input names (inputs the exported graph does not use are not fed)."""
    from autocompress.data import structure as st

    sess = _session(path, threads, providers)
    wanted = [i.name for i in sess.get_inputs()]
    names = [o.name for o in sess.get_outputs()]
    outs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    targets = []
    for inputs, y in split.batches(batch):
        full = st.feed(inputs)
        missing = [n for n in wanted if n not in full]
        if missing:
            raise ValueError(f"the ONNX file takes inputs {wanted}; the data has {list(full)} (no {missing[0]!r})")
        for n, v in zip(names, sess.run(None, {n: full[n] for n in wanted})):
            outs[n].append(v)
        targets.append(np.asarray(y))
    if not targets:
        raise ValueError("cannot measure on an empty split")
    return {n: np.concatenate(v) for n, v in outs.items()}, np.concatenate(targets)


def split_metric(path: str | Path, split, metric=None, *, kind: str = "tensor", **kw) -> float:
    """The task's metric (evaluation.metrics.Metric, default accuracy) of the ONNX model at
    `path` on a data.split.Split, on its outputs concatenated over the split; `kind`: how
    the model returns its outputs (data.structure.output_kind), for a metric of the user's."""
    from autocompress.evaluation.metrics import BUILTIN

    outputs, y = onnx_outputs(path, split, **kw)
    return (metric or BUILTIN["accuracy"])(outputs, y, kind=kind)


def split_accuracy(path: str | Path, split, **kw) -> float:
    """Top-1 accuracy (fraction) of the ONNX model at `path` on a data.split.Split."""
    return split_metric(path, split, **kw)


def onnx_predict(path: str | Path, x: np.ndarray, *, batch: int = 256, threads: Optional[int] = None,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> np.ndarray:
    """Predicted class per row of `x`, by ONNX Runtime (threads 0 = ORT default, None = the
    process's default, set_default_threads; by default on the CPU, or on a hardware
    profile's execution providers)."""
    sess = _session(path, threads, providers)
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(x, dtype=np.float32)
    preds = [sess.run(None, {name: x[i : i + batch]})[0].argmax(axis=1) for i in range(0, len(x), batch)]
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def onnx_accuracy(path: str | Path, x: np.ndarray, y: np.ndarray, **kw) -> float:
    """Top-1 accuracy (fraction) of the ONNX model at `path` on (x, y)."""
    y = np.asarray(y)
    if len(y) == 0:
        raise ValueError("cannot measure accuracy on an empty split")
    return float((onnx_predict(path, x, **kw) == y).mean())
