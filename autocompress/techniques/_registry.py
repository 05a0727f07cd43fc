"""The technique registry: one record per compression technique.

A technique is one section of the search-space YAML, one slot of a CandidateConfig and one
step of the pipeline. Its record (a `Technique` subclass registered with
`@register_technique`) holds

  * `Config` and `off`: its frozen config type, and the config of a candidate that does
    not use it;
  * `schema`, `segmented`, `excludes`: the YAML keys of its section (type, bounds or
    choices, default), which key may take one value per segment, whether it takes an
    `exclude` list; `parse` / `check` / `bind` validate the section, alone, as a whole,
    and against the user's model;
  * `suggest(trial, spec, chosen)`: how a trial samples its config; `chosen` holds the
    configs of the techniques sampled before it (`needs` names the ones it reads);
  * `label(cfg, candidate)`: its part of a candidate's description ("prune [0.5 0.3] l1/8"),
    `code(cfg, candidate)`: its token of the candidate's short label, like timm's block
    strings ("p.5,.3_x8"; `short_label`), and `explain(cfg, candidate)`, the same in words;
  * `apply(target, cfg, ctx)` and its `stage`: on the model before fine-tuning ("model":
    the pipeline's own copy of the model, changed in place or replaced; returns the model),
    during fine-tuning ("finetune": returns the TrainPlan the fine-tune runs with), or on
    the exported ONNX graph ("graph": writes `ctx.dst` from the file it is given; returns
    that path). `order` places it within its stage.

Techniques are sampled in registration order (the built-ins in the order of the first
release, so a seed gives the same trials) and applied in pipeline order (stage, then
`order`). Records hold data and pure functions; anything that touches torch or ONNX Runtime
is imported inside `apply` / `bind`, so `import autocompress.space` stays cheap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from dataclasses import replace as _replace
from typing import Any, Callable, Mapping, Optional, Sequence

from autocompress.errors import ConfigError
from autocompress.schema import Choice, Fixed, Key, Param, Range, Settings, TrialLike, parse_param, parse_settings

STAGES = ("model", "finetune", "graph")


@dataclass(frozen=True)
class Spec:
    """One technique's part of a search space: its parameters by key, the settings that
    shape it (segments, exclude) and any data of its own (blocks: targets and choices)."""

    name: str
    params: dict[str, Param] = field(default_factory=dict)
    settings: Optional[Settings] = None
    extra: Any = None

    def param_name(self, key: str) -> str:
        return f"{self.name}.{key}"

    def get(self, trial: TrialLike, key: str) -> Any:
        """Sample `key` (a fixed value is returned without asking the trial)."""
        return self.params[key].suggest(trial, self.param_name(key))

    def get_segmented(self, trial: TrialLike, key: str) -> tuple[Any, Optional[tuple[Any, ...]]]:
        """(one value, None) with `per: global`; (None, one value per segment) with
        `per: segment`, sampled as 'name.key.0', 'name.key.1', ..."""
        st = self.settings or Settings()
        if st.per == "global":
            return self.get(trial, key), None
        param, name = self.params[key], self.param_name(key)
        return None, tuple(param.suggest(trial, f"{name}.{i}") for i in range(st.n))

    def with_param(self, key: str, param: Param) -> "Spec":
        return _replace(self, params={**self.params, key: param})

    def with_segments_at_most(self, n: int) -> "Spec":
        """This spec with at most `n` segments (a model with fewer items than segments
        would leave segments empty, their parameters sampled for nothing)."""
        st = self.settings
        return self if st is None or st.segments <= n else _replace(self, settings=_replace(st, segments=n))


@dataclass(frozen=True)
class Move:
    """One step of a technique towards more compression: `changes` ({trial parameter:
    value}) applied to a trial's params; `whole` when it moves every segment (or target)
    at once. `what` says it in a few words ("prune ratio +0.15, segment 2")."""

    what: str
    changes: Mapping[str, Any]
    whole: bool


def segment_names(spec: Spec, key: str) -> list[str]:
    """The trial parameters of a segmented key: ['prune.ratio'] with `per: global`,
    ['prune.ratio.0', 'prune.ratio.1', ...] with `per: segment`."""
    st = spec.settings or Settings()
    name = spec.param_name(key)
    return [name] if st.per == "global" else [f"{name}.{i}" for i in range(st.n)]


def step(param: Param, value: Any, *, up: bool, by: Optional[float] = None, ladder: Optional[Sequence[Any]] = None) -> Any:
    """The value one step from `value` (upwards or downwards) within `param`, or None when
    there is none. A range moves `by` (snapped to its grid); a choice moves to the next of its
    values in numeric order, or along `ladder` (values not on the ladder are never proposed)."""

    if isinstance(param, Range):
        if by is None or value is None:
            return None
        new = param.snap(value + by if up else value - by)
        return None if new == value else new
    if isinstance(param, Choice):
        order = [v for v in ladder if v in param.values] if ladder is not None else sorted(param.values)
        if value not in order:
            return order[0] if order and ladder is not None and up else None
        i = order.index(value) + (1 if up else -1)
        return order[i] if 0 <= i < len(order) else None
    return None


def segment_moves(spec: Spec, key: str, params: Mapping[str, Any], *, up: bool, what: str, by: Optional[float] = None,
                  ladder: Optional[Sequence[Any]] = None, unset: Any = None, scale: float = 1.0) -> list[Move]:
    """Moves of a segmented key: every segment one step at once, then each segment alone
    (when there are several). `unset`: the value of a parameter the trial did not sample.
    With `scale` < 1 a range moves `by * scale` (at least its grid step) and a choice not at all."""
    names = segment_names(spec, key)
    param = spec.params[key]
    if scale < 1:
        if not isinstance(param, Range) or by is None:
            return []
        by = max(by * scale, param.step or 0.0)
        what = f"{what.split(' +')[0]} +{by:g}" if " +" in what else what
    stepped = {n: step(param, params.get(n, unset), up=up, by=by, ladder=ladder) for n in names}
    stepped = {n: v for n, v in stepped.items() if v is not None}
    if not stepped:
        return []
    moves = [Move(f"{what}, every segment" if len(names) > 1 else what, stepped, True)]
    if len(names) > 1:
        moves += [Move(f"{what}, segment {names.index(n)}", {n: v}, False) for n, v in stepped.items()]
    return moves


def code_values(one: Any, per_segment: Optional[Sequence[Any]] = None) -> str:
    """A value or one value per segment in a short label: '.5', '1.5', '0'; '.5,.3,0' per
    segment, or '.5' when every segment has the same value (the same model as one value)."""
    def fmt(v: Any) -> str:
        text = f"{v:g}" if isinstance(v, float) else str(v)
        return text[1:] if text.startswith("0.") else text

    values = list(per_segment) if per_segment else [one]
    return fmt(values[0]) if len(set(values)) == 1 else ",".join(fmt(v) for v in values)


def short_label(candidate: Any) -> str:
    """A candidate's short label: the codes of the techniques it uses in pipeline order,
    e.g. 'p.5_l2 r.75 ft150 kd.5_T4 q8' ('none' when it uses none). Distinct configs get
    distinct labels, but for the fine-tune's optimiser (learning rate, batch size) and
    settings fixed for a whole search (exclude lists)."""
    codes = (t.code(candidate[t.name], candidate) for t in pipeline_order())
    return " ".join(c for c in codes if c) or "none"


def format_values(one: Any, per_segment: Optional[Sequence[Any]]) -> str:
    """'0.5', or '[0.5 0.3 0]' for one value per segment (labels)."""
    def fmt(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    return f"[{' '.join(fmt(v) for v in per_segment)}]" if per_segment else fmt(one)


class Technique:
    """Base of every technique record; subclasses set the data attributes, implement
    `suggest` and `apply`, and override the hooks they need."""

    name: str = ""
    stage: str = "model"
    order: int = 0
    Config: type = object
    off: Any = None
    schema: Mapping[str, Key] = {}
    segmented: Optional[str] = None  # the key that may take one value per segment (`per: segment`)
    excludes: bool = False  # its section takes `exclude: [module names]`
    switch: Optional[str] = None  # the key whose default switches the technique off (hand recipes)
    recipe_strict: bool = True  # a hand recipe whose `switch` value the space cannot take is dropped
    needs: tuple[str, ...] = ()  # techniques sampled before it whose configs `suggest` reads
    substages: tuple[str, ...] = ()  # sub-steps `apply` times on their own with ctx.timed(name)
    # Written into every candidate's id even when off. True for the techniques of the first
    # release only, so the ids of earlier runs stay valid; a later technique enters an id only
    # when a candidate uses it, so adding one leaves every existing id as it was.
    in_every_id: bool = False
    # `bind` finds what the technique acts on in the user's model and keeps it in spec.extra;
    # where it found nothing (extra falsy) the technique is unbound: it samples nothing, offers
    # no move and hand recipes leave it out, so a model without it searches as before
    binds_to_model: bool = False
    conformance: str = "cnn"  # the conformance suite's model for it (autocompress.testing): "cnn", "stack" or "transformer"

    # ---- required
    def suggest(self, trial: TrialLike, spec: Spec, chosen: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def apply(self, target: Any, cfg: Any, ctx: Any) -> Any:
        raise NotImplementedError

    # ---- optional hooks
    def is_active(self, cfg: Any) -> bool:
        """Whether a candidate with this config uses the technique."""
        active = getattr(cfg, "active", None)
        return bool(active) if active is not None else cfg is not None and cfg != self.off

    def label(self, cfg: Any, candidate: Any) -> str:
        """Compact code for tables ('' leaves the technique out of the label)."""
        return ""

    def code(self, cfg: Any, candidate: Any) -> str:
        """Its token of the candidate's short label (short_label): a letter or two and the
        values, options after '_', no spaces ('' when off). By default the label, spaces
        replaced by '_'."""
        return self.label(cfg, candidate).replace(" ", "_") if self.is_active(cfg) else ""

    def explain(self, cfg: Any, candidate: Any) -> str:
        """What the technique does to this candidate, in words ('' when nothing)."""
        return self.label(cfg, candidate)

    def parse(self, body: Any, source: str) -> Spec:
        """The section's YAML body (None when absent) -> Spec, by `schema`; unknown keys,
        wrong types and out-of-range values raise ConfigError naming key and value."""
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            raise ConfigError(f"{self.name} must be a mapping, got {body!r} ({source})")
        setting_keys = ({"per", "segments"} if self.segmented else set()) | ({"exclude"} if self.excludes else set())
        allowed = set(self.schema) | setting_keys
        unknown = set(body) - allowed
        if unknown:
            raise ConfigError(f"unknown key {self.name}.{sorted(unknown)[0]}; allowed: {sorted(allowed)} ({source})")
        try:
            settings = parse_settings(self.name, body, with_exclude=self.excludes) if setting_keys else None
            params = {key: parse_param(f"{self.name}.{key}", body[key], k) if key in body else Fixed(k.default)
                      for key, k in self.schema.items()}
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({source})") from None
        return Spec(self.name, params, settings)

    def to_yaml(self, spec: Spec) -> Optional[dict[str, Any]]:
        """The section as YAML data (None: leave it out)."""
        out = {key: p.to_yaml() for key, p in spec.params.items()}
        if spec.settings is not None:
            out.update(spec.settings.to_yaml(with_exclude=self.excludes))
        return out

    def check(self, spec: Spec) -> None:
        """Combinations of keys the section may not hold (ConfigError)."""

    def bind(self, spec: Spec, model: Any, example_input: Any) -> tuple[Spec, list[str]]:
        """The spec bound to the user's model, and what binding excluded (notes). By
        default: every `exclude` name must be a module of the model."""
        if spec.settings is not None and spec.settings.exclude:
            names = {n for n, _ in model.named_modules()}
            for name in spec.settings.exclude:
                if name not in names:
                    close = sorted(n for n in names if n and (name in n or n in name))[:5]
                    raise ConfigError(f"{self.name}.exclude names {name!r}, which is not a module of the model"
                                      + (f"; similar: {close}" if close else ""))
        return spec, []

    def check_profile(self, spec: Spec, profile: Any) -> None:
        """Refuse a space the hardware profile cannot run (ConfigError)."""

    def bound(self, spec: Spec) -> bool:
        """Whether the technique has something to act on in the model the space is bound to
        (always, unless it `binds_to_model`)."""
        return not self.binds_to_model or bool(spec.extra)

    def recipe_off(self, spec: Spec) -> dict[str, Any]:
        """{key: value} that switch the technique off in a hand recipe (nothing where unbound)."""
        return {self.switch: self.schema[self.switch].default} if self.switch and self.bound(spec) else {}

    def to_dict(self, cfg: Any) -> Any:
        return asdict(cfg) if is_dataclass(cfg) else cfg

    def from_dict(self, data: Any) -> Any:
        return self.off if data is None else self.canonical(self.Config(**data))

    def canonical(self, cfg: Any) -> Any:
        """`cfg` with every field in its declared type (0 -> 0.0 for a float ratio, lists ->
        tuples), so equal configs hash alike."""
        if cfg is None or not is_dataclass(cfg):
            return cfg
        kw = {}
        for f in fields(cfg):
            v, kind = getattr(cfg, f.name), str(f.type)
            if v is None:
                kw[f.name] = v
            elif kind == "float":
                kw[f.name] = float(v)
            elif kind in ("int", "Optional[int]"):
                kw[f.name] = int(v)
            elif "tuple[tuple" in kind:
                kw[f.name] = tuple(tuple(x) for x in v)
            elif "tuple[float" in kind:
                kw[f.name] = tuple(float(x) for x in v)
            elif "tuple" in kind:
                kw[f.name] = tuple(v)
            else:
                kw[f.name] = v
        return type(cfg)(**kw)

    def stronger(self, spec: Spec, params: Mapping[str, Any], *, scale: float = 1.0) -> list["Move"]:
        """One step more compression from a trial's `params` (all of its trial parameters),
        for the structured search (autocompress.climb): a Move of the whole model first, then
        one per segment or target, each changing this technique's parameters only. `scale` < 1
        asks for a finer step (a range's step scaled; a choice has none finer: no move). []
        when the technique cannot compress further or has no notion of stronger (the default)."""
        return []

    def baseline(self, model: Any) -> Optional[tuple[str, Any]]:
        """(name, config) of a baseline: the teacher with this technique alone, measured
        once before the search (pipeline.prepare) so that every table also compares with
        it (a "graph" technique only: the teacher's file is changed, nothing is trained);
        None (the default) when the technique gives none for `model`."""
        return None

    def examples(self) -> list[Any]:
        """Configs the conformance suite applies (autocompress.testing); an entry may be
        (config, {other technique: its config}) where the technique reads another's."""
        return []


_REGISTRY: dict[str, Technique] = {}


def register_technique(name: str, *, stage: str, order: int) -> Callable[[type], type]:
    """Class decorator: register one instance of a Technique subclass under `name` (its
    YAML section, CandidateConfig slot and trial-parameter prefix)."""

    def deco(cls: type) -> type:
        if not issubclass(cls, Technique):
            raise TypeError(f"{cls.__name__} must subclass autocompress.techniques.Technique")
        if not name.isidentifier() or name in _REGISTRY:
            raise ValueError(f"technique {name!r} is {'already registered' if name in _REGISTRY else 'not an identifier'}")
        if stage not in STAGES:
            raise ValueError(f"technique {name!r}: stage must be one of {STAGES}, got {stage!r}")
        missing = [n for n in cls.needs if n not in _REGISTRY]
        if missing:
            raise ValueError(f"technique {name!r} needs {missing}, which must be registered before it")
        if cls.switch is not None and cls.switch not in cls.schema:
            raise ValueError(f"technique {name!r}: switch {cls.switch!r} is not a key of its schema")
        cls.name, cls.stage, cls.order = name, stage, order
        _REGISTRY[name] = cls()
        return cls

    return deco


def unregister_technique(name: str) -> None:
    """Remove a technique (for tests and plugins that register one for a while)."""
    if any(name in t.needs for t in _REGISTRY.values() if t.name != name):
        raise ValueError(f"technique {name!r} is needed by another technique")
    _REGISTRY.pop(name)


def techniques() -> list[Technique]:
    """Every registered technique, in registration (sampling) order."""
    return list(_REGISTRY.values())


def pipeline_order(stage: Optional[str] = None) -> list[Technique]:
    """Registered techniques in the order the pipeline applies them (of one stage, if given)."""
    ordered = sorted(_REGISTRY.values(), key=lambda t: (STAGES.index(t.stage), t.order))
    return [t for t in ordered if stage is None or t.stage == stage]


def technique_of(cfg: Any) -> Technique:
    """The technique whose config type `cfg` is."""
    for t in _REGISTRY.values():
        if type(cfg) is t.Config:
            return t
    raise ValueError(f"no registered technique has config type {type(cfg).__name__}")


def apply(model: Any, cfg: Any, ctx: Any) -> Any:
    """A model-stage technique's config applied to a copy of `model` (never changed); the
    technique is the one whose config type `cfg` is."""
    import copy

    t = technique_of(cfg)
    if t.stage != "model":
        raise ValueError(f"technique {t.name!r} acts at stage {t.stage!r}, not on a model")
    return t.apply(copy.deepcopy(model), cfg, ctx)


def technique(name: str) -> Technique:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown technique {name!r}; registered: {list(_REGISTRY)}") from None


__all__ = ["STAGES", "Move", "Spec", "Technique", "apply", "code_values", "format_values", "segment_moves", "segment_names", "step", "pipeline_order", "register_technique", "short_label", "technique",
           "technique_of", "techniques", "unregister_technique"]
