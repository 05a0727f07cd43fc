"""blocks: MobileNet / ShuffleNet-style block substitution (transforms.substitute,
transforms.blocks). Replaceable blocks of the model (`targets: auto`, or named) are swapped
for library blocks that keep their input/output shapes; choices that cannot produce a
target's shapes are excluded for it when the space is bound to the model. Optionally the
new blocks get a block-wise feature-distillation warm-up (training.warmup) before anything
else. Without a `blocks` section nothing is substituted."""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import replace as _replace
from typing import Any, Mapping, Optional

from autocompress.errors import ConfigError
from autocompress.names import parse_block
from autocompress.schema import Choice, Fixed, Key, largest, parse_param
from autocompress.techniques._registry import Move, Spec, Technique, register_technique, step

WARMUP_PARAM = "blocks.warmup"  # the trial parameter of blocks.warmup (so no target may be named 'warmup')
_WARMUP = Key(int, 0, 0, 100_000)
# Moves of the structured search, each block one step cheaper in both multiply-adds and
# operators: a residual block -> a depthwise-separable conv (two small convolutions) ->
# nothing. An inverted residual has fewer multiply-adds but more operators than a pruned
# basic block, and on small models the operators dominate latency: left to the sampler.
CHEAPER = ("keep", "dwsep_k3", "skip")
BLOCK_CODES = {"shuffle_v2": "sh", "skip": "sk"}  # the blocks whose code is not made from their name's numbers


def block_code(name: str) -> str:
    """A library block's short code in labels: mbconv_e3_k5 -> mb3k5, dwsep_k3 -> dw3,
    shuffle_v2 -> sh, skip -> sk; any other name as it is."""
    return re.sub(r"^mbconv_e(\d+)_k(\d+)$", r"mb\1k\2", re.sub(r"^dwsep_k", "dw", BLOCK_CODES.get(name, name)))


@dataclass(frozen=True)
class BlockConfig:
    """Block substitution: (module path, block name) pairs, e.g. ('layer2', 'mbconv_e6_k3').
    'keep' (or a path not listed) leaves the original block. Applied first, before pruning.
    warmup_steps: block-wise feature distillation of the new blocks onto the teacher's
    blocks before anything else (training.warmup); 0 = none."""

    choices: tuple[tuple[str, str], ...] = ()
    warmup_steps: int = 0

    @property
    def active(self) -> bool:
        return any(name != "keep" for _, name in self.choices)


@dataclass(frozen=True)
class BlockSpec:
    """The `blocks` section: which modules may be replaced ('auto' or module paths), by which
    library blocks ('keep' = the original); `bound`: per target found in the model, the
    choices that can produce its shapes (set when the space is bound to the model)."""

    targets: Any  # "auto" or tuple of module paths
    choices: tuple[str, ...]
    bound: tuple[tuple[str, tuple[str, ...]], ...] = ()


