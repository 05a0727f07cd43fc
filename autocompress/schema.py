"""What a search-space YAML key may hold, and how a value is drawn from a trial. Pure.

A parameter in the YAML is one of
  * a scalar                      -> Fixed: never searched;
  * a list                        -> Choice: categorical;
  * {low, high[, step][, log]}    -> Range: numeric.
`Key` says what one key accepts (type, bounds or allowed values, default); `parse_param`
turns a raw YAML value into a parameter, raising ConfigError that names the key and the
value. `Settings` are the keys that shape a section (one value for the whole model or one
per segment, how many segments, which modules to leave alone) and are not searched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Protocol, Sequence, Union

from autocompress.errors import ConfigError


@dataclass(frozen=True)
class Key:
    """What one key accepts: its type, bounds or allowed values, and its default."""

    kind: type  # float, int, str or bool
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


def values_of(param: Param) -> set[Any]:
    """The values a categorical or fixed parameter can take (empty for a range)."""
    return set(param.values) if isinstance(param, Choice) else {param.value} if isinstance(param, Fixed) else set()


def largest(param: Param) -> Any:
    """The largest value a parameter can take."""
    return max(param.values) if isinstance(param, Choice) else param.high if isinstance(param, Range) else param.value


def parse_param(key: str, raw: Any, spec: Key) -> Param:
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


PER = ("global", "segment")


@dataclass(frozen=True)
class Settings:
    """A section's shape: `per` global (one value of its segmented key for the whole model)
    or segment (one per segment), how many segments, and module names left alone."""

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


def parse_settings(section: str, body: Mapping[str, Any], *, with_exclude: bool) -> Settings:
    per = body.get("per", "global")
    if per not in PER:
        raise ConfigError(f"{section}.per must be one of {list(PER)}, got {per!r}")
    segments = body.get("segments", 4)
    if isinstance(segments, bool) or not isinstance(segments, int) or not 1 <= segments <= 16:
        raise ConfigError(f"{section}.segments must be an integer in [1, 16], got {segments!r}")
    exclude = body.get("exclude", []) if with_exclude else []
    if not isinstance(exclude, list) or not all(isinstance(e, str) and e for e in exclude):
        raise ConfigError(f"{section}.exclude must be a list of module names, got {exclude!r}")
    return Settings(per, segments, tuple(exclude))


class Replay:
    """A TrialLike that answers from recorded params (a trial's, or a hand recipe's)."""

    def __init__(self, params: Mapping[str, Any]):
        self._params = params

    def _get(self, name: str) -> Any:
        if name not in self._params:
            raise ConfigError(f"recorded trial lacks parameter {name!r}")
        return self._params[name]

    def suggest_float(self, name, low, high, *, step=None, log=False):
        return self._get(name)

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return self._get(name)

    def suggest_categorical(self, name, choices):
        return self._get(name)


__all__ = ["Choice", "Fixed", "Key", "PER", "Param", "Range", "Replay", "Settings", "TrialLike", "largest", "parse_param",
           "parse_settings", "values_of"]
