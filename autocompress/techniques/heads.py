"""heads: attention-head pruning (transforms.heads): whole heads leave each attention module
(q/k/v rows and the output layer's columns together, through Torch-Pruning's dependency
graph), the module's head count rewritten, at a ratio per segment of attention modules.
Attention modules are found when the space is bound; a model without one (the
convolutional demo) has nothing to sample. The largest ratio is tried on a copy at bind
time: a model whose own forward breaks without heads keeps them, with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as _replace
from typing import Any, Mapping, Optional

from autocompress.schema import Key, largest
from autocompress.techniques._registry import Move, Spec, Technique, code_values, format_values, register_technique, segment_moves


@dataclass(frozen=True)
class HeadPruneConfig:
    """Share of the heads removed from every attention module (`ratio`), or one share per
    segment of attention modules in model order (`segment_ratios`); at least one head of
    each module is kept."""

    ratio: float = 0.0
    segment_ratios: Optional[tuple[float, ...]] = None

    @property
    def active(self) -> bool:
        return any(r > 0 for r in (self.segment_ratios or (self.ratio,)))


STRONGER_STEP = 0.25  # a move of the structured search: a quarter of the heads more


def removals(model: Any, cfg: HeadPruneConfig) -> dict[str, int]:
    """{attention module path: heads removed} of `cfg` on `model` (its nn.MultiheadAttention
    modules as split ones, transforms.mha: the paths are the same)."""
    from autocompress.segments import per_item
    from autocompress.transforms.heads import attention_sites, heads_to_remove
    from autocompress.transforms.mha import split_attention

    sites = attention_sites(split_attention(model))
    ratios = cfg.segment_ratios if cfg.segment_ratios is not None else (cfg.ratio,)
    return {s.path: heads_to_remove(s.heads, r) for s, r in per_item(sites, ratios)}


@register_technique("heads", stage="model", order=12)
class Heads(Technique):
    Config = HeadPruneConfig
    off = HeadPruneConfig()
    schema = {"ratio": Key(float, 0.0, 0.0, 0.95)}
    segmented = "ratio"
    switch = "ratio"
    binds_to_model = True
    conformance = "transformer"

    def bind(self, spec: Spec, model: Any, example_input: Any) -> tuple[Spec, list[str]]:
        """Find the attention modules; with none, or when the model's forward fails at the
        space's largest ratio, nothing is sampled (extra = 0 modules) and a note says why."""
        from autocompress.transforms.heads import attention_sites, prune_heads
        from autocompress.transforms.mha import split_attention
        from autocompress.transforms.order import changed_forward_error

        model = split_attention(model)  # nn.MultiheadAttention as apply prunes it (a copy; the model itself when none)
        sites = attention_sites(model)
        if not sites:
            return _replace(spec, extra=0), ["heads: no attention module with q/k/v projections and a head count found; "
                                             "head pruning is not searched"]
        top = HeadPruneConfig(float(largest(spec.params["ratio"])))
        why = changed_forward_error(model, example_input, lambda m: prune_heads(m, example_input, removals(m, top)))
        if why is not None:
            return _replace(spec, extra=0), [f"heads: pruning heads breaks the model's forward ({why}); head pruning is not searched"]
        spec = spec.with_segments_at_most(len(sites))
        heads = sorted({s.heads for s in sites})
        return _replace(spec, extra=len(sites)), [f"heads: {len(sites)} attention modules ({'/'.join(map(str, heads))} heads)"]

    def suggest(self, trial, spec: Spec, chosen: Mapping[str, Any]) -> HeadPruneConfig:
        if not self.bound(spec):
            return self.off
        ratio, seg = spec.get_segmented(trial, "ratio")
        return HeadPruneConfig(float(ratio or 0.0), tuple(map(float, seg)) if seg else None)

    def stronger(self, spec: Spec, params: Mapping[str, Any], *, scale: float = 1.0) -> list[Move]:
        if not self.bound(spec):
            return []
        return segment_moves(spec, "ratio", params, up=True, by=STRONGER_STEP, what=f"heads ratio +{STRONGER_STEP:g}", unset=0.0,
                             scale=scale)

    def label(self, cfg: HeadPruneConfig, candidate) -> str:
        return f"heads {format_values(cfg.ratio, cfg.segment_ratios)}" if cfg.active else ""

    def code(self, cfg: HeadPruneConfig, candidate) -> str:
        """'h.5', 'h.25,.5': the share of heads removed."""
        return f"h{code_values(cfg.ratio, cfg.segment_ratios)}" if cfg.active else ""

    def explain(self, cfg: HeadPruneConfig, candidate) -> str:
        if not cfg.active:
            return ""
        if cfg.segment_ratios is None:
            return f"{100 * cfg.ratio:g}% of the attention heads of every attention module removed"
        return f"{', '.join(f'{100 * r:g}%' for r in cfg.segment_ratios)} of the attention heads removed in " \
               f"{len(cfg.segment_ratios)} segments of attention modules"

    def apply(self, model, cfg: HeadPruneConfig, ctx):
        if not cfg.active:
            return model
        from autocompress.transforms.heads import prune_heads
        from autocompress.transforms.mha import split_attention_

        split_attention_(model)  # nn.MultiheadAttention's heads are pruned on its split form (q/k/v/out Linear children)
        prune_heads(model, ctx.example_input, removals(model, cfg))
        return model

    def examples(self) -> list[HeadPruneConfig]:
        """For the conformance suite's TinyEncoder (2 attention modules of 4 heads)."""
        return [HeadPruneConfig(), HeadPruneConfig(0.5), HeadPruneConfig(segment_ratios=(0.75, 0.0))]
