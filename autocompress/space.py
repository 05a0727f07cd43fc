"""Search spaces: YAML in, validated on load, sampled through a small trial protocol.

A parameter in the YAML is one of
  * a scalar                      -> fixed value, never searched;
  * a list                        -> categorical choice;
  * {low, high[, step][, log]}    -> numeric range.
Unknown sections or keys, wrong types and out-of-range values raise ConfigError naming the
key and the value.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Sequence, Union

from autocompress.config import (
    BlockConfig,
    CandidateConfig,
    DistillConfig,
    FinetuneConfig,
    LowRankConfig,
    PruneConfig,
    QuantizeConfig,
)
from autocompress.errors import ConfigError

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class _Spec:
    """What one key accepts: its type, bounds or allowed values, and its default."""

    kind: type  # float, int or str
    default: Any
    low: Optional[float] = None
    high: Optional[float] = None
    allowed: Optional[tuple[str, ...]] = None
    low_open: bool = False  # value must be strictly greater than low

    def check(self, key: str, value: Any) -> Any:
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{key} must be true or false, got {value!r}")
            return value
        if self.kind is str:
            if not isinstance(value, str) or value not in (self.allowed or ()):
                raise ConfigError(f"{key} must be one of {list(self.allowed or ())}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if self.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"{key} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be finite, got {value!r}")
        lo_bad = value <= self.low if self.low_open else value < self.low
        if (self.low is not None and lo_bad) or (self.high is not None and value > self.high):
            bracket = "(" if self.low_open else "["
            raise ConfigError(f"{key} must be in {bracket}{self.low:g}, {self.high:g}], got {value!r}")
        return value


SCHEMA: dict[str, dict[str, _Spec]] = {
    "prune": {
        "ratio": _Spec(float, 0.0, 0.0, 0.95),
        "criterion": _Spec(str, "l1", allowed=("l1", "l2", "act_mean", "act_zero")),
        "round_to": _Spec(int, 1, 1, 256),  # 1: any channel count
    },
    "lowrank": {"rank_ratio": _Spec(float, 1.0, 0.0, 1.0, low_open=True)},  # 1: leave layers as they are
    "finetune": {
        "steps": _Spec(int, 0, 0, 100_000),
        "lr": _Spec(float, 1e-3, 0.0, 1.0, low_open=True),
        "batch_size": _Spec(int, 64, 1, 4096),
        "qat": _Spec(bool, False),  # quantization-aware fine-tune (when something is quantized)
    },
    "distill": {
        "alpha": _Spec(float, 0.5, 0.0, 1.0),
        "temperature": _Spec(float, 4.0, 0.0, 100.0, low_open=True),
    },
    "quantize": {
        "mode": _Spec(str, "fp32", allowed=("fp32", "int8", "int4")),  # weight bit width
        "activations": _Spec(str, "uint8", allowed=("int8", "uint8")),
        "format": _Spec(str, "qoperator", allowed=("qdq", "qoperator")),
        "calibration": _Spec(str, "minmax", allowed=("minmax", "entropy", "percentile")),
    },
}

# Settings shape the space but are not searched: whether a section's main parameter is one
# value for the whole model or one per segment, how many segments, which modules to leave
# alone. Each section's per-segment parameter:
SEGMENTED = {"prune": "ratio", "lowrank": "rank_ratio", "quantize": "mode"}
_PER = ("global", "segment")


@dataclass(frozen=True)
class Settings:
    per: str = "global"
    segments: int = 4
    exclude: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        """Number of values of the section's segmented parameter."""
        return self.segments if self.per == "segment" else 1

    def to_yaml(self, *, with_exclude: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"per": self.per, "segments": self.segments}
        if with_exclude:
            out["exclude"] = list(self.exclude)
        return out


_BLOCK_NAME = re.compile(r"keep|skip|shuffle_v2|mbconv_e[1-9][0-9]*_k[1-9][0-9]*|dwsep_k[1-9][0-9]*")


