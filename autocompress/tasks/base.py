"""What a search compresses, as loaded: the teacher and its data as splits read in batches
(data.split), with the structure of its inputs and outputs (data.structure)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from autocompress.data import structure as st
from autocompress.data.split import Split, TensorSplit
from autocompress.evaluation.metrics import BUILTIN, Metric

CALIBRATION_SAMPLES = 128  # quantization calibration and pruning's activation statistics
FINGERPRINT_SAMPLES = 64  # per split, hashed for the fingerprint of data that is not in memory
SAMPLE_ROWS = 2048  # at most this many training rows for BatchNorm re-estimation and the block warm-up ...
SAMPLE_BYTES = 64 << 20  # ... and at most this many bytes of them
CHECK_ROWS = 32  # val rows every exported file is run on next to its model (export.faithful): a full batch, then its last row


@dataclass
class LoadedTask:
    """What a search compresses and how candidates are judged.

    `val` selects (the search sees it); `test` is never seen by the search and is only
    reported for the final front. `test` may be None when the user gives no test split.
    `example`: the inputs of the first two val samples (shapes, dependency graphs, the
    ONNX export); `dynamic_axes`: extra dynamic axes of the export by input name.
    `metric` judges candidates (evaluation.metrics); `loss(outputs, targets)` is the
    fine-tune's label term (None: cross-entropy, for a classification metric) and
    `distill_loss(student, teacher)` its teacher term on the primary outputs (None: the
    temperature-scaled KL for a classification metric, else the mean squared error);
    `num_classes` is None for a task that is not a classification."""

    name: str
    teacher: nn.Module
    train: Split
    val: Split
    test: Optional[Split]
    num_classes: Optional[int]
    spec: dict[str, Any] = field(default_factory=dict)
    example: Any = None
    output_names: tuple[str, ...] = (st.OUTPUT_NAME,)
    output_kind: str = "tensor"
    dynamic_axes: Optional[dict[str, dict[int, str]]] = None
    metric: Metric = BUILTIN["accuracy"]
    loss: Any = None
    distill_loss: Any = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.example is None:
            self.example = self.val.head(2)[0]

    def __getstate__(self):  # what is drawn is drawn again where the task is unpickled
        return {**self.__dict__, "_cache": {}}

    @property
    def input_names(self) -> list[str]:
        return st.input_names(self.example)

    @property
    def input_shapes(self) -> dict[str, list[int]]:
        """One sample's shape per input (of the example)."""
        return {n: list(t.shape[1:]) for n, t in zip(self.input_names, st.tensors(self.example))}

    @property
    def input_shape(self) -> Optional[tuple[int, ...]]:
        """One sample's shape when the input is one tensor, else None."""
        return tuple(self.example.shape[1:]) if isinstance(self.example, torch.Tensor) else None

    @property
    def objective(self):
        """The fine-tune's loss (training.distill.FineTuneLoss) of this task."""
        from autocompress.training.distill import FineTuneLoss

        return FineTuneLoss(self.metric.classification, self.loss, self.distill_loss)

    def _memo(self, key: str, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def calibration(self) -> Any:
        """A fixed, seeded draw of training inputs for quantization calibration and
        activation statistics (the same draw every time, so pruning can be replayed)."""
        return self._memo("calibration", lambda: self.train.draw(CALIBRATION_SAMPLES, seed=0)[0])

    @property
    def train_sample(self) -> Any:
        """Bounded training inputs (all of them when few, else a seeded draw; at most
        SAMPLE_ROWS rows and SAMPLE_BYTES bytes): BatchNorm re-estimation, the block warm-up."""
        per_row = max(1, sum(t[0].numel() * t.element_size() for t in st.tensors(self.example)))
        n = max(1, min(SAMPLE_ROWS, SAMPLE_BYTES // per_row))
        return self._memo("train_sample", lambda: self.train.sample(n, seed=0)[0])

    @property
    def check_inputs(self) -> Any:
        """The first CHECK_ROWS val inputs: every exported file (the teacher's, each
        candidate's float graph) is run on them and on their last row next to its model
        (export.faithful)."""
        return self._memo("check_inputs", lambda: self.val.head(CHECK_ROWS)[0])

    def timing_feed(self, profile) -> dict[str, Any]:
        """The feed candidates are timed on: the first `profile.batch_size` val samples
        (HardwareProfile.timing_feed; its input_shape override applied)."""
        return self._memo(f"timing-{profile.fingerprint}", lambda: profile.timing_feed(st.feed(self.val.head(profile.batch_size)[0])))

    @property
    def fingerprint(self) -> str:
        """Identifies the task for resume checks: its spec (with the user's `version`), and
        its metric (unless accuracy), per split its length and a seeded draw of FINGERPRINT_SAMPLES samples (inputs and
        targets; data.split's draw: the same samples however the split is given). The
        teacher's weights are not hashed."""
        h = hashlib.sha1(json.dumps({**self.spec, "metric": self.metric.describe()} if self.metric.name != "accuracy" else self.spec,
                                    sort_keys=True).encode())
        for split in (self.train, self.val, self.test):
            if split is None:
                continue
            h.update(str(len(split)).encode())
            x, y = split.draw(FINGERPRINT_SAMPLES, seed=0)
            for t in (*st.tensors(x), torch.as_tensor(y)):
                h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:12]


__all__ = ["CALIBRATION_SAMPLES", "CHECK_ROWS", "LoadedTask", "Metric", "Split", "TensorSplit"]
