"""lowrank: SVD low-rank factorization of Linear and Conv2d layers (transforms.lowrank):
Linear(m -> n) becomes two Linears through rank r, a k x k conv a k x k conv into r
channels then a 1 x 1 conv, initialised from the truncated SVD. A layer whose factorized
form would not have fewer weights is left as is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from autocompress.schema import Fixed, Key, Settings
from autocompress.techniques._registry import Move, Spec, Technique, code_values, format_values, register_technique, segment_moves


@dataclass(frozen=True)
class LowRankConfig:
    """SVD low-rank factorization of Linear and Conv2d layers. `rank_ratio` (kept rank /
    full rank; 1.0 = leave as is) applies to every factorizable layer unless
    `segment_ratios` gives one per segment (the layers split in model order into
    contiguous parts). A layer whose factorized form would not have fewer parameters is
    left as is. exclude: module names never factorized."""

    rank_ratio: float = 1.0
    segment_ratios: Optional[tuple[float, ...]] = None
    exclude: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return any(r < 1 for r in (self.segment_ratios or (self.rank_ratio,)))


@register_technique("lowrank", stage="model", order=30)
class LowRank(Technique):
    Config = LowRankConfig
    off = LowRankConfig()
    schema = {"rank_ratio": Key(float, 1.0, 0.0, 1.0, low_open=True)}  # 1: leave layers as they are
    segmented = "rank_ratio"
    excludes = True
    switch = "rank_ratio"
    recipe_strict = False  # a space whose rank ratio cannot be 1 keeps its hand recipes, with its rank
    in_every_id = True

    def suggest(self, trial, spec: Spec, chosen: Mapping[str, Any]) -> LowRankConfig:
        rank, seg = spec.get_segmented(trial, "rank_ratio")
        exclude = spec.settings.exclude
        cfg = LowRankConfig(rank_ratio=float(rank if rank is not None else 1.0), segment_ratios=tuple(map(float, seg)) if seg else None,
                            exclude=exclude)
        return cfg if cfg.active else LowRankConfig(exclude=exclude)

    def stronger(self, spec: Spec, params: Mapping[str, Any], *, scale: float = 1.0) -> list[Move]:
        """The next lower rank ratio of the space (a range: 0.25 x scale lower), every segment, then each alone."""
        return segment_moves(spec, "rank_ratio", params, up=False, by=0.25, what="lower rank", unset=1.0, scale=scale)

    def label(self, cfg: LowRankConfig, candidate) -> str:
        return f"rank {format_values(cfg.rank_ratio, cfg.segment_ratios)}" if cfg.active else ""

    def code(self, cfg: LowRankConfig, candidate) -> str:
        """'r.5', 'r1,.5,.25': the rank kept."""
        return f"r{code_values(cfg.rank_ratio, cfg.segment_ratios)}" if cfg.active else ""

    def explain(self, cfg: LowRankConfig, candidate) -> str:
        if not cfg.active:
            return ""
        kept = f"{100 * cfg.rank_ratio:g}%" if cfg.segment_ratios is None else ", ".join(f"{100 * r:g}%" for r in cfg.segment_ratios)
        return f"SVD low-rank factorization keeping {kept} of each layer's rank"

    def apply(self, model, cfg: LowRankConfig, ctx):
        if not cfg.active:
            return model
        from autocompress.transforms.lowrank import low_rank

        return low_rank(model, cfg, ctx)

    def bind(self, spec: Spec, model: Any, example_input: Any) -> tuple[Spec, list[str]]:
        """Beyond the default checks: layers whose factorized form breaks the model's own
        forward (its code reads something of the layer a factorized one has not) join
        `exclude`, each with its reason in the notes; layers with tied weights (never
        factorized) are named in the notes too."""
        spec, notes = super().bind(spec, model, example_input)
        if spec.params.get("rank_ratio") == Fixed(1.0):  # nothing is factorized
            return spec, notes
        from dataclasses import replace

        from autocompress.transforms.lowrank import breaking_layers, tied_layers

        settings = spec.settings or Settings()
        # tied weights are never factorized (factorizable_layers leaves them out): say so
        notes += [f"lowrank: {name} is kept ({why})" for name, why in tied_layers(model, example_input, settings.exclude).items()]
        broken = breaking_layers(model, example_input, settings.exclude)
        if not broken:
            return spec, notes
        notes += [f"lowrank: {name} is kept (the model's forward fails with it factorized: {why})" for name, why in broken.items()]
        return replace(spec, settings=replace(settings, exclude=(*settings.exclude, *broken))), notes

    def examples(self) -> list[LowRankConfig]:
        return [LowRankConfig(1.0), LowRankConfig(0.5), LowRankConfig(segment_ratios=(1.0, 0.5, 0.25), exclude=("fc",))]