def _parse_settings(section: str, body: Mapping[str, Any]) -> Settings:
    per = body.get("per", "global")
    if per not in _PER:
        raise ConfigError(f"{section}.per must be one of {list(_PER)}, got {per!r}")
    segments = body.get("segments", 4)
    if isinstance(segments, bool) or not isinstance(segments, int) or not 1 <= segments <= 16:
        raise ConfigError(f"{section}.segments must be an integer in [1, 16], got {segments!r}")
    exclude = body.get("exclude", [])
    if section == "quantize" and "exclude" in body:
        raise ConfigError(f"unknown key quantize.exclude; allowed: {sorted([*SCHEMA['quantize'], 'per', 'segments'])}")
    if not isinstance(exclude, list) or not all(isinstance(e, str) and e for e in exclude):
        raise ConfigError(f"{section}.exclude must be a list of module names, got {exclude!r}")
    return Settings(per, segments, tuple(exclude))


# --------------------------------------------------------------------------- parameters


class TrialLike(Protocol):
    """The part of optuna.Trial a space needs; any sampler front-end can provide it."""

    def suggest_float(self, name: str, low: float, high: float, *, step: Optional[float] = None, log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class Fixed:
    value: Any

    def suggest(self, trial: TrialLike, name: str) -> Any:
        return self.value

    def contains(self, value: Any) -> bool:
        return value == self.value

    def to_yaml(self) -> Any:
        return self.value


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]

    def suggest(self, trial: TrialLike, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.values))

    def contains(self, value: Any) -> bool:
        return value in self.values

    def to_yaml(self) -> Any:
        return list(self.values)


