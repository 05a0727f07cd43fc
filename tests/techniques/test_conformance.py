"""The conformance suite (autocompress.testing) over the registry: every registered
technique, each of its examples, whatever its stage (blocks included)."""

from __future__ import annotations

import pytest

from autocompress.techniques import techniques
from autocompress.testing import _split, check_technique, conformance_cases

CASES = list(conformance_cases())


@pytest.mark.parametrize("technique, cfg", CASES, ids=[f"{t.name}-{i}" for i, (t, _) in enumerate(CASES)])
def test_technique_conformance(technique, cfg, tmp_path):
    check_technique(technique, cfg, tmp_path)


def test_every_registered_technique_has_cases_and_every_stage_is_covered():
    covered = {t.name for t, _ in CASES}
    assert covered == {t.name for t in techniques()}
    assert {t.stage for t, _ in CASES} == {"model", "finetune", "graph"}
    for t in techniques():  # an active example, not only the off value
        assert any(t.is_active(_split(example)[0]) for u, example in CASES if u is t), t.name
