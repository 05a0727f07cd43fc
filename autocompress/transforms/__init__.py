"""Model transforms: structured pruning, SVD low-rank, block substitution, and the
forward-pass utilities they share. The techniques (autocompress.techniques) apply them;
each function here changes the model it is given (the pipeline's own copy)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager



def _untimed(name: str) -> ContextManager[None]:
    return nullcontext()


@dataclass(frozen=True)
class TransformContext:
    """What a model-stage technique may need besides the model.

    example_input: a batch the model runs on (shapes, dependency graphs): a tensor, tuple or
      dict of tensors, called by data.structure's convention;
    calibration: training inputs for data-driven criteria (activation statistics), fed in
      `batch_size` batches;
    candidate: the whole CandidateConfig (a technique may read another's config);
    teacher, train_x: the original model and bounded training inputs (block warm-up,
      BatchNorm re-estimation; LoadedTask.train_sample);
    weights: False when only the architecture is wanted (rebuilding a trained candidate for
      its saved state_dict): work that changes weights only is skipped;
    seed: the candidate's seed; timed(name): a context manager that times a sub-step
      (e.g. 'warmup') as a stage of its own."""

    example_input: Any
    calibration: Any = None
    batch_size: int = 64
    candidate: Any = None
    teacher: Any = None
    train_x: Any = None
    weights: bool = True
    seed: int = 0
    timed: Callable[[str], ContextManager[Any]] = field(default=_untimed, compare=False)


__all__ = ["TransformContext"]