@dataclass(frozen=True)
class Range:
    kind: type
    low: float
    high: float
    step: Optional[float] = None
    log: bool = False

    def suggest(self, trial: TrialLike, name: str) -> Any:
        if self.kind is int:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        value = trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)
        return round(value, 10) if self.step else value  # 0.7, not 0.7000000000000001

    def contains(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return False
        if self.step:
            k = (value - self.low) / self.step
            return abs(k - round(k)) < 1e-9
        return True

    def snap(self, value: float) -> float:
        """The nearest value of this range (on its step grid) to `value`."""
        value = min(max(value, self.low), self.high)
        if self.step:
            value = self.low + round((value - self.low) / self.step) * self.step
            value = round(min(value, self.high), 10)
        return int(value) if self.kind is int else value

    def to_yaml(self) -> Any:
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.step:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return out


Param = Union[Fixed, Choice, Range]


def _parse_param(key: str, raw: Any, spec: _Spec) -> Param:
    if isinstance(raw, list):
        if not raw:
            raise ConfigError(f"{key} must list at least one choice, got []")
        values = tuple(spec.check(key, v) for v in raw)
        if len(set(values)) != len(values):
            raise ConfigError(f"{key} lists a choice twice, got {raw!r}")
        return Choice(values) if len(values) > 1 else Fixed(values[0])
    if isinstance(raw, Mapping):
        if spec.kind in (str, bool):
            raise ConfigError(f"{key} takes a value or a list of choices, not a range, got {dict(raw)!r}")
        unknown = set(raw) - {"low", "high", "step", "log"}
        if unknown:
            raise ConfigError(f"{key} has unknown range key(s) {sorted(unknown)}; allowed: low, high, step, log")
        if "low" not in raw or "high" not in raw:
            raise ConfigError(f"{key} range needs both low and high, got {dict(raw)!r}")
        low, high = spec.check(f"{key}.low", raw["low"]), spec.check(f"{key}.high", raw["high"])
        if low > high:
            raise ConfigError(f"{key}.low must be <= {key}.high, got low={low!r} high={high!r}")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(f"{key}.log must be true or false, got {log!r}")
        step = raw.get("step")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
                raise ConfigError(f"{key}.step must be a positive number, got {step!r}")
            if spec.kind is int and not float(step).is_integer():
                raise ConfigError(f"{key}.step must be an integer, got {step!r}")
            if log:
                raise ConfigError(f"{key} cannot have both step and log, got {dict(raw)!r}")
        if log and low <= 0:
            raise ConfigError(f"{key}.low must be > 0 for a log range, got {low!r}")
        if low == high:
            return Fixed(low)
        return Range(spec.kind, low, high, float(step) if step is not None else None, log)
    return Fixed(spec.check(key, raw))


WARMUP_PARAM = "blocks.warmup"  # the trial parameter of blocks.warmup (so no target may be named 'warmup')
_WARMUP_SPEC = _Spec(int, 0, 0, 100_000)


@dataclass(frozen=True)
class BlockSpec:
    """The `blocks` section: which modules may be replaced ('auto' or module paths), by
    which library blocks ('keep' = the original), and how many steps of block-wise feature
    distillation ('warmup') the new blocks get before anything else (0 = none)."""

    targets: Any  # "auto" or tuple of module paths
    choices: tuple[str, ...]
    warmup: Param = Fixed(0)

    def to_yaml(self) -> dict[str, Any]:
        out = {"targets": self.targets if self.targets == "auto" else list(self.targets), "choices": list(self.choices)}
        if self.warmup != Fixed(0):  # absent = 0, so older runs keep their fingerprint
            out["warmup"] = self.warmup.to_yaml()
        return out


def _parse_blocks(body: Any) -> Optional[BlockSpec]:
    if body is None:
        return None
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
        if not _BLOCK_NAME.fullmatch(c):
            raise ConfigError(f"blocks.choices: unknown block {c!r}; valid: keep, skip, shuffle_v2, mbconv_e<E>_k<K>, dwsep_k<K>")
    if len(set(choices)) != len(choices):
        raise ConfigError(f"blocks.choices lists a block twice, got {choices!r}")
    warmup = _parse_param(WARMUP_PARAM, body["warmup"], _WARMUP_SPEC) if "warmup" in body else Fixed(0)
    return BlockSpec(targets if targets == "auto" else tuple(targets), tuple(choices), warmup)


# --------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space: one Param per dotted key ('prune.ratio', ...)."""

    params: dict[str, Param]
    source: str = "<dict>"
    settings: dict[str, Settings] = field(default_factory=dict)
    blocks: Optional["BlockSpec"] = None
    # per target: the block choices that can produce its shapes (set by bind_blocks)
    block_choices: tuple[tuple[str, tuple[str, ...]], ...] = ()

    # ---- loading
    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> "SearchSpace":
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"search space must be a mapping of sections, got {type(data).__name__} ({source})")
        unknown = set(data) - set(SCHEMA) - {"blocks"}
        if unknown:
            raise ConfigError(
                f"unknown search-space section {sorted(unknown)[0]!r}; allowed: {sorted([*SCHEMA, 'blocks'])} ({source})"
            )
        try:
            blocks = _parse_blocks(data.get("blocks"))
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({source})") from None
        params: dict[str, Param] = {}
        settings: dict[str, Settings] = {}
        for section, specs in SCHEMA.items():
            body = data.get(section)
            if body is None:
                body = {}
            if not isinstance(body, Mapping):
                raise ConfigError(f"{section} must be a mapping, got {body!r} ({source})")
            setting_keys = {"per", "segments"} | ({"exclude"} if section in ("prune", "lowrank") else set())
            allowed = set(specs) | (setting_keys if section in SEGMENTED else set())
            unknown = set(body) - allowed
            if unknown:
                bad = sorted(unknown)[0]
                raise ConfigError(f"unknown key {section}.{bad}; allowed: {sorted(allowed)} ({source})")
            try:
                if section in SEGMENTED:
                    settings[section] = _parse_settings(section, body)
                for key, spec in specs.items():
                    name = f"{section}.{key}"
                    params[name] = _parse_param(name, body[key], spec) if key in body else Fixed(spec.default)
            except ConfigError as exc:
                raise ConfigError(f"{exc} ({source})") from None
        space = cls(params, source, settings, blocks)
        space._check_combinations()
        return space

    def _check_combinations(self) -> None:
        bits, fmt = self.params["quantize.mode"], self.params["quantize.format"]
        if _values(bits) & {"int4"} and "qdq" not in _values(fmt):
            raise ConfigError(
                f"quantize.mode allows int4, whose 4-bit weights need quantize.format qdq, but format allows only "
                f"{sorted(_values(fmt))} ({self.source})"
            )

    def values_of(self, name: str) -> set[Any]:
        """The values a categorical or fixed parameter can take (empty for a range)."""
        return _values(self.params[name])

    def settings_for(self, section: str) -> Settings:
        return self.settings.get(section, Settings())

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, param in self.params.items():
            section, key = name.split(".")
            out.setdefault(section, {})[key] = param.to_yaml()
        for section, st in self.settings.items():
            out[section].update(st.to_yaml(with_exclude=section != "quantize"))
        if self.blocks is not None:
            out["blocks"] = self.blocks.to_yaml()
        return out

    def bind_blocks(self, block_choices: Sequence[tuple[str, Sequence[str]]]) -> "SearchSpace":
        """This space with concrete block targets and the choices each can take (the
        search binds them from the model; see search.bind_space)."""
        from dataclasses import replace

        return replace(self, block_choices=tuple((t, tuple(c)) for t, c in block_choices))

    def with_fixed(self, name: str, value: Any) -> "SearchSpace":
        """This space with parameter `name` fixed to `value` (e.g. finetune.steps when the
        fine-tune length is the multi-fidelity budget instead of a searched parameter)."""
        from dataclasses import replace

        if name not in self.params:
            raise KeyError(name)
        return replace(self, params={**self.params, name: Fixed(value)})

    @property
    def fingerprint(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    # ---- sampling
    def suggest(self, trial: TrialLike) -> CandidateConfig:
        """Sample one candidate; parameters that do not matter for it are not sampled
        (distillation without fine-tune steps, int8 options for fp32)."""
        p = self.params

        def get(name: str) -> Any:
            return p[name].suggest(trial, name)

        def get_segmented(section: str) -> tuple[Any, Optional[tuple[Any, ...]]]:
            """(global value, None) or (None-like default, one value per segment)."""
            name = f"{section}.{SEGMENTED[section]}"
            st = self.settings_for(section)
            if st.per == "global":
                return get(name), None
            return None, tuple(p[name].suggest(trial, f"{name}.{i}") for i in range(st.n))

        ratio, seg = get_segmented("prune")
        ps = self.settings_for("prune")
        prune = PruneConfig(ratio=float(ratio or 0.0), segment_ratios=tuple(map(float, seg)) if seg else None, exclude=ps.exclude)
        if prune.active:
            round_to = int(get("prune.round_to"))
            prune = PruneConfig(prune.ratio, prune.segment_ratios, get("prune.criterion"), round_to if round_to > 1 else None, ps.exclude)
        else:
            prune = PruneConfig(exclude=ps.exclude)
        rank, seg = get_segmented("lowrank")
        lowrank = LowRankConfig(
            rank_ratio=float(rank if rank is not None else 1.0),
            segment_ratios=tuple(map(float, seg)) if seg else None,
            exclude=self.settings_for("lowrank").exclude,
        )
        if not lowrank.active:
            lowrank = LowRankConfig(exclude=lowrank.exclude)
        mode, bits = get_segmented("quantize")
        quantize = QuantizeConfig(mode=mode or "fp32", segment_bits=bits)
        if quantize.active:
            used = set(bits or (mode,))
            fmt = "qdq" if "int4" in used else get("quantize.format")
            quantize = QuantizeConfig(
                mode=quantize.mode, activations=get("quantize.activations"), format=fmt,
                calibration=get("quantize.calibration"), segment_bits=bits,
            )
        else:
            quantize = QuantizeConfig()
        finetune = FinetuneConfig(steps=int(get("finetune.steps")), lr=0.0, batch_size=0)
        distill = None
        if finetune.steps > 0:
            finetune = FinetuneConfig(
                steps=finetune.steps, lr=float(get("finetune.lr")), batch_size=int(get("finetune.batch_size")),
                qat=bool(get("finetune.qat")) if quantize.active else False,
            )
            distill = DistillConfig(alpha=float(get("distill.alpha")), temperature=float(get("distill.temperature")))
        chosen = []
        for target, choices in self.block_choices:
            name = trial.suggest_categorical(f"blocks.{target}", list(choices)) if len(choices) > 1 else choices[0]
            if name != "keep":
                chosen.append((target, name))
        warmup = 0
        if self.blocks is not None and any(name != "skip" for _, name in chosen):  # skip has nothing to train
            warmup = int(self.blocks.warmup.suggest(trial, WARMUP_PARAM))
        blocks = BlockConfig(tuple(chosen), warmup)
        return CandidateConfig(prune=prune, lowrank=lowrank, finetune=finetune, distill=distill, quantize=quantize, blocks=blocks)

    def config_from_params(self, params: Mapping[str, Any]) -> CandidateConfig:
        """Rebuild a candidate from a trial's recorded params (fixed values filled in)."""
        return self.suggest(_Replay(params))

    def searched(self) -> list[str]:
        """Names of the parameters that are actually searched (not fixed)."""
        return [n for n, prm in self.params.items() if not isinstance(prm, Fixed)]

    def recipe(self, wanted: Mapping[str, Any]) -> Optional[dict[str, Any]]:
        """Fit a hand recipe into the space: ranges snap to their grid, a value a choice or
        a fixed parameter does not allow drops the whole recipe (returns None)."""
        out: dict[str, Any] = {}
        for name, value in wanted.items():
            param = self.params[name]
            if isinstance(param, Range):
                snapped = param.snap(value)
                if name == "prune.ratio" and value == 0 and snapped != 0:
                    return None
                out[name] = snapped
            elif isinstance(param, Choice):
                options = value if isinstance(value, (list, tuple)) else [value]
                hit = next((v for v in options if param.contains(v)), None)
                if hit is None:
                    return None
                out[name] = hit
            else:  # Fixed: fine unless it contradicts what defines the recipe
                options = value if isinstance(value, (list, tuple)) else [value]
                if param.value not in options and name in _RECIPE_DEFINING:
                    return None
        for section, key in SEGMENTED.items():  # one value for every segment
            name = f"{section}.{key}"
            if name in out and self.settings_for(section).per == "segment":
                value = out.pop(name)
                out.update({f"{name}.{i}": value for i in range(self.settings_for(section).n)})
        return out


_RECIPE_DEFINING = {"prune.ratio", "finetune.steps", "quantize.mode"}


def _values(param: Param) -> set[Any]:
    """The values a categorical or fixed parameter can take."""
    return set(param.values) if isinstance(param, Choice) else {param.value} if isinstance(param, Fixed) else set()


class _Replay:
    """A TrialLike that answers from recorded params."""

    def __init__(self, params: Mapping[str, Any]):
        self._params = params

    def _get(self, name: str) -> Any:
        if name not in self._params:
            raise ConfigError(f"recorded trial lacks parameter {name!r}")
        return self._params[name]

    def suggest_float(self, name, low, high, *, step=None, log=False):  # noqa: D401
        return self._get(name)

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return self._get(name)

    def suggest_categorical(self, name, choices):
        return self._get(name)


def resolve_space_path(name_or_path: str) -> Path:
    """A built-in space name ('default') or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"--space: {name_or_path!r} is not a file" if candidate.exists() else f"--space: no such file {name_or_path!r}")
        return candidate
    builtin = SPACES_DIR / f"{name_or_path}.yaml"
    if not builtin.is_file():
        names = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
        raise ConfigError(f"--space: unknown search space {name_or_path!r}; built-in: {names}, or give a .yaml path")
    return builtin


def load_space(name_or_path: str = "default") -> SearchSpace:
    import yaml

    path = resolve_space_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"search space {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return SearchSpace.from_dict(data, source=str(path))
