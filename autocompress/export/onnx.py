"""ONNX export with the TorchScript exporter (dynamo=False), deliberately: it writes one
self-contained file with a dynamic batch axis, folds BatchNorm into convolutions in eval
mode and takes ~0.1 s for our models, where the dynamo exporter takes seconds and writes
weights to a side file. Size always counts every byte the model needs, side files too.

Hugging Face models are exported with eager attention (`eager_attention`), the teacher and
every candidate alike: ONNX Runtime's transformer optimizer (export.fuse) fuses the eager
form into one Attention node per layer and the SDPA form (transformers 5.x's default) not
at all. Unfused, the eager export gave the SDPA export's outputs within 2e-7 and was a
little faster (a BERT of hidden 128, 4 layers, sequence 64, ORT CPU, 1 thread: 1.38-1.42 ms
eager, 1.46-1.50 ms SDPA, three runs; the SDPA graph has more nodes, its NaN guards), so
every export is eager and the teacher's baseline is timed on the same form as the
candidates. Fine-tuning in torch keeps the model's own setting: only the export is eager."""

from __future__ import annotations

import re
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from autocompress.data import structure as st
from autocompress.data.structure import INPUT_NAME, OUTPUT_NAME
from autocompress.errors import ExportError, one_line

OPSET = 17


def export_onnx(model: nn.Module, example, path: str | Path, *, dynamic_axes: Optional[dict[str, dict[int, str]]] = None) -> Path:
    """Write `model` (in eval mode, on CPU) to `path`, traced on `example`: the task's example
    inputs (a tensor, tuple or dict, data.structure), or one sample's shape (a zero tensor of
    it). Inputs and outputs are named as data.structure names them, each with a dynamic batch
    axis; `dynamic_axes` adds axes by input name (e.g. {"input_ids": {1: "sequence"}}).
    torch's nn.MultiheadAttention is exported in its split form (transforms.mha: the same
    outputs): nn.TransformerEncoder's fused fast path, which an eval-mode trace takes, has no
    ONNX export, and the split form is what head pruning and low rank change.
    A model that cannot be traced or converted raises ExportError, in one line naming the
    module (and operator) where it failed when that can be found."""
    from autocompress.transforms.mha import split_attention

    model = split_attention(model)  # the model itself when it has no nn.MultiheadAttention, else a split copy
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    if isinstance(example, tuple) and all(isinstance(i, int) for i in example):
        example = torch.zeros(1, *example)
    try:
        with eager_attention(model), _quiet_exporter_log():
            _trace(model, example, path, dynamic_axes)
    except Exception as exc:  # noqa: BLE001 - whatever the tracer or a converter raised: one line, with where
        raise ExportError(failure_detail(model, example, exc)) from exc
    finally:
        model.train(was_training)
    _unshare_biases(path)
    return path


@contextmanager
def _quiet_exporter_log() -> Iterator[None]:
    """The TorchScript exporter prints its whole graph to stdout when a conversion fails
    ("Torch IR graph at exception: ..."), whatever `verbose` says; within the block that
    print is dropped (the exception still says what failed)."""
    log = getattr(torch._C, "_jit_onnx_log", None)
    if log is None:
        yield
        return
    torch._C._jit_onnx_log = lambda *args: None
    try:
        yield
    finally:
        torch._C._jit_onnx_log = log


_OPERATOR = re.compile(r"'((?:aten|prim|onnx|quantized)::[A-Za-z0-9_.]+)'")


