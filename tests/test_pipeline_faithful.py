"""Every candidate's float ONNX file is run next to its model before anything is measured on
it: a candidate whose file computes something else fails with that reason, and the search
goes on. The unfaithful candidate comes from a technique registered here, as a user's
would be: it routes the classifier's output through numpy, which the export's trace
records as a constant."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from autocompress.config import CandidateConfig
from autocompress.errors import CandidateError
from autocompress.schema import Key
from autocompress.techniques import Technique, register_technique, unregister_technique
from tests.helpers import FAST_PROFILE_YAML, search_args


@dataclass(frozen=True)
class DetourConfig:
    enabled: bool = False

    @property
    def active(self) -> bool:
        return self.enabled


@pytest.fixture
def detour():
    """The technique registered for one test, and unregistered after it."""
    import torch
    from torch import nn

    class Detour(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return torch.from_numpy(self.inner(x).detach().numpy())  # leaves torch: a trace bakes the value in

    @register_technique("detour", stage="model", order=45)
    class DetourTechnique(Technique):
        Config = DetourConfig
        off = DetourConfig()
        schema = {"enabled": Key(bool, False)}
        switch = "enabled"

        def suggest(self, trial, spec, chosen):
            return DetourConfig(bool(spec.get(trial, "enabled")))

        def label(self, cfg, candidate):
            return "detour" if cfg.enabled else ""

        def apply(self, model, cfg, ctx):
            if cfg.enabled:
                name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
                parent_name, _, attr = name.rpartition(".")
                parent = model.get_submodule(parent_name)
                setattr(parent, attr, Detour(getattr(parent, attr)))
            return model

    try:
        yield DetourConfig
    finally:
        unregister_technique("detour")


def test_a_candidate_whose_file_is_not_faithful_fails_with_the_reason(detour, prepared, tmp_path):
    from autocompress.pipeline import evaluate_candidate

    with pytest.raises(CandidateError) as info:
        evaluate_candidate(CandidateConfig(detour=detour(True)), 0, prepared, tmp_path, seed=0)
    assert str(info.value) == ("export: the ONNX file is not faithful to the model: output 'logits' has shape (2, 4) in ONNX Runtime, "
                               "(32, 4) in PyTorch on a batch of 32 rows")
    assert not (tmp_path / "trials" / "0").exists()  # nothing left behind
    plain = evaluate_candidate(CandidateConfig(detour=detour(False)), 1, prepared, tmp_path, seed=0)
    assert plain.attrs["val_metric"] == prepared.teacher.val_metric  # the same candidate without it passes the check


SPACE = """\
prune:
  ratio: 0.0
finetune:
  steps: 0
quantize:
  mode: fp32
detour:
  enabled: [false, true]
"""


def test_the_search_records_it_as_failed_and_goes_on(detour, tmp_path, capsys):
    from autocompress.cli import main

    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "profile.yaml").write_text(FAST_PROFILE_YAML)
    inputs = type("Inputs", (), {"space": tmp_path / "space.yaml", "profile": tmp_path / "profile.yaml"})
    out = tmp_path / "run"
    assert main(search_args(inputs, "--budget", 3, "--sampler", "random", "--seed", 1, "--out", out)) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 3
    failed = trials[trials["state"] == "FAIL"]
    done = trials[trials["state"] == "COMPLETE"]
    assert len(failed) >= 1 and len(done) >= 1  # both kinds of candidate were tried, in one search
    assert failed["param.detour.enabled"].all() and not done["param.detour.enabled"].any()
    assert failed["failure_reason"].str.contains("export: the ONNX file is not faithful to the model: output 'logits' has shape").all()
    assert "not faithful" in capsys.readouterr().out  # said on the trial's line
