"""mlp: MLP-width pruning (transforms.mlp): the inner width of each feed-forward block of a
repeated stack (a transformer's intermediate / fc1 width), at a ratio per segment of blocks;
the residual width is left to `prune`, the heads to `heads`. Feed-forward blocks are found
when the space is bound; a model without one (the convolutional demo) has nothing to
sample."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as _replace
from typing import Any, Mapping, Optional

from autocompress.schema import Key, largest
from autocompress.techniques._registry import Move, Spec, Technique, code_values, format_values, register_technique, segment_moves


@dataclass(frozen=True)
class MlpPruneConfig:
    """Share of the inner channels removed from every feed-forward block (`ratio`), or one
    share per segment of blocks in model order (`segment_ratios`); kept widths rounded to a
    multiple of `round_to` (None: any width)."""

    ratio: float = 0.0
    segment_ratios: Optional[tuple[float, ...]] = None
    round_to: Optional[int] = None

    @property
    def active(self) -> bool:
        return any(r > 0 for r in (self.segment_ratios or (self.ratio,)))


STRONGER_STEP = 0.2  # a move of the structured search: a fifth of the inner width more


def widths(model: Any, example_input: Any, cfg: MlpPruneConfig) -> dict[str, int]:
    """{inner Linear path: channels kept} of `cfg` on `model` (its nn.MultiheadAttention
    modules as split ones, transforms.mha, as `apply` prunes it)."""
    from autocompress.segments import per_item
    from autocompress.transforms.mha import split_attention
    from autocompress.transforms.mlp import mlp_sites, width_kept

    model = split_attention(model)
    ratios = cfg.segment_ratios if cfg.segment_ratios is not None else (cfg.ratio,)
    return {s.path: width_kept(s.width, r, cfg.round_to) for s, r in per_item(mlp_sites(model, example_input), ratios)}


@register_technique("mlp", stage="model", order=13)
class Mlp(Technique):
    Config = MlpPruneConfig
    off = MlpPruneConfig()
    schema = {
        "ratio": Key(float, 0.0, 0.0, 0.95),
        "round_to": Key(int, 1, 1, 256),  # 1: any width
    }
    segmented = "ratio"
    switch = "ratio"
    binds_to_model = True
    conformance = "transformer"

    def bind(self, spec: Spec, model: Any, example_input: Any) -> tuple[Spec, list[str]]:
        """Find the feed-forward blocks; with none, or when the model's forward fails at the
        space's largest ratio, nothing is sampled (extra = 0 blocks) and a note says why."""
        from autocompress.transforms.mha import split_attention
        from autocompress.transforms.mlp import mlp_sites, prune_mlp
        from autocompress.transforms.order import changed_forward_error

        model = split_attention(model)  # as apply prunes it (a copy; the model itself when it has no nn.MultiheadAttention)
        sites = mlp_sites(model, example_input)
        if not sites:
            return _replace(spec, extra=0), ["mlp: no feed-forward block found in a repeated stack; MLP-width pruning is not searched"]
        top = MlpPruneConfig(float(largest(spec.params["ratio"])))
        why = changed_forward_error(model, example_input, lambda m: prune_mlp(m, example_input, widths(m, example_input, top)))
        if why is not None:
            return _replace(spec, extra=0), [f"mlp: pruning the MLP width breaks the model's forward ({why}); not searched"]
        spec = spec.with_segments_at_most(len(sites))
        return _replace(spec, extra=len(sites)), [f"mlp: {len(sites)} feed-forward blocks (inner width "
                                                  f"{'/'.join(map(str, sorted({s.width for s in sites})))})"]

    def suggest(self, trial, spec: Spec, chosen: Mapping[str, Any]) -> MlpPruneConfig:
        if not self.bound(spec):
            return self.off
        ratio, seg = spec.get_segmented(trial, "ratio")
        cfg = MlpPruneConfig(float(ratio or 0.0), tuple(map(float, seg)) if seg else None)
        if not cfg.active:
            return self.off
        round_to = int(spec.get(trial, "round_to"))
        return _replace(cfg, round_to=round_to if round_to > 1 else None)

    def stronger(self, spec: Spec, params: Mapping[str, Any], *, scale: float = 1.0) -> list[Move]:
        if not self.bound(spec):
            return []
        return segment_moves(spec, "ratio", params, up=True, by=STRONGER_STEP, what=f"mlp ratio +{STRONGER_STEP:g}", unset=0.0,
                             scale=scale)

    def label(self, cfg: MlpPruneConfig, candidate) -> str:
        if not cfg.active:
            return ""
        return f"mlp {format_values(cfg.ratio, cfg.segment_ratios)}" + (f"/{cfg.round_to}" if cfg.round_to else "")

    def code(self, cfg: MlpPruneConfig, candidate) -> str:
        """'m.5', 'm.8,0_x8': the share of the inner width removed, the width multiple."""
        if not cfg.active:
            return ""
        return f"m{code_values(cfg.ratio, cfg.segment_ratios)}" + (f"_x{cfg.round_to}" if cfg.round_to else "")

    def explain(self, cfg: MlpPruneConfig, candidate) -> str:
        if not cfg.active:
            return ""
        share = f"{100 * cfg.ratio:g}%" if cfg.segment_ratios is None else \
            f"{', '.join(f'{100 * r:g}%' for r in cfg.segment_ratios)} (by segment)"
        return f"{share} of the MLP inner width removed" + (f", widths rounded to {cfg.round_to}" if cfg.round_to else "")

    def apply(self, model, cfg: MlpPruneConfig, ctx):
        if not cfg.active:
            return model
        from autocompress.transforms.mha import split_attention_
        from autocompress.transforms.mlp import prune_mlp

        split_attention_(model)
        prune_mlp(model, ctx.example_input, widths(model, ctx.example_input, cfg))
        return model

    def examples(self) -> list[MlpPruneConfig]:
        """For the conformance suite's TinyEncoder (2 blocks of inner width 64)."""
        return [MlpPruneConfig(), MlpPruneConfig(0.5), MlpPruneConfig(segment_ratios=(0.25, 0.75), round_to=8)]
