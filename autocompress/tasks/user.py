"""A user's task from Python files: --model FILE.py:FN returns a trained nn.Module,
--data FILE.py:FN returns (train, val) or (train, val, test) Datasets of (x, y) samples
with one input tensor and an integer class label (or DataLoaders of such batches).
Optional --checkpoint: a state_dict loaded with weights_only=True. `build_task` is the
common core, also behind the Python API's Task (autocompress.api)."""

from __future__ import annotations

import hashlib
import importlib.util
import numbers
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from autocompress.errors import TaskError, one_line
from autocompress.tasks.base import LoadedTask, Split


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


def _label(y: Any, where: str) -> int:
    label = y.item() if isinstance(y, torch.Tensor) and y.numel() == 1 else y
    if isinstance(label, bool) or not isinstance(label, numbers.Integral):
        raise TaskError(f"{where} label must be an integer class, got {y!r}")
    return int(label)


def _materialize(ds: Any, name: str, *, field: str = "--data") -> Split:
    """Read a split into tensors once: a sized Dataset of (x, y) samples, or a DataLoader
    of (x, y) batches (the loader's own batching and collate function)."""
    from torch.utils.data import DataLoader

    if isinstance(ds, DataLoader):
        return _from_loader(ds, name, field=field)
    try:
        n = len(ds)
    except TypeError:
        raise TaskError(f"{field}: the {name} split must be a sized Dataset or a DataLoader, got {type(ds).__name__}") from None
    if n == 0:
        raise TaskError(f"{field}: the {name} split is empty")
    xs, ys = [], []
    for i in range(n):
        sample = ds[i]
        if not isinstance(sample, (tuple, list)) or len(sample) != 2:
            raise TaskError(f"{field}: {name}[{i}] must be an (x, y) pair, got {type(sample).__name__}")
        x, y = sample
        if not isinstance(x, torch.Tensor):
            raise TaskError(f"{field}: {name}[{i}] input must be a torch.Tensor, got {type(x).__name__}")
        y = _label(y, f"{field}: {name}[{i}]")
        if xs and x.shape != xs[0].shape:
            raise TaskError(f"{field}: {name}[{i}] input shape {tuple(x.shape)} differs from {tuple(xs[0].shape)}")
        xs.append(x.float())
        ys.append(y)
    return Split(torch.stack(xs).contiguous(), torch.tensor(ys, dtype=torch.int64))


def _from_loader(loader: Any, name: str, *, field: str) -> Split:
    xs, ys = [], []
    for i, batch in enumerate(loader):
        where = f"{field}: {name} batch {i}"
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TaskError(f"{where} must be an (inputs, labels) pair, got {type(batch).__name__}")
        x, y = batch
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            raise TaskError(f"{where}: inputs must be a batched torch.Tensor, got {getattr(x, 'shape', type(x).__name__)}")
        y = torch.as_tensor(y)
        if y.ndim != 1 or len(y) != len(x) or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TaskError(f"{where}: labels must be integer classes, one per input, got {y.dtype} of shape {tuple(y.shape)}")
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise TaskError(f"{where}: input shape {tuple(x.shape[1:])} differs from {tuple(xs[0].shape[1:])}")
        xs.append(x.float())
        ys.append(y.to(torch.int64))
    if not xs:
        raise TaskError(f"{field}: the {name} split is empty")
    return Split(torch.cat(xs).contiguous(), torch.cat(ys).contiguous())


def build_task(model: Any, splits: Any, *, name: str, spec: dict[str, Any], model_field: str = "--model",
               data_field: str = "--data") -> LoadedTask:
    """A LoadedTask from a model and (train, val) or (train, val, test) splits; every problem
    is a one-line TaskError naming `model_field` or `data_field`."""
    if not isinstance(model, nn.Module):
        raise TaskError(f"{model_field} must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(splits, (tuple, list)) or len(splits) not in (2, 3):
        raise TaskError(f"{data_field} must be (train, val) or (train, val, test), got {type(splits).__name__}")
    names = ("train", "val", "test")
    parts = [_materialize(ds, names[i], field=data_field) for i, ds in enumerate(splits)]
    train, val = parts[0], parts[1]
    test = parts[2] if len(parts) == 3 else None
    input_shape = tuple(train.x.shape[1:])
    model = model.cpu().eval()
    try:
        with torch.no_grad():
            out = model(train.x[:2])
    except Exception as exc:  # noqa: BLE001
        raise TaskError(f"{model_field}: forward pass on input of shape {tuple(train.x[:2].shape)} failed: {one_line(exc)}") from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise TaskError(f"{model_field}: must return logits of shape (batch, classes), got {getattr(out, 'shape', type(out).__name__)}")
    num_classes = int(out.shape[1])
    for split_name, part in zip(names, parts):
        if int(part.y.min()) < 0 or int(part.y.max()) >= num_classes:
            raise TaskError(f"{data_field}: {split_name} labels must be in [0, {num_classes - 1}] (the model has {num_classes} outputs), "
                            f"got {int(part.y.min())}..{int(part.y.max())}")
    return LoadedTask(name=name, teacher=model, train=train, val=val, test=test, input_shape=input_shape, num_classes=num_classes, spec=spec)


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
            model.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001
            raise TaskError(f"--checkpoint: cannot load {checkpoint!r} into the model: {one_line(exc)}") from exc
        spec["checkpoint_sha1"] = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
    splits = call_user(data_spec, flag="--data")
    if not isinstance(splits, (tuple, list)) or len(splits) not in (2, 3):
        raise TaskError(f"--data: {data_spec} must return (train, val) or (train, val, test), got {type(splits).__name__}")
    return build_task(model, splits, name=Path(model_spec.rpartition(":")[0]).stem, spec=spec)


