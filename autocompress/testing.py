"""The conformance suite every registered technique passes, for this package's tests and
for anyone who registers a technique of their own:

    from autocompress.testing import conformance_cases, check_technique
    for technique, cfg in conformance_cases():
        check_technique(technique, cfg, tmp_path)

On a small residual CNN (the demo's architecture, narrow; a technique whose `conformance`
is "stack" gets a small residual stack of Linear blocks in a ModuleList instead, and one
whose `conformance` is "transformer" a small encoder of attention + MLP layers) and a batch
of inputs, whatever the stage: the input model (and the teacher, and an input ONNX file) is untouched, the
output shape is kept, the result exports to ONNX and ONNX Runtime runs it. Model and
fine-tune techniques must also give the same outputs in ONNX Runtime as in torch; a
fine-tune technique is run for a few steps through the pipeline's fine-tune (its
TrainPlan, wrappers included, then baked)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from autocompress.techniques import Technique, techniques

INPUT_SHAPE = (1, 16, 16)
CLASSES = 10


class _Residual(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc = torch.nn.Linear(width, width)

    def forward(self, h: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return h + torch.relu(self.fc(h))


class StackedMLP(torch.nn.Module):
    """A repeated stack as a transformer holds one: a ModuleList of like residual blocks,
    each called with the hidden states and more (layer dropping's conformance model)."""

    def __init__(self, width: int = 32, depth: int = 4):
        super().__init__()
        self.embed = torch.nn.Linear(int(np.prod(INPUT_SHAPE)), width)
        self.blocks = torch.nn.ModuleList([_Residual(width) for _ in range(depth)])
        self.head = torch.nn.Linear(width, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.flatten(1))
        for block in self.blocks:
            h = block(h, None, scale=1.0)
        return self.head(h)


class _SelfAttention(torch.nn.Module):
    """Multi-head self-attention as libraries write it: q/k/v Linear children, a head
    count and a head size held as numbers, the heads split by a reshape."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.num_heads, self.head_dim = heads, width // heads
        self.q_proj, self.k_proj, self.v_proj = (torch.nn.Linear(width, width) for _ in range(3))
        self.out_proj = torch.nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, _ = h.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(h)), heads(self.k_proj(h)), heads(self.v_proj(h))
        att = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5, dim=-1)
        return self.out_proj((att @ v).transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class _EncoderLayer(torch.nn.Module):
    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.attention = _SelfAttention(width, heads)
        self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.fc1, self.fc2 = torch.nn.Linear(width, hidden), torch.nn.Linear(hidden, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.norm1(h + self.attention(h))
        return self.norm2(h + self.fc2(torch.nn.functional.gelu(self.fc1(h))))


class TinyEncoder(torch.nn.Module):
    """A transformer encoder classifier on the conformance inputs: each of the 16 image rows
    a token of 16 values, `depth` layers of multi-head self-attention and an MLP (the
    conformance model of head, MLP-width and MatMul techniques)."""

    def __init__(self, width: int = 32, heads: int = 4, hidden: int = 64, depth: int = 2):
        super().__init__()
        self.embed = torch.nn.Linear(INPUT_SHAPE[-1], width)
        self.layers = torch.nn.ModuleList([_EncoderLayer(width, heads, hidden) for _ in range(depth)])
        self.head = torch.nn.Linear(width, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.flatten(1, -2))  # (batch, rows, 16)
        for layer in self.layers:
            h = layer(h)
        return self.head(h.mean(dim=1))


def conformance_model(kind: str = "cnn") -> tuple[torch.nn.Module, torch.Tensor]:
    """(a narrow DigitsResNet in eval mode with non-trivial BatchNorm statistics, 64 inputs);
    kind "stack": a StackedMLP instead; "transformer": a TinyEncoder."""
    from autocompress.tasks.demo import DigitsResNet

    kinds = {"cnn": lambda: DigitsResNet(widths=(16, 32, 64)), "stack": StackedMLP, "transformer": TinyEncoder}
    if kind not in kinds:
        raise ValueError(f"conformance model must be one of {sorted(kinds)}, got {kind!r}")
    torch.manual_seed(0)
    model = kinds[kind]().eval()
    x = torch.randn(64, *INPUT_SHAPE)
    with torch.no_grad():
        model.train()(x)
    return model.eval(), x


def conformance_cases() -> Iterator[tuple[Technique, Any]]:
    """(technique, example) for every registered technique and each of its `examples()`:
    a config, or (config, {other technique: its config})."""
    for t in techniques():
        for example in t.examples():
            yield t, example


def _split(example: Any) -> tuple[Any, dict[str, Any]]:
    if isinstance(example, tuple) and len(example) == 2 and isinstance(example[1], dict):
        return example
    return example, {}


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model: torch.nn.Module, snapshot: dict[str, torch.Tensor], what: str) -> None:
    now = model.state_dict()
    assert list(now) == list(snapshot), f"{what}: its parameters and buffers changed"
    for k, v in snapshot.items():
        assert now[k].shape == v.shape and now[k].dtype == v.dtype and now[k].equal(v), f"{what}: {k} changed"


def _ort_outputs(path: Path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def check_technique(t: Technique, example: Any, tmp_path: Path) -> None:
    """Run one conformance case; AssertionError says what broke."""
    from autocompress.config import CandidateConfig
    from autocompress.export import GraphContext, export_onnx
    from autocompress.transforms import TransformContext

    model, x = conformance_model(t.conformance)
    teacher = copy.deepcopy(model)
    before, teacher_before = _snapshot(model), _snapshot(teacher)
    modules_before = [type(m) for m in model.modules()]
    cfg, others = _split(example)
    candidate = CandidateConfig(**{**others, t.name: cfg})
    ctx = TransformContext(example_input=x[:2], calibration=x, batch_size=16, candidate=candidate, teacher=teacher, train_x=x, seed=0)
    tmp_path = Path(tmp_path)
    if t.stage == "graph":
        src = export_onnx(model, INPUT_SHAPE, tmp_path / "in.onnx")
        src_bytes = src.read_bytes()
        out_path = t.apply(src, cfg, GraphContext(calibration=x.numpy(), input_shape=INPUT_SHAPE, dst=tmp_path / "out.onnx",
                                                                    model=model)) \
            if t.is_active(cfg) else src
        assert src.read_bytes() == src_bytes, f"{t.name}: the input ONNX file changed"
        got = _ort_outputs(Path(out_path), x[:8])
        assert got.shape == (8, CLASSES) and np.isfinite(got).all(), f"{t.name}: ONNX Runtime gave {got.shape} or non-finite outputs"
        return
    if t.stage == "model":
        out = t.apply(copy.deepcopy(model), cfg, ctx)
    else:  # finetune: the plan the technique sets up, run for its steps (at most 5) the way the pipeline runs it
        from autocompress.data.split import TensorSplit
        from autocompress.training import distill_, teacher_logits
        from autocompress.training.plan import TrainPlan

        plan = t.apply(TrainPlan(), cfg, ctx)
        assert isinstance(plan, TrainPlan), f"{t.name}: a fine-tune technique returns the TrainPlan"
        out = copy.deepcopy(model)
        handles = [w.begin(out, ctx.example_input) for w in plan.wrappers]
        y = torch.randint(0, CLASSES, (len(x),), generator=torch.Generator().manual_seed(0))
        steps = min(max(plan.steps, 3), 5)  # a few steps even where the plan has none, so its loss runs
        train = TensorSplit(x, y, "train")
        distill_(out, train, teacher_logits(teacher, train), TrainPlan(steps=steps, lr=plan.lr, batch_size=min(plan.batch_size, 16)),
                 plan, seed=0)
        for h in reversed(handles):
            h.bake_()
    assert out is not model
    _assert_unchanged(model, before, f"{t.name}: the input model")
    _assert_unchanged(teacher, teacher_before, f"{t.name}: the teacher")
    assert [type(m) for m in model.modules()] == modules_before, f"{t.name}: the input model's modules changed"
    with torch.no_grad():
        want = out.eval()(x[:8])
    assert want.shape == (8, CLASSES), f"{t.name}: output shape {tuple(want.shape)}"
    path = export_onnx(out, INPUT_SHAPE, tmp_path / "m.onnx")
    np.testing.assert_allclose(_ort_outputs(path, x[:8]), want.numpy(), rtol=1e-3, atol=1e-4,
                               err_msg=f"{t.name}: ONNX Runtime differs from torch")


__all__ = ["INPUT_SHAPE", "StackedMLP", "TinyEncoder", "check_technique", "conformance_cases", "conformance_model"]
