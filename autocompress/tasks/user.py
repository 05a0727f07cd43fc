"""A user's task from Python files: --model FILE.py:FN returns a trained nn.Module,
--data FILE.py:FN returns (train, val) or (train, val, test) Datasets of (inputs, class)
samples or dicts with a "labels" key (or DataLoaders of such batches); inputs as
data.structure describes them (a tensor of any dtype, a tuple or a dict of tensors).
Optional --checkpoint: a state_dict loaded with weights_only=True. `build_task` is the
common core, also behind the Python API's Task (autocompress.api)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from autocompress.errors import TaskError, one_line
from autocompress.data import structure as st
from autocompress.data.split import TARGET_KEY, Split, as_split
from autocompress.evaluation.metrics import BUILTIN, Metric
from autocompress.tasks.base import LoadedTask


def load_callable(spec: str, *, flag: str) -> Callable[[], Any]:
    """'path/to/file.py:function' -> the function."""
    if ":" not in spec:
        raise TaskError(f"{flag} must look like FILE.py:FUNCTION, got {spec!r}")
    file, _, fn_name = spec.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise TaskError(f"{flag}: no such file {file!r}")
    mod_name = f"_autocompress_user_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
    module = sys.modules.get(mod_name)
    if module is None:
        import_spec = importlib.util.spec_from_file_location(mod_name, path)
        if import_spec is None or import_spec.loader is None:
            raise TaskError(f"{flag}: cannot import {file!r}")
        module = importlib.util.module_from_spec(import_spec)
        sys.modules[mod_name] = module  # so pickling / dataclasses inside the file work
        try:
            import_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's code failed: say where
            del sys.modules[mod_name]
            raise TaskError(f"{flag}: importing {file!r} raised {one_line(exc)}") from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise TaskError(f"{flag}: {file!r} has no function {fn_name!r}")
    return fn


def call_user(spec: str, *, flag: str) -> Any:
    """Load and call the user's function; its exceptions become one-line TaskErrors."""
    fn = load_callable(spec, flag=flag)
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the user's code failed: say which function
        raise TaskError(f"{flag}: {spec} raised {one_line(exc)}") from exc


