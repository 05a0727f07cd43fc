"""The mlp technique: feed-forward blocks found when the space is bound (none on a CNN or a
residual stack: nothing sampled), a ratio per segment, rounding sampled only when something
is pruned, labels and moves."""

from __future__ import annotations

import optuna
import torch

from autocompress.config import MlpPruneConfig
from autocompress.space import SearchSpace
from autocompress.tasks.demo import DigitsResNet
from autocompress.techniques import technique
from autocompress.testing import conformance_model

SECTION = {"ratio": {"low": 0.0, "high": 0.8, "step": 0.1}, "per": "segment", "segments": 2, "round_to": [1, 8]}


def test_a_cnn_has_no_mlp_width_to_sample():
    space, notes = SearchSpace.from_dict({"mlp": SECTION}).bind(DigitsResNet(), torch.randn(2, 1, 8, 8))
    assert "mlp: no feed-forward block found in a repeated stack; MLP-width pruning is not searched" in notes
    assert space.suggest(optuna.trial.FixedTrial({})).mlp == MlpPruneConfig()
    assert not any(k.startswith("mlp.") for k in space.recipe({}))


def test_an_encoder_samples_its_blocks_inner_widths():
    model, x = conformance_model("transformer")
    space, notes = SearchSpace.from_dict({"mlp": SECTION}).bind(model, x[:2])
    assert "mlp: 2 feed-forward blocks (inner width 64)" in notes
    off = space.suggest(optuna.trial.FixedTrial({"mlp.ratio.0": 0.0, "mlp.ratio.1": 0.0}))  # round_to not asked when off
    assert off.mlp == MlpPruneConfig()
    cfg = space.suggest(optuna.trial.FixedTrial({"mlp.ratio.0": 0.5, "mlp.ratio.1": 0.8, "mlp.round_to": 8})).mlp
    assert cfg == MlpPruneConfig(segment_ratios=(0.5, 0.8), round_to=8)
    assert technique("mlp").label(cfg, None) == "mlp [0.5 0.8]/8"
    pruned = technique("mlp").apply(model, cfg, type("Ctx", (), {"example_input": x[:2]})())
    assert [layer.fc1.out_features for layer in pruned.layers] == [32, 16]
    moves = technique("mlp").stronger(space.spec("mlp"), {"mlp.ratio.0": 0.5, "mlp.ratio.1": 0.8})
    assert moves[0].changes == {"mlp.ratio.0": 0.7}


class TorchEncoder(torch.nn.Module):
    """torch's own nn.TransformerEncoder (its attention an nn.MultiheadAttention)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(8, 32)
        layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(32, 3)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


def test_torch_s_own_encoder_gets_heads_and_mlp_width_pruned():
    from autocompress.transforms import TransformContext

    torch.manual_seed(0)
    model, x = TorchEncoder().eval(), torch.randn(2, 5, 8)
    space, notes = SearchSpace.from_dict({"mlp": SECTION, "heads": {"ratio": [0.0, 0.5]}}).bind(model, x)
    assert "mlp: 2 feed-forward blocks (inner width 64)" in notes and "heads: 2 attention modules (4 heads)" in notes
    cfg = space.suggest(optuna.trial.FixedTrial({"mlp.ratio.0": 0.5, "mlp.ratio.1": 0.5, "mlp.round_to": 1, "heads.ratio": 0.5}))
    ctx = TransformContext(example_input=x)
    pruned = technique("mlp").apply(technique("heads").apply(__import__("copy").deepcopy(model), cfg.heads, ctx), cfg.mlp, ctx)
    layer = pruned.encoder.layers[0]
    assert (layer.linear1.out_features, layer.self_attn.num_heads, layer.self_attn.q_proj.out_features) == (32, 2, 16)
    assert pruned(x).shape == (2, 3)


def test_channel_pruning_of_torch_s_own_encoder_keeps_its_heads_whole():
    """Residual width 32 at 0.65: 11 channels, which no head count of 4 divides; pruned on the
    split attention, q/k/v keep their outputs and the model runs (Torch-Pruning alone would
    prune the packed embed_dim and fail its own check)."""
    from autocompress.config import PruneConfig
    from autocompress.transforms import TransformContext

    torch.manual_seed(0)
    model, x = TorchEncoder().eval(), torch.randn(2, 5, 8)
    pruned = technique("prune").apply(__import__("copy").deepcopy(model), PruneConfig(0.65), TransformContext(example_input=x))
    attn = pruned.encoder.layers[0].self_attn
    assert attn.q_proj.out_features == 32 and attn.q_proj.in_features < 32 and attn.num_heads == 4
    assert pruned(x).shape == (2, 3)