def failure_detail(model: nn.Module, example: Any, exc: BaseException) -> str:
    """Where and why an export failed, in one line: "in module 'block1.fc' (Linear,
    model.py:31): TypeError: ..." or "in the model's forward (Net): ...". The module is the
    innermost of `model`'s modules whose forward the exception passed through; when the
    failure came after tracing (an operator no ONNX converter handles), the module whose
    forward calls that operator, found by one forward pass on `example`."""
    names = {id(m): n for n, m in model.named_modules()}
    module, line = _raising_module(exc, names)
    if module is None:
        match = next((m for m in (_OPERATOR.search(str(e)) for e in _chain(exc)) if m), None)
        if match is not None:
            module, line = _calling_module(model, example, match.group(1), names)
    if module is None:
        return one_line(exc)
    name = names[id(module)]
    where = f"in module {name!r}" if name else "in the model's forward"
    return f"{where} ({type(module).__name__}{', ' + line if line else ''}): {one_line(exc)}"


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it was raised from or while handling, outermost first."""
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _raising_module(exc: BaseException, names: dict[int, str]) -> tuple[Optional[nn.Module], str]:
    """(the innermost module of `names` whose forward `exc` passed through, 'file.py:line'
    in that forward), or (None, '')."""
    found: tuple[Optional[nn.Module], str] = (None, "")
    for e in reversed(_chain(exc)):
        for frame, lineno in traceback.walk_tb(e.__traceback__):
            owner = frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names:
                found = (owner, f"{Path(frame.f_code.co_filename).name}:{lineno}")
        if found[0] is not None:
            return found
    return found


def _calling_module(model: nn.Module, example: Any, operator: str, names: dict[int, str]) -> tuple[Optional[nn.Module], str]:
    """(the innermost module whose forward first calls `operator` ('aten::fft_fft': a torch
    function or tensor method of that name) in one forward pass on `example`, 'file.py:line'
    of the call), or (None, '')."""
    from torch.overrides import TorchFunctionMode

    wanted = operator.partition("::")[2].split(".")[0].lstrip("_")
    stack: list[nn.Module] = []
    found: list[tuple[nn.Module, str]] = []

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if not found and stack and getattr(func, "__name__", "").lstrip("_") == wanted:
                torch_dir = str(Path(torch.__file__).parent)
                caller = next((f for f in reversed(traceback.extract_stack()[:-1]) if not f.filename.startswith(torch_dir)), None)
                found.append((stack[-1], f"{Path(caller.filename).name}:{caller.lineno}" if caller else ""))
            return func(*args, **(kwargs or {}))

    def enter(mod: nn.Module, args: Any) -> None:
        stack.append(mod)

    def leave(mod: nn.Module, args: Any, out: Any) -> None:
        stack.pop()

    handles = []
    for m in model.modules():
        handles += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave, always_call=True)]
    try:
        with torch.no_grad(), Watch():
            st.call(model, example)
    except Exception:  # noqa: BLE001 - only looking: the export's own error is the one reported
        pass
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else (None, "")


def _trace(model: nn.Module, example, path: Path, dynamic_axes: Optional[dict[str, dict[int, str]]]) -> None:
    with torch.no_grad():
        out = st.call(model, example)
        out_names = [n for n, _ in st.output_fields(out)]
    plain = isinstance(example, torch.Tensor) and isinstance(out, torch.Tensor)  # traced as it is (names as ever)
    names = st.input_names(example)
    axes = {n: {0: "batch", **(dynamic_axes or {}).get(n, {})} for n in names}
    axes.update({n: {0: "batch"} for n in out_names})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model if plain else st.Flat(model, example),
            tuple(st.tensors(example)),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=names,
            output_names=out_names,
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def _setting_attr(cfg: Any) -> str:
    """Where a config keeps its attention setting: a transformers config in
    `_attn_implementation_internal` (behind a property that also sets its sub-configs),
    anything else in `_attn_implementation` itself."""
    return "_attn_implementation_internal" if hasattr(cfg, "_attn_implementation_internal") else "_attn_implementation"


def _attention_configs(configs) -> dict[int, tuple[Any, Any]]:
    """{id: (config, its attention setting)} of `configs` that have an attention setting
    (`_attn_implementation`), and of their sub-configs."""
    found: dict[int, tuple[Any, Any]] = {}
    todo = list(configs)
    while todo:
        cfg = todo.pop()
        if cfg is None or id(cfg) in found or not hasattr(cfg, "_attn_implementation"):
            continue
        found[id(cfg)] = (cfg, getattr(cfg, _setting_attr(cfg)))
        todo += [getattr(cfg, key, None) for key in (getattr(cfg, "sub_configs", None) or {})]
    return found


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, the model's Hugging Face attention runs in its eager form (matmul,
    softmax, matmul: what ONNX Runtime's transformer optimizer fuses); every config's setting
    is restored on exit, also on error. A PreTrainedModel (anything with
    `set_attn_implementation`) is switched through that method, which checks that the model
    can switch and sets its sub-models' configs (one that cannot is left as it is); a config
    that only other modules hold (`module.config._attn_implementation`) is set directly.
    A model without such configs is left alone."""
    saved = _attention_configs(getattr(m, "config", None) for m in model.modules())
    if not saved:
        yield model
        return
    try:
        switchable = [m for m in model.modules() if callable(getattr(m, "set_attn_implementation", None))]
        inner = {id(sub) for m in switchable for sub in m.modules() if sub is not m}
        for m in switchable:
            if id(m) not in inner:  # the outermost ones: each dispatches to what it holds
                m.set_attn_implementation("eager")
        owned = _attention_configs(getattr(m, "config", None) for m in switchable)
        for key, (cfg, _) in saved.items():
            if key not in owned:
                cfg._attn_implementation = "eager"
        yield model
    finally:
        for cfg, value in saved.values():
            setattr(cfg, _setting_attr(cfg), value)


def _unshare_biases(path: Path) -> None:
    """The exporter writes identical constants once and aliases the others through Identity
    nodes; two convolutions whose folded biases are equal (freshly initialised BatchNorms)
    then take their bias from an Identity, which ORT's QOperator quantizer cannot read (it
    looks for an initializer). Give each such bias its own initializer (a few floats); the
    file is rewritten only when there is one."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    bias_inputs = {n.input[2] for n in graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2}
    outputs = {o.name for o in graph.output}
    aliases = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in inits and n.output[0] in bias_inputs and n.output[0] not in outputs]
    if not aliases:
        return
    for node in aliases:
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[node.input[0]])
        copy.name = node.output[0]
        graph.initializer.append(copy)
        graph.node.remove(node)
    onnx.save(proto, str(path))


def model_size_bytes(path: str | Path) -> int:
    """All bytes of an ONNX model: the file plus any external-data files it references."""
    import onnx

    path = Path(path)
    total = path.stat().st_size
    proto = onnx.load(str(path), load_external_data=False)
    locations = set()
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    for loc in locations:
        total += (path.parent / loc).stat().st_size
    return total