def _split(data: Any, name: str, *, field: str, batch_size: Optional[int], target_key: str) -> Split:
    try:
        split = as_split(data, name=name, batch_size=batch_size, target_key=target_key)
        split.head(1)
    except TaskError:
        raise
    except (TypeError, ValueError) as exc:  # ours: what the data is not
        raise TaskError(f"{field}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # noqa: BLE001 - the user's dataset or collate function failed
        raise TaskError(f"{field}: reading the {name} split raised {one_line(exc)}") from exc
    return split


def _first(split: Split, n: int, field: str) -> tuple[Any, torch.Tensor]:
    """The first `n` samples, their structure checked (TaskError naming `field`)."""
    try:
        inputs, targets = split.head(n)
    except Exception as exc:  # noqa: BLE001 - the user's dataset or collate function failed
        raise TaskError(f"{field}: reading the {split.name} split's first samples raised {one_line(exc)}") from exc
    try:
        st.check_inputs(inputs, f"the {split.name} split")
    except ValueError as exc:
        raise TaskError(f"{field}: {exc}") from None
    return inputs, targets


def _check_labels(split: Split, num_classes: int, field: str) -> None:
    """Integer classes in range, on a bounded draw of the split."""
    _, y = split.draw(256, seed=0)
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise TaskError(f"{field}: {split.name} labels must be integer classes, one per sample, got {y.dtype} of shape {tuple(y.shape)}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise TaskError(f"{field}: {split.name} labels must be in [0, {num_classes - 1}] (the model has {num_classes} outputs), "
                        f"got {int(y.min())}..{int(y.max())}")


def build_task(model: Any, splits: Any, *, name: str, spec: dict[str, Any], model_field: str = "--model",
               data_field: str = "--data", batch_size: Optional[int] = None, target_key: str = TARGET_KEY,
               metric: Optional[Metric] = None, loss: Any = None, distill_loss: Any = None, metric_field: str = "Task.metric",
               loss_field: str = "Task.loss") -> LoadedTask:
    """A LoadedTask from a model and (train, val) or (train, val, test) splits (Datasets or
    DataLoaders, read in batches, never whole); every problem is a one-line TaskError naming
    `model_field` or `data_field`. A classification `metric` (default accuracy) needs
    logits and integer classes in range; any other is tried on the teacher's outputs for
    the first val samples and the task's `loss` (which it needs) on the first train
    samples, each a one-line TaskError naming `metric_field` / `loss_field` if it fails."""
    if not isinstance(model, nn.Module):
        raise TaskError(f"{model_field} must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(splits, (tuple, list)) or len(splits) not in (2, 3):
        raise TaskError(f"{data_field} must be (train, val) or (train, val, test), got {type(splits).__name__}")
    names = ("train", "val", "test")
    parts = [_split(ds, names[i], field=data_field, batch_size=batch_size, target_key=target_key) for i, ds in enumerate(splits)]
    train, val = parts[0], parts[1]
    test = parts[2] if len(parts) == 3 else None
    example, _ = _first(val, 2, data_field)
    train_inputs, _ = _first(train, 2, data_field)
    if st.input_names(train_inputs) != st.input_names(example):
        raise TaskError(f"{data_field}: the train split's inputs {st.input_names(train_inputs)} differ from the val split's {st.input_names(example)}")
    model = model.cpu().eval()
    try:
        with torch.no_grad():
            out = st.call(model, example)
    except Exception as exc:  # noqa: BLE001
        raise TaskError(f"{model_field}: forward pass on the val split's first inputs ({st.describe(example)}) failed: {one_line(exc)}") from exc
    fields = st.output_fields(out)
    if not fields:
        raise TaskError(f"{model_field}: the model's output holds no tensor, got {type(out).__name__}")
    try:
        with torch.no_grad():
            other = [n for n, _ in st.output_fields(st.call(model, train_inputs))]
    except Exception as exc:  # noqa: BLE001
        raise TaskError(f"{model_field}: forward pass on the train split's first inputs ({st.describe(train_inputs)}) failed: {one_line(exc)}") from exc
    if other != [n for n, _ in fields]:
        raise TaskError(f"{model_field}: the model's outputs change between batches: {other} on the train split's first, "
                        f"{[n for n, _ in fields]} on the val split's")
    metric = BUILTIN["accuracy"] if metric is None else metric
    num_classes = None
    if metric.classification:
        logits = st.primary(out)
        if logits.ndim != 2:
            raise TaskError(f"{model_field}: must return logits of shape (batch, classes) for the metric {metric.name!r}, got {tuple(logits.shape)}")
        num_classes = int(logits.shape[1])
        for part in parts:
            _check_labels(part, num_classes, data_field)
    else:
        _check_metric(model, val, metric, [n for n, _ in fields], st.output_kind(out), metric_field)
    if loss is not None:
        _check_loss(model, train, loss, loss_field)
    return LoadedTask(name=name, teacher=model, train=train, val=val, test=test, num_classes=num_classes, spec=spec, example=example,
                      output_names=tuple(n for n, _ in fields), output_kind=st.output_kind(out), metric=metric, loss=loss,
                      distill_loss=distill_loss)


CHECK_SAMPLES = 16  # val samples the metric is tried on (train samples the loss), before any work


def _check_metric(model: nn.Module, val: Split, metric: Metric, names: list[str], kind: str, field: str) -> None:
    """The metric on the teacher's outputs for the first val samples: one finite number,
    or a one-line TaskError naming `field`."""
    import numpy as np

    inputs, targets = val.head(CHECK_SAMPLES)
    with torch.no_grad():
        outs = {n: t.detach().cpu().numpy() for n, (_, t) in zip(names, st.output_fields(st.call(model, inputs)))}
    try:
        metric(outs, np.asarray(targets), kind=kind)
    except ValueError as exc:
        raise TaskError(f"{field}: on the teacher's outputs for the first {st.rows(inputs)} val samples: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's metric failed
        raise TaskError(f"{field}: {metric.name}(outputs, targets) on the teacher's outputs for the first val samples raised {one_line(exc)}") from exc


def _check_loss(model: nn.Module, train: Split, loss: Any, field: str) -> None:
    """The loss on the teacher's outputs for the first train samples: one finite tensor."""
    inputs, targets = train.head(CHECK_SAMPLES)
    try:
        with torch.no_grad():
            value = loss(st.call(model, inputs), torch.as_tensor(targets))
    except Exception as exc:  # noqa: BLE001 - the user's loss failed
        raise TaskError(f"{field}: loss(outputs, targets) on the teacher's outputs for the first train samples raised {one_line(exc)}") from exc
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or not bool(torch.isfinite(value).all()):
        got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) and value.numel() != 1 else (
            f"{value.item()}" if isinstance(value, torch.Tensor) else type(value).__name__)
        raise TaskError(f"{field}: loss(outputs, targets) must return one finite scalar tensor, got {got}")


def state_dict_mismatch(model: nn.Module, state: Any) -> Optional[str]:
    """Why `state` cannot be loaded into `model` (strictly), in words: the first missing key,
    unexpected key or shape that differs, and how many of each; None when it fits."""
    from collections.abc import Mapping

    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        return f"the file holds a {type(state).__name__}, not a state_dict (a mapping of parameter names to tensors)"
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and isinstance(state[k], torch.Tensor) and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{k} has shape {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
                     + (f" ({len(shapes)} tensors differ in shape)" if len(shapes) > 1 else ""))
    if missing:
        parts.append(f"{len(missing)} of the model's {len(own)} keys missing, e.g. {missing[0]!r}")
    if unexpected:
        parts.append(f"{len(unexpected)} key(s) the model does not have, e.g. {unexpected[0]!r}")
    return "; ".join(parts) or None


def user_task(model_spec: Optional[str], data_spec: Optional[str], checkpoint: Optional[str] = None) -> LoadedTask:
    if model_spec is None or data_spec is None:
        raise TaskError("--model and --data go together: give both, or neither for the demo")
    model = call_user(model_spec, flag="--model")
    if not isinstance(model, nn.Module):
        raise TaskError(f"--model: {model_spec} must return a torch.nn.Module, got {type(model).__name__}")
    spec: dict[str, Any] = {"kind": "user", "model": model_spec, "data": data_spec}
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise TaskError(f"--checkpoint: no such file {checkpoint!r}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise TaskError(f"--checkpoint: cannot read {checkpoint!r} as a state_dict (torch.load, weights_only): {one_line(exc)}") from exc
        differs = state_dict_mismatch(model, state)
        if differs is not None:
            raise TaskError(f"--checkpoint: {checkpoint!r} does not match the model ({type(model).__name__}): {differs}")
        try:
            model.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001
            raise TaskError(f"--checkpoint: cannot load {checkpoint!r} into the model: {one_line(exc)}") from exc
        spec["checkpoint_sha1"] = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
    splits = call_user(data_spec, flag="--data")
    if not isinstance(splits, (tuple, list)) or len(splits) not in (2, 3):
        raise TaskError(f"--data: {data_spec} must return (train, val) or (train, val, test), got {type(splits).__name__}")
    return build_task(model, splits, name=Path(model_spec.rpartition(":")[0]).stem, spec=spec)


