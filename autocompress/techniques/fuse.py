"""fuse: ONNX Runtime's transformer optimizer on the exported graph (export.fuse): each
layer's attention subgraph becomes one com.microsoft Attention node and the MLP's bias +
GELU one BiasGelu; with `layer_norm`, residual Add + LayerNormalization becomes
SkipLayerNormalization and the embeddings EmbedLayerNormalization. Nothing about the
model's weights changes (outputs within 1e-4 of the unfused file): fusion is a latency
choice, and whether it pays is measured like everything else.

Measured (ORT 1.32 CPU EP, session level 'all', 1 thread, batch 1, AMD EPYC; medians of
200 runs, three runs each): a BERT (hidden 128, 4 layers, 4 heads, sequence 64) took
1.38-1.42 ms unfused, 1.29-1.31 ms with Attention + BiasGelu (-7%), 1.56-1.59 ms with the
layer-norm fusions too (+13%): ORT's CPU SkipLayerNormalization kernel takes 3.7x to 7x
the time of the Add + LayerNormalization it replaces. Hence `layer_norm` is its own key,
fixed false in the default space. A ViT (32x32 images, patches of 4, same sizes) fuses no
Attention (ORT's patterns do not match its graph): 1.38-1.43 ms unfused, the same with
BiasGelu fused, 1.65-1.70 ms with the layer norms.

The head count: ORT's Attention node takes one `num_heads`, and a Hugging Face model's
graph does not state it (it reshapes to (batch, sequence, -1, head size)), so it comes
from the candidate's model (GraphContext.model, after head pruning): the attention
modules found by structure (transforms.heads.attention_sites: q/k/v Linear children and a
head count or head size held as a number). When every attention module has the same
count, ORT gets it and the attention width (heads x head size). When they differ (head
pruning per segment), or some attention module's count cannot be read, or there is no
model, ORT gets num_heads=0: it then fuses Attention only where the graph states the
count itself (a reshape to a constant head count), and leaves the others unfused: one
count for all would silently compute wrong attention in the layers it does not fit
(measured: logits off by 1.5 on a BERT with 4 and 2 heads).

Composition: fusion runs before static quantization (order 5 < 10). ORT's static quantizer
leaves Attention in float (ORT quantizes Attention only dynamically, as QAttention); the other
MatMuls (attention output, MLP) are quantized as usual. So a fused and quantized candidate
keeps its q/k/v weights in float, and `quantize`'s segments split fewer MatMuls. The fused
file carries every tensor's type (ORT's symbolic shape inference), which the quantizer's
calibration needs.

Bound to the user's model: a model without attention modules (q/k/v Linear triples or a
fused qkv, transforms.graph.attention_projections), such as the convolutional demo, has
nothing to fuse: the section is fixed off, nothing is sampled, no hand recipe sets it, so
its trials are what they were without it. An unbound space samples nothing either.

Per trial the pipeline records `fused_ops` ('Attention 4, BiasGelu 4', or 'nothing
fused') and `fused_num_heads` (the count ORT was given; 0: read from the graph only).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as _replace
from typing import Any, Mapping

from autocompress.schema import Fixed, Key, values_of
from autocompress.techniques._registry import Spec, Technique, register_technique


@dataclass(frozen=True)
class FuseConfig:
    """ONNX Runtime's transformer fusions on the exported graph: Attention and BiasGelu
    when `enabled`, and SkipLayerNormalization / EmbedLayerNormalization with `layer_norm`."""

    enabled: bool = False
    layer_norm: bool = False

    @property
    def active(self) -> bool:
        return self.enabled


def attention_heads(model: Any) -> tuple[int, int, str]:
    """(num_heads, hidden_size, why) to give ORT's optimizer for `model`: the one head count
    of all its attention modules and their width (heads x head size); (0, 0, why) when there
    is no model or no attention module, when the modules' counts differ, or when some
    attention module's count cannot be read (then ORT fuses Attention only where the graph
    states the count)."""
    return _survey(model)[1:]


def _survey(model: Any) -> tuple[int, int, int, str]:
    """(attention modules found, num_heads, hidden_size, why): see attention_heads."""
    if model is None:
        return 0, 0, 0, "no model given: head count read from the graph only"
    from autocompress.transforms.heads import attention_sites
    from autocompress.transforms.graph import attention_projections

    sites = attention_sites(model)
    projections = attention_projections(model)  # 3 Linear layers per q/k/v triple, 1 per fused qkv
    ids = {id(p) for p in projections}
    n = sum(1 for m in model.modules() if any(id(c) in ids for c in m.children()))  # the attention modules
    if not n:
        return 0, 0, 0, "no attention module"
    if 3 * len(sites) != len(projections):
        return n, 0, 0, "some attention module's head count is not known: head count read from the graph only"
    shapes = {(s.heads, s.heads * s.head_size) for s in sites}
    if len(shapes) > 1:
        counts = "/".join(str(s.heads) for s in sites)
        return n, 0, 0, f"head counts differ ({counts}): Attention fused only where the graph states its count"
    heads, width = shapes.pop()
    return n, heads, width, ""


@register_technique("fuse", stage="graph", order=5)
class Fuse(Technique):
    Config = FuseConfig
    off = FuseConfig()
    schema = {"enabled": Key(bool, False), "layer_norm": Key(bool, False)}
    switch = "enabled"
    binds_to_model = True
    conformance = "transformer"

    def bind(self, spec: Spec, model: Any, example_input: Any) -> tuple[Spec, list[str]]:
        """Searched where the model has attention modules; elsewhere both keys are fixed
        off, with a note. `extra` holds the number of attention modules found (bound)."""
        if values_of(spec.params["enabled"]) <= {False}:
            return spec, []  # no section, or switched off: nothing to find
        n, heads, _, why = _survey(model)
        if not n:
            off = _replace(spec, params={key: Fixed(k.default) for key, k in self.schema.items()}, extra=None)
            return off, ["fuse: no attention module (query/key/value Linear layers) found; ONNX Runtime's transformer fusion "
                         "is not searched"]
        said = f"{heads} heads each" if heads else why
        return _replace(spec, extra=n), [f"fuse: {n} attention modules ({said}); ONNX Runtime's transformer fusion is searched"]

    def suggest(self, trial, spec: Spec, chosen: Mapping[str, Any]) -> FuseConfig:
        if not self.bound(spec) or not spec.get(trial, "enabled"):
            return self.off
        return FuseConfig(True, bool(spec.get(trial, "layer_norm")))

    def label(self, cfg: FuseConfig, candidate) -> str:
        if not cfg.active:
            return ""
        return "fused+ln" if cfg.layer_norm else "fused"

    def code(self, cfg: FuseConfig, candidate) -> str:
        """'fz', 'fz_ln' (LayerNorm fusions too)."""
        return ("fz_ln" if cfg.layer_norm else "fz") if cfg.active else ""

    def explain(self, cfg: FuseConfig, candidate) -> str:
        if not cfg.active:
            return ""
        what = "Attention and bias+GELU" + (", residual+LayerNorm and embedding+LayerNorm" if cfg.layer_norm else "")
        return f"{what} fused into ONNX Runtime operators (its transformer optimizer)"

    def apply(self, path, cfg: FuseConfig, ctx):
        """Fuse the ONNX file at `path` into ctx.dst, with the head count of ctx.model."""
        from autocompress.export.fuse import fuse_onnx

        heads, width, _ = attention_heads(getattr(ctx, "model", None))
        report = fuse_onnx(path, ctx.dst, num_heads=heads, hidden_size=width, layer_norm=cfg.layer_norm)
        record = getattr(ctx, "record", None)
        if record is not None:
            record["fused_ops"] = report.describe()
            record["fused_num_heads"] = heads
        return report.path

    def baseline(self, model: Any):
        """The fused fp32 teacher, on a model with attention modules: speedups are also
        reported against it, so that nobody credits the search with what fusion alone gives."""
        return ("fused", FuseConfig(True)) if _survey(model)[0] else None

    def examples(self) -> list[FuseConfig]:
        """For the conformance suite's TinyEncoder (ORT fuses its BiasGelu and layer norms)."""
        return [FuseConfig(), FuseConfig(True), FuseConfig(True, layer_norm=True)]
