"""Does an exported ONNX file compute what its model computes? The export traces the model
once, on the task's example batch: Python control flow on sizes or values, `.item()`,
numpy and anything else that leaves torch is recorded as the constant it was then, and
the file computes something else on other inputs while every later number (metric,
latency) is measured on the file. So the file and the model are run on the same real
inputs at two other batch sizes, a full batch and a single row (the smallest batch, the one
profiles time by default, where `squeeze` and size-dependent branches show), and their
outputs compared as numpy.allclose does: |onnx - torch| <= ATOL + RTOL * |torch|."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from autocompress.data import structure as st
from autocompress.errors import one_line

ATOL = 1e-4
RTOL = 1e-3


@dataclass(frozen=True)
class Mismatch:
    """Where the file and the model disagree, on a batch of `rows` rows: the largest
    difference (output name, index, both values), or `reason` when there are no two values
    to compare (shapes differ, an output is missing, ONNX Runtime cannot run the batch)."""

    rows: int
    output: str = ""
    index: tuple[int, ...] = ()
    onnx: float = float("nan")
    torch: float = float("nan")
    reason: str = ""

    @property
    def difference(self) -> float:
        return abs(self.onnx - self.torch)

    def __str__(self) -> str:
        batch = f"on a batch of {self.rows} row{'s' if self.rows != 1 else ''}"
        if self.reason:
            return f"{self.reason} {batch}"
        at = f"{self.output!r}[{', '.join(map(str, self.index))}]"
        return (f"largest difference {self.difference:.4g} at output {at} {batch}: {self.onnx:.6g} in ONNX Runtime, "
                f"{self.torch:.6g} in PyTorch (allowed {ATOL:g} + {RTOL:g}*|PyTorch|)")


def check_batches(inputs: Any) -> list[Any]:
    """The batches a file is checked on, from a batch of real inputs (LoadedTask.check_inputs:
    the first rows of val): all of them, and their last row alone."""
    n = st.rows(inputs)
    return [inputs] if n == 1 else [inputs, st.take(inputs, slice(n - 1, n))]


def compare_export(model: nn.Module, path: str | Path, batches: Sequence[Any], *, atol: float = ATOL,
                   rtol: float = RTOL) -> Optional[Mismatch]:
    """The first disagreement between `model` (in eval mode, left in the mode it was in)
    and the ONNX file at `path` on `batches` (inputs as data.structure describes them), or
    None when every output agrees within atol + rtol * |torch|. ONNX Runtime runs on the
    CPU with as many threads as torch has here."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in sess.get_inputs()]
    names = [o.name for o in sess.get_outputs()]
    on = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        for inputs in batches:
            rows = st.rows(inputs)
            with torch.no_grad():
                out = st.call(model, st.apply(inputs, lambda t: t.to(on)) if on.type != "cpu" else inputs)
            expected = {n: t.detach().cpu().numpy() for n, t in st.output_fields(out)}
            feed = st.feed(inputs)
            try:
                got = dict(zip(names, sess.run(None, {n: feed[n] for n in wanted})))
            except Exception as exc:  # noqa: BLE001 - the file does not run where the model does
                return Mismatch(rows, reason=f"ONNX Runtime cannot run it ({one_line(exc, limit=200)})")
            bad = _compare(got, expected, rows, atol=atol, rtol=rtol)
            if bad is not None:
                return bad
    finally:
        model.train(was_training)
    return None


def _compare(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], rows: int, *, atol: float, rtol: float) -> Optional[Mismatch]:
    """The largest violation of allclose over the outputs the file has, or None."""
    worst: Optional[Mismatch] = None
    for name, a in got.items():
        if name not in expected:
            return Mismatch(rows, name, reason=f"output {name!r} of the file is not among the model's outputs {list(expected)}")
        b = expected[name]
        if a.shape != b.shape:
            return Mismatch(rows, name, reason=f"output {name!r} has shape {tuple(a.shape)} in ONNX Runtime, {tuple(b.shape)} in PyTorch")
        a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            diff = np.abs(a64 - b64)
            ok = (diff <= atol + rtol * np.abs(b64)) | (np.isnan(a64) & np.isnan(b64)) | (a64 == b64)
        if ok.all():
            continue
        score = np.where(ok, -1.0, np.nan_to_num(diff, nan=np.inf))
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(score)), a.shape))
        found = Mismatch(rows, name, index, float(a64[index]), float(b64[index]))
        if worst is None or not found.difference <= worst.difference:
            worst = found
    return worst


__all__ = ["ATOL", "Mismatch", "RTOL", "check_batches", "compare_export"]
