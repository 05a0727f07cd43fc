"""layers: dropping whole layers of a repeated stack (transforms.layers): a transformer's
`encoder.layer`, any ModuleList of like blocks. Each layer but a stack's first is a yes/no
choice of the search; a dropped layer becomes a pass-through, and the distillation
fine-tune recovers what the rest can. Stacks are found when the space is bound (`stacks:
auto`, or named), each droppable layer tried on a copy of the model: one whose removal
breaks the model's own forward is kept, with the reason. A model without a repeated stack
(the convolutional demo) has nothing to sample. Without a `layers` section nothing is
dropped."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as _replace
from typing import Any, Mapping

from autocompress.errors import ConfigError
from autocompress.techniques._registry import Move, Spec, Technique, register_technique


@dataclass(frozen=True)
class LayerDropConfig:
    """Layers removed from repeated stacks, by qualified name ('bert.encoder.layer.3'),
    each replaced by a pass-through that returns the hidden states it is given."""

    drop: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.drop)


@dataclass(frozen=True)
class LayerSpec:
    """The `layers` section: which stacks ('auto' or ModuleList paths); `bound`: per stack
    found in the model, the indices of the layers that may be dropped (set when bound)."""

    stacks: Any  # "auto" or a tuple of module paths
    bound: tuple[tuple[str, tuple[int, ...]], ...] = ()


def _param(path: str, index: int) -> str:
    return f"layers.{path}.{index}"


def _by_stack(drop: tuple[str, ...]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for name in drop:
        path, _, index = name.rpartition(".")
        out.setdefault(path, []).append(int(index))
    return out


@register_technique("layers", stage="model", order=15)
class Layers(Technique):
    Config = LayerDropConfig
    off = LayerDropConfig()
    conformance = "stack"

    def parse(self, body: Any, source: str) -> Spec:
        if body is None:
            return Spec(self.name)
        if not isinstance(body, Mapping):
            raise ConfigError(f"layers must be a mapping, got {body!r} ({source})")
        unknown = set(body) - {"stacks"}
        if unknown:
            raise ConfigError(f"unknown key layers.{sorted(unknown)[0]}; allowed: ['stacks'] ({source})")
        stacks = body.get("stacks", "auto")
        if stacks != "auto" and (not isinstance(stacks, list) or not stacks or not all(isinstance(s, str) and s for s in stacks)):
            raise ConfigError(f"layers.stacks must be 'auto' or a list of module names, got {stacks!r} ({source})")
        return Spec(self.name, extra=LayerSpec(stacks if stacks == "auto" else tuple(stacks)))

    def to_yaml(self, spec: Spec):
        b = spec.extra
        if b is None:
            return None
        return {"stacks": b.stacks if b.stacks == "auto" else list(b.stacks)}

    def bind(self, spec: Spec, model: Any, example_input: Any) -> tuple[Spec, list[str]]:
        """Find the stacks ('auto': every repeated stack not inside another; or the named
        ones, which must be repeated stacks) and keep, per stack, the layers whose removal
        the model's forward survives; say which were kept and why."""
        b = spec.extra
        if b is None:
            return spec, []
        from autocompress.transforms.layers import drop_error, layer_stacks

        found = layer_stacks(model)
        if b.stacks == "auto":
            stacks = [s for s in found if not any(s.path.startswith(o.path + ".") for o in found)]
        else:
            by_path = {s.path: s for s in found}
            missing = [p for p in b.stacks if p not in by_path]
            if missing:
                raise ConfigError(f"layers.stacks names {missing[0]!r}, which is not a repeated stack of the model; "
                                  f"found: {[s.path for s in found]}")
            stacks = [by_path[p] for p in b.stacks]
        bound, notes = [], []
        for s in stacks:
            ok = []
            for i in range(1, s.size):  # the first layer stays: a stack is never dropped whole
                why = drop_error(model, example_input, {s.path: [i]})
                if why is None:
                    ok.append(i)
                else:
                    notes.append(f"layers: {s.path}.{i} is kept (the model's forward fails without it: {why})")
            if ok:
                bound.append((s.path, tuple(ok)))
        if bound:
            notes.insert(0, "layers: stacks " + ", ".join(f"{p} ({len(i)} droppable)" for p, i in bound))
        else:
            notes.append("layers: no repeated stack of layers found (stacks: auto); layer dropping is not searched")
        return _replace(spec, extra=_replace(b, bound=tuple(bound))), notes

    def recipe_off(self, spec: Spec) -> dict[str, Any]:
        """Hand recipes keep every layer."""
        b = spec.extra
        return {} if b is None else {f"{p}.{i}": False for p, idx in b.bound for i in idx}  # keys within the section

    def suggest(self, trial, spec: Spec, chosen: Mapping[str, Any]) -> LayerDropConfig:
        b = spec.extra
        drop = [f"{p}.{i}" for p, idx in (b.bound if b is not None else ()) for i in idx
                if trial.suggest_categorical(_param(p, i), [False, True])]
        return LayerDropConfig(tuple(drop))

    def label(self, cfg: LayerDropConfig, candidate) -> str:
        return " · ".join(f"drop {p.rsplit('.', 1)[-1]}[{' '.join(map(str, idx))}]" for p, idx in _by_stack(cfg.drop).items())

    def code(self, cfg: LayerDropConfig, candidate) -> str:
        """'L-3,5': the layers dropped; from several stacks 'L-layer:3,5/h:1' (each stack's last name)."""
        stacks = _by_stack(cfg.drop)
        if len(stacks) == 1:
            return "L-" + ",".join(map(str, next(iter(stacks.values()))))
        return ("L-" + "/".join(f"{p.rsplit('.', 1)[-1]}:{','.join(map(str, idx))}" for p, idx in stacks.items())) if stacks else ""

    def explain(self, cfg: LayerDropConfig, candidate) -> str:
        return ", ".join(f"layers {', '.join(map(str, idx))} of {p} dropped" for p, idx in _by_stack(cfg.drop).items())

    def apply(self, model, cfg: LayerDropConfig, ctx):
        if not cfg.active:
            return model
        from autocompress.transforms.layers import drop_layers

        return drop_layers(model, _by_stack(cfg.drop))

    def stronger(self, spec: Spec, params: Mapping[str, Any], *, scale: float = 1.0) -> list[Move]:
        """The last kept droppable layer of every stack at once, then each kept layer alone
        (no finer step)."""
        b = spec.extra
        if b is None or scale < 1:
            return []
        kept = {p: [i for i in idx if not params.get(_param(p, i), False)] for p, idx in b.bound}
        last = {_param(p, idx[-1]): True for p, idx in kept.items() if idx}
        if not last:
            return []
        moves = [Move("drop a layer, every stack", last, True)]
        moves += [Move(f"drop {p}.{i}", {_param(p, i): True}, False) for p, idx in kept.items() for i in idx]
        return moves if len(moves) > 2 else moves[:1]

    def examples(self) -> list[LayerDropConfig]:
        """For the conformance suite's stack (blocks.0 ... blocks.3)."""
        return [LayerDropConfig(), LayerDropConfig(("blocks.1",)), LayerDropConfig(("blocks.1", "blocks.3"))]
