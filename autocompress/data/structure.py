"""The structure of a model's inputs and outputs, and the one call convention.

Inputs are a tensor, a tuple of tensors or a dict of tensors (any dtype: int64 token ids
stay int64), batched along their first axis. A model is called as

    tensor -> model(x)      tuple -> model(*x)      dict -> model(**x)

Outputs may be a tensor, a tuple, a dict, or an object with `.logits` (a Hugging Face
ModelOutput is a dict). The *primary* output is what distillation and the built-in
metrics read: the tensor itself, a tuple's first tensor, a dict's "logits" (else its
first tensor), or `.logits`.

Names, for ONNX: a tensor input is "input", a tuple's are "input_0", "input_1", ..., a
dict's are its keys; a tensor output is "logits", a tuple's "output_0", ..., a dict's its
keys (fields that are None are left out)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from torch import nn

Inputs = Union[torch.Tensor, tuple, dict]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def call(model: Callable[..., Any], inputs: Any) -> Any:
    """The model on `inputs` by the call convention."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def tensors(inputs: Any) -> list[torch.Tensor]:
    """The input tensors in name order."""
    if isinstance(inputs, Mapping):
        return list(inputs.values())
    if isinstance(inputs, (tuple, list)):
        return list(inputs)
    return [inputs]


def input_names(inputs: Any) -> list[str]:
    if isinstance(inputs, Mapping):
        return [str(k) for k in inputs]
    if isinstance(inputs, (tuple, list)):
        return [f"{INPUT_NAME}_{i}" for i in range(len(inputs))]
    return [INPUT_NAME]


def rebuild(template: Any, parts: Sequence[Any]) -> Any:
    """`parts` (one per tensor of `template`, in name order) in `template`'s structure."""
    if isinstance(template, Mapping):
        return dict(zip(template.keys(), parts))
    if isinstance(template, (tuple, list)):
        return tuple(parts)
    return parts[0]


def apply(inputs: Any, fn: Callable[[Any], Any]) -> Any:
    """`fn` on every tensor, the structure kept."""
    return rebuild(inputs, [fn(t) for t in tensors(inputs)])


def rows(inputs: Any) -> int:
    """The batch size (the first axis of the first tensor)."""
    return int(tensors(inputs)[0].shape[0])


def take(inputs: Any, index: Any) -> Any:
    """Rows `index` (a slice or an index tensor) of every tensor."""
    return apply(inputs, lambda t: t[index])


def cat(parts: Sequence[Any]) -> Any:
    """Batches of one structure concatenated along the batch axis."""
    return rebuild(parts[0], [torch.cat(list(ts)) for ts in zip(*(tensors(p) for p in parts))])


def feed(inputs: Any) -> dict[str, np.ndarray]:
    """ONNX Runtime's feed: input name -> contiguous numpy array (dtype kept)."""
    return {n: np.ascontiguousarray(t.detach().cpu().numpy()) for n, t in zip(input_names(inputs), tensors(inputs))}


def describe(inputs: Any) -> str:
    """'input_ids int64 (2, 32), attention_mask int64 (2, 32)'."""
    return ", ".join(f"{n} {str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}" for n, t in zip(input_names(inputs), tensors(inputs)))


def check_inputs(inputs: Any, where: str) -> None:
    """ValueError unless `inputs` is a batched tensor, or a tuple / dict of batched tensors
    with one batch size."""
    if isinstance(inputs, Mapping):
        if not inputs or not all(isinstance(k, str) for k in inputs):
            raise ValueError(f"{where}: a dict of inputs needs string keys, got {list(inputs)!r}")
    elif isinstance(inputs, (tuple, list)) and not inputs:
        raise ValueError(f"{where}: an empty tuple of inputs")
    ts = tensors(inputs)
    for n, t in zip(input_names(inputs), ts):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{where}: input {n!r} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim < 1:
            raise ValueError(f"{where}: input {n!r} has no batch axis (a 0-d tensor)")
    if len({int(t.shape[0]) for t in ts}) > 1:
        raise ValueError(f"{where}: inputs of different batch sizes: {describe(inputs)}")


def output_fields(out: Any) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of every output, in order (None fields left out)."""
    if isinstance(out, torch.Tensor):
        return [(OUTPUT_NAME, out)]
    if isinstance(out, Mapping):
        return [(str(k), v) for k, v in out.items() if isinstance(v, torch.Tensor)]
    if isinstance(out, (tuple, list)):
        return [(f"output_{i}", v) for i, v in enumerate(out) if isinstance(v, torch.Tensor)]
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return [(OUTPUT_NAME, logits)]
    return []


def primary(out: Any) -> torch.Tensor:
    """The output distillation and the built-in metrics read (see the module's doc)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    fields = output_fields(out)
    if not fields:
        raise ValueError(f"the model's output has no tensor in it: {type(out).__name__}")
    return fields[0][1]


def output_kind(out: Any) -> str:
    """'tensor', 'tuple' or 'dict': how outputs are rebuilt from ONNX Runtime's list."""
    if isinstance(out, Mapping):
        return "dict"
    if isinstance(out, (tuple, list)):
        return "tuple"
    return "tensor"


def rebuild_outputs(kind: str, names: Sequence[str], parts: Sequence[Any]) -> Any:
    if kind == "dict":
        return dict(zip(names, parts))
    if kind == "tuple":
        return tuple(parts)
    return parts[0]


class Flat(nn.Module):
    """`model` with flat positional tensor inputs and a tuple of tensor outputs (what the
    ONNX exporter traces): its inputs rebuilt in `template`'s structure and called by the
    convention, its outputs as output_fields gives them."""

    def __init__(self, model: nn.Module, template: Any):
        super().__init__()
        self.model = model
        self._template = apply(template, lambda t: None)

    def forward(self, *flat: torch.Tensor):
        out = call(self.model, rebuild(self._template, flat))
        return tuple(t for _, t in output_fields(out))


__all__ = ["Flat", "INPUT_NAME", "Inputs", "OUTPUT_NAME", "apply", "call", "cat", "check_inputs", "describe", "feed", "input_names",
           "output_fields", "output_kind", "primary", "rebuild", "rebuild_outputs", "rows", "take", "tensors"]
