"""prune: structured channel pruning through Torch-Pruning's dependency graph
(transforms.prune). Whole channels leave coupled layers together; the classifier's outputs
and `exclude` modules are never pruned; substituted ShuffleNet units are left alone
(Torch-Pruning 1.6 cannot trace their chunk -> concat -> shuffle pattern); BatchNorm
statistics are re-estimated afterwards. torch's nn.MultiheadAttention is split first
(transforms.mha), so its q/k/v outputs are kept like any attention's and the residual width
around it is pruned to any width (Torch-Pruning would prune its packed embed_dim, which must
stay a multiple of the head count)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional

from autocompress.names import PRUNE_CRITERIA
from autocompress.schema import Key
from autocompress.techniques._registry import Move, Spec, Technique, code_values, format_values, register_technique, segment_moves


@dataclass(frozen=True)
class PruneConfig:
    """Structured channel pruning. `ratio` applies to every prunable group unless
    `segment_ratios` gives one ratio per segment (the prunable groups split in model order
    into len(segment_ratios) contiguous parts). 0 keeps every channel.

    criterion: 'l1' | 'l2' (weight magnitude) or 'act_mean' | 'act_zero' (mean |activation|,
    or the share of non-zero activations after ReLU, over calibration batches).
    round_to: channel counts kept at multiples of this (None: any count).
    exclude: module names never pruned (the classifier's outputs never are)."""

    ratio: float = 0.0
    segment_ratios: Optional[tuple[float, ...]] = None
    criterion: str = "l1"
    round_to: Optional[int] = None
    exclude: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return any(r > 0 for r in (self.segment_ratios or (self.ratio,)))


STRONGER_STEP = 0.15  # a move of the structured search: 0.5 -> 0.65 -> 0.8 of the channels removed


@register_technique("prune", stage="model", order=20)
class Prune(Technique):
    Config = PruneConfig
    off = PruneConfig()
    schema = {
        "ratio": Key(float, 0.0, 0.0, 0.95),
        "criterion": Key(str, "l1", allowed=PRUNE_CRITERIA),
        "round_to": Key(int, 1, 1, 256),  # 1: any channel count
    }
    segmented = "ratio"
    excludes = True
    switch = "ratio"
    in_every_id = True

    def suggest(self, trial, spec: Spec, chosen: Mapping[str, Any]) -> PruneConfig:
        ratio, seg = spec.get_segmented(trial, "ratio")
        exclude = spec.settings.exclude
        cfg = PruneConfig(ratio=float(ratio or 0.0), segment_ratios=tuple(map(float, seg)) if seg else None, exclude=exclude)
        if not cfg.active:  # the criterion and rounding do not matter
            return PruneConfig(exclude=exclude)
        round_to = int(spec.get(trial, "round_to"))
        return PruneConfig(cfg.ratio, cfg.segment_ratios, spec.get(trial, "criterion"), round_to if round_to > 1 else None, exclude)

    def stronger(self, spec: Spec, params: Mapping[str, Any], *, scale: float = 1.0) -> list[Move]:
        """Every segment's ratio (or the one ratio) up by STRONGER_STEP x scale, then each alone."""
        return segment_moves(spec, "ratio", params, up=True, by=STRONGER_STEP, what=f"prune ratio +{STRONGER_STEP:g}", unset=0.0,
                             scale=scale)

    def label(self, cfg: PruneConfig, candidate) -> str:
        if not cfg.active:
            return "no prune"
        return f"prune {format_values(cfg.ratio, cfg.segment_ratios)} {cfg.criterion}" + (f"/{cfg.round_to}" if cfg.round_to else "")

    def code(self, cfg: PruneConfig, candidate) -> str:
        """'p.5', 'p.5,.3,0_l2_x8': the ratios, the criterion unless l1, the channel multiple."""
        if not cfg.active:
            return ""
        crit = {"l1": "", "act_mean": "_am", "act_zero": "_az"}.get(cfg.criterion, f"_{cfg.criterion}")
        return f"p{code_values(cfg.ratio, cfg.segment_ratios)}{crit}" + (f"_x{cfg.round_to}" if cfg.round_to else "")

    def explain(self, cfg: PruneConfig, candidate) -> str:
        if not cfg.active:
            return ""
        share = f"{100 * cfg.ratio:g}% of the channels" if cfg.segment_ratios is None else \
            f"{', '.join(f'{100 * r:g}%' for r in cfg.segment_ratios)} of the channels of {len(cfg.segment_ratios)} segments"
        rank = {"l1": "L1 weight magnitude", "l2": "L2 weight magnitude", "act_mean": "mean |activation|",
                "act_zero": "share of non-zero activations"}.get(cfg.criterion, cfg.criterion)
        return f"structured pruning of {share}, ranked by {rank}" + (f", counts rounded to {cfg.round_to}" if cfg.round_to else "")

    def apply(self, model, cfg: PruneConfig, ctx):
        if not cfg.active:
            return model
        from autocompress.training import recalibrate_batchnorm_
        from autocompress.transforms.mha import split_attention_
        from autocompress.transforms.prune import prune_channels

        split_attention_(model)  # nn.MultiheadAttention as q/k/v/out Linears: its heads kept whole, like any attention's

        blocks = ctx.candidate.blocks if ctx.candidate is not None else None
        shuffles = tuple(path for path, name in blocks.choices if name.startswith("shuffle")) if blocks is not None else ()
        if shuffles:
            cfg = replace(cfg, exclude=cfg.exclude + shuffles)
        model = prune_channels(model, cfg, ctx)
        if ctx.weights and ctx.train_x is not None:
            recalibrate_batchnorm_(model, ctx.train_x)
        return model

    def examples(self) -> list[PruneConfig]:
        return [PruneConfig(0.0), PruneConfig(0.5), PruneConfig(0.4, criterion="l2", round_to=8), PruneConfig(0.5, criterion="act_mean"),
                PruneConfig(0.5, criterion="act_zero"), PruneConfig(segment_ratios=(0.0, 0.3, 0.7), exclude=("layer1",))]