@register_technique("blocks", stage="model", order=10)
class Blocks(Technique):
    Config = BlockConfig
    off = BlockConfig()
    in_every_id = True
    substages = ("warmup",)

    # ---- the section
    def parse(self, body: Any, source: str) -> Spec:
        if body is None:
            return Spec(self.name, {"warmup": Fixed(0)})
        try:
            if not isinstance(body, Mapping):
                raise ConfigError(f"blocks must be a mapping, got {body!r}")
            unknown = set(body) - {"targets", "choices", "warmup"}
            if unknown:
                raise ConfigError(f"unknown key blocks.{sorted(unknown)[0]}; allowed: ['choices', 'targets', 'warmup']")
            targets = body.get("targets", "auto")
            if targets != "auto" and (not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets)):
                raise ConfigError(f"blocks.targets must be 'auto' or a list of module names, got {targets!r}")
            if isinstance(targets, list) and "warmup" in targets:
                raise ConfigError("blocks.targets: a target may not be named 'warmup' (that name is blocks.warmup's)")
            choices = body.get("choices", ["keep"])
            if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
                raise ConfigError(f"blocks.choices must be a non-empty list of block names, got {choices!r}")
            for c in choices:
                try:
                    parse_block(c)
                except ValueError as exc:
                    raise ConfigError(f"blocks.choices: {exc}") from None
            if len(set(choices)) != len(choices):
                raise ConfigError(f"blocks.choices lists a block twice, got {choices!r}")
            warmup = parse_param(WARMUP_PARAM, body["warmup"], _WARMUP) if "warmup" in body else Fixed(0)
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({source})") from None
        return Spec(self.name, {"warmup": warmup}, extra=BlockSpec(targets if targets == "auto" else tuple(targets), tuple(choices)))

    def to_yaml(self, spec: Spec) -> Optional[dict[str, Any]]:
        b = spec.extra
        if b is None:
            return None
        out = {"targets": b.targets if b.targets == "auto" else list(b.targets), "choices": list(b.choices)}
        if spec.params["warmup"] != Fixed(0):  # absent = 0, so older runs keep their fingerprint
            out["warmup"] = spec.params["warmup"].to_yaml()
        return out

    def bind(self, spec: Spec, model: Any, example_input: Any) -> tuple[Spec, list[str]]:
        """Find the targets in the model ('auto' rule, or named) and keep for each the block
        choices that can produce its shapes; say which were excluded and why."""
        b = spec.extra
        if b is None:
            return spec, []
        from autocompress.transforms.blocks import check_block
        from autocompress.transforms.substitute import breaking_choices, describe_targets, find_targets

        try:
            targets = find_targets(model, example_input) if b.targets == "auto" else describe_targets(model, example_input, b.targets)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        bound, notes = [], []
        broken = breaking_choices(model, example_input, targets, b.choices)
        for t in targets:
            if t.name == "warmup":  # its trial parameter would be blocks.warmup's
                notes.append("blocks: the module 'warmup' is kept (the name is reserved for blocks.warmup)")
                continue
            ok = []
            for name in b.choices:
                why = None if name == "keep" else check_block(name, t.cin, t.cout, t.stride)
                if why is None and (t.name, name) in broken:
                    why = f"the model's forward fails with it: {broken[(t.name, name)]}"
                if why is None:
                    ok.append(name)
                else:
                    notes.append(f"blocks: {name} excluded for {t.name} ({why})")
            if ok:
                bound.append((t.name, tuple(ok)))
            else:
                notes.append(f"blocks: no choice fits {t.name}; it is kept")
        if not targets:
            notes.append("blocks: no replaceable block found (targets: auto); block choices are not searched")
        else:
            notes.insert(0, f"blocks: targets {', '.join(t.name for t in targets)}")
        return _replace(spec, extra=_replace(b, bound=tuple(bound))), notes

    def recipe_off(self, spec: Spec) -> dict[str, Any]:
        """Hand recipes keep the original blocks (where 'keep' is a choice to make)."""
        b = spec.extra
        return {} if b is None else {t: "keep" for t, choices in b.bound if len(choices) > 1 and "keep" in choices}

    # ---- a candidate
    def suggest(self, trial, spec: Spec, chosen: Mapping[str, Any]) -> BlockConfig:
        b = spec.extra
        picked = []
        for target, choices in (b.bound if b is not None else ()):
            name = trial.suggest_categorical(f"blocks.{target}", list(choices)) if len(choices) > 1 else choices[0]
            if name != "keep":
                picked.append((target, name))
        warmup = 0
        if b is not None and any(name != "skip" for _, name in picked):  # skip has nothing to train
            warmup = int(spec.params["warmup"].suggest(trial, WARMUP_PARAM))
        return BlockConfig(tuple(picked), warmup)

    def label(self, cfg: BlockConfig, candidate) -> str:
        parts = [f"{path}={name}" for path, name in cfg.choices if name != "keep"]
        if cfg.active and cfg.warmup_steps > 0:
            parts.append(f"warm-up {cfg.warmup_steps}")
        return " · ".join(parts)

    def code(self, cfg: BlockConfig, candidate) -> str:
        """'b2:mb3k3,3:sk_w100': target:block per substituted target (a path's 'layer2' is
        '2'; block_code: mbconv_e3_k3 'mb3k3', dwsep_k3 'dw3', shuffle_v2 'sh', skip 'sk'), the warm-up."""

        def site(path: str) -> str:
            return ".".join(re.sub(r"^[A-Za-z_]+(?=\d+$)", "", part) for part in path.split("."))

        parts = [f"{site(path)}:{block_code(name)}" for path, name in cfg.choices if name != "keep"]
        return ("b" + ",".join(parts) + (f"_w{cfg.warmup_steps}" if cfg.warmup_steps > 0 else "")) if parts else ""

    def explain(self, cfg: BlockConfig, candidate) -> str:
        parts = [f"{path} replaced by {name}" for path, name in cfg.choices if name != "keep"]
        if parts and cfg.warmup_steps > 0:
            parts.append(f"{cfg.warmup_steps} steps of block-wise warm-up")
        return ", ".join(parts)

    def canonical(self, cfg: BlockConfig) -> BlockConfig:
        return BlockConfig(tuple((str(path), str(name)) for path, name in cfg.choices), int(cfg.warmup_steps))

    def from_dict(self, data: Any) -> BlockConfig:
        data = data or {}
        return self.canonical(BlockConfig(tuple(tuple(c) for c in data.get("choices", ())), data.get("warmup_steps", 0)))

    def apply(self, model, cfg: BlockConfig, ctx):
        if not cfg.active:
            return model
        from autocompress.transforms.substitute import substitute_blocks

        model = substitute_blocks(model, cfg, ctx)
        if cfg.warmup_steps > 0 and ctx.weights and ctx.teacher is not None:
            from autocompress.training.warmup import warmup_blocks_

            with ctx.timed("warmup"):
                new = [path for path, name in cfg.choices if name != "keep"]
                warmup_blocks_(model, ctx.teacher, new, ctx.train_x, cfg.warmup_steps, seed=ctx.seed)
        return model

    def stronger(self, spec: Spec, params: Mapping[str, Any], *, scale: float = 1.0) -> list[Move]:
        """Every target one step along CHEAPER at once, then each target alone (no finer step).
        A move that brings in a new block warms it up with the space's longest warm-up (a
        freshly initialised block needs it: experiments/README.md, block warm-up), when the
        space searches blocks.warmup."""
        b = spec.extra
        if scale < 1:
            return []
        stepped = {}
        for target, choices in (b.bound if b is not None else ()):
            if len(choices) > 1:
                new = step(Choice(tuple(choices)), params.get(f"blocks.{target}", "keep"), up=True, ladder=CHEAPER)
                if new is not None:
                    stepped[f"blocks.{target}"] = new
        if not stepped:
            return []
        warm = spec.params.get("warmup")
        warmup = {} if warm is None or isinstance(warm, Fixed) or params.get(WARMUP_PARAM, 0) else {WARMUP_PARAM: largest(warm)}

        def move(what: str, changes: dict[str, str], whole: bool) -> Move:
            return Move(what, {**changes, **(warmup if any(v != "skip" for v in changes.values()) else {})}, whole)

        moves = [move("cheaper blocks, every target", stepped, True)]
        if len(stepped) > 1:
            moves += [move(f"{name.split('.', 1)[1]} -> {v}", {name: v}, False) for name, v in stepped.items()]
        return moves

    def examples(self) -> list[BlockConfig]:
        """For the demo architecture (layer1: 48 -> 48, layer2: 48 -> 96 at stride 2, ...)."""
        return [BlockConfig(), BlockConfig((("layer1", "skip"), ("layer2", "mbconv_e3_k3"))),
                BlockConfig((("layer1", "shuffle_v2"), ("layer3", "dwsep_k3")), warmup_steps=2)]
