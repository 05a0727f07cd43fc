"""Search spaces: YAML in, validated on load, sampled through a small trial protocol.

The YAML has one section per registered technique (autocompress.techniques); each
technique parses, validates and samples its own section (schema.py has the parameter
forms: a scalar is fixed, a list a choice, {low, high[, step][, log]} a range). Unknown
sections or keys, wrong types and out-of-range values raise ConfigError naming the key and
the value.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from autocompress.config import CandidateConfig
from autocompress.errors import ConfigError
from autocompress.schema import Choice, Fixed, Param, Range, Replay, Settings, TrialLike, largest, values_of
from autocompress.techniques import Spec, technique, techniques

SPACES_DIR = Path(__file__).resolve().parent / "search_spaces"  # package data (top-level search_spaces/ links here)


def schema() -> dict[str, dict[str, Any]]:
    """{section: {key: Key}} of every registered technique with schema-driven keys."""
    return {t.name: dict(t.schema) for t in techniques() if t.schema}


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space: one Spec per registered technique, in sampling order."""

    specs: dict[str, Spec]
    source: str = "<dict>"

    # ---- loading
    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> "SearchSpace":
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"search space must be a mapping of sections, got {type(data).__name__} ({source})")
        names = [t.name for t in techniques()]
        unknown = set(data) - set(names)
        if unknown:
            raise ConfigError(f"unknown search-space section {sorted(unknown)[0]!r}; allowed: {sorted(names)} ({source})")
        specs = {t.name: t.parse(data.get(t.name), source) for t in techniques()}
        for t in techniques():
            try:
                t.check(specs[t.name])
            except ConfigError as exc:
                raise ConfigError(f"{exc} ({source})") from None
        return cls(specs, source)

    def spec(self, name: str) -> Spec:
        """A technique's part of the space (a technique registered after the space was
        loaded gets its section's defaults)."""
        found = self.specs.get(name)
        return found if found is not None else technique(name).parse(None, self.source)

    # ---- reading
    @property
    def params(self) -> dict[str, Param]:
        """Every parameter by its dotted name ('prune.ratio', 'blocks.warmup', ...)."""
        return {s.param_name(key): p for s in self.specs.values() for key, p in s.params.items()}

    def values_of(self, name: str) -> set[Any]:
        """The values a categorical or fixed parameter can take (empty for a range)."""
        return values_of(self.params[name])

    def settings_for(self, section: str) -> Settings:
        found = self.specs.get(section)
        return found.settings if found is not None and found.settings is not None else Settings()

    def searched(self) -> list[str]:
        """Names of the parameters that are actually searched (not fixed)."""
        return [n for n, prm in self.params.items() if not isinstance(prm, Fixed)]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for t in techniques():
            body = t.to_yaml(self.spec(t.name))
            if body is not None:
                out[t.name] = body
        return out

    @property
    def fingerprint(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    # ---- deriving
    def bind(self, model: Any, example_input: Any) -> tuple["SearchSpace", list[str]]:
        """This space bound to the user's model (each technique checks the module names it
        is given and finds what it acts on, e.g. the block targets), and what binding
        excluded, one note per line."""
        specs, notes = {}, []
        for t in techniques():
            specs[t.name], said = t.bind(self.spec(t.name), model, example_input)
            notes += said
        return replace(self, specs=specs), notes

    def check_profile(self, profile: Any) -> None:
        """Refuse a space whose choices the hardware profile cannot run (e.g. a bit width its
        execution provider does not run), before anything is written."""
        for t in techniques():
            t.check_profile(self.spec(t.name), profile)

    def with_fixed(self, name: str, value: Any) -> "SearchSpace":
        """This space with parameter `name` fixed to `value`."""
        return self.with_param(name, Fixed(value))

    def with_param(self, name: str, param: Param) -> "SearchSpace":
        """This space with parameter `name` replaced by `param` (e.g. finetune.steps when the
        fine-tune length is the multi-fidelity budget instead of a searched parameter)."""
        section, _, key = name.partition(".")
        if section not in self.specs or key not in self.specs[section].params:
            raise KeyError(name)
        return replace(self, specs={**self.specs, section: self.specs[section].with_param(key, param)})

    # ---- sampling
    def suggest(self, trial: TrialLike) -> CandidateConfig:
        """Sample one candidate, technique by technique in registration order; parameters
        that do not matter for it are not sampled (distillation without fine-tune steps,
        int8 options for fp32)."""
        chosen: dict[str, Any] = {}
        for t in techniques():
            chosen[t.name] = t.suggest(trial, self.spec(t.name), chosen)
        return CandidateConfig(**chosen)

    def config_from_params(self, params: Mapping[str, Any]) -> CandidateConfig:
        """Rebuild a candidate from a trial's recorded params (fixed values filled in)."""
        return self.suggest(Replay(params))

    def recipe(self, on: Mapping[str, Mapping[str, Any]]) -> Optional[dict[str, Any]]:
        """Trial params of a hand recipe: the techniques in `on` set as given ({technique:
        {key: value}}; 'max' is a parameter's largest value), every other technique off
        (its `recipe_off`). Fitted into the space: a range snaps to its grid, a choice takes
        the first of the values asked for that it has, a fixed parameter keeps its value.
        Returns None when the space cannot express the recipe: a choice has none of the
        values asked, or a technique's `switch` cannot take the value asked (a switch asked
        to be off must be exactly off), unless the technique is not `recipe_strict`."""
        out: dict[str, Any] = {}
        for t in techniques():
            spec = self.spec(t.name)
            asked = on.get(t.name)
            for key, value in (dict(asked) if asked is not None else t.recipe_off(spec)).items():
                name = spec.param_name(key)
                param = spec.params.get(key)
                if param is None:  # not a declared parameter (e.g. a block target): as given
                    out[name] = value
                    continue
                if value == "max":
                    value = largest(param)
                strict = key == t.switch and t.recipe_strict
                options = value if isinstance(value, (list, tuple)) else [value]
                if isinstance(param, Range):
                    snapped = param.snap(value)
                    if strict and value == t.schema[key].default and snapped != value:
                        return None
                    out[name] = snapped
                elif isinstance(param, Choice):
                    hit = next((v for v in options if param.contains(v)), None)
                    if hit is None:
                        return None
                    out[name] = hit
                elif strict and param.value not in options:  # Fixed: fine unless it contradicts the recipe
                    return None
            if t.segmented is not None and spec.settings is not None and spec.settings.per == "segment":
                name = spec.param_name(t.segmented)
                if name in out:  # one value for every segment
                    value = out.pop(name)
                    out.update({f"{name}.{i}": value for i in range(spec.settings.n)})
        return out


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


__all__ = ["Choice", "Fixed", "Range", "SearchSpace", "Settings", "load_space", "resolve_space_path", "schema"]
