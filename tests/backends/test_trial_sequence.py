"""Same seed, same space -> the same trials and the same front.

The local backend drives a real Optuna study (TPE, SQLite) over the built-in spaces, bound
to the demo's model architecture, with a deterministic stand-in for the pipeline: each
candidate's three objectives are a fixed function of its config (no training, no timing),
so the sampler sees the same values on every run. The sequence of trials (parameters,
labels, candidate ids, recipes, duplicates) and the Pareto front are compared with
tests/fixtures/trial_sequence.json. The backend runs as `autocompress search` runs it: the
default drop limit as the samplers' constraint and, but for random search, the structured
start (autocompress.climb) after the hand recipes. The file was first recorded before the
technique registry replaced the hand-written config and space code (and matched it after),
then again when the default drop limit and the climb changed where the search spends its
trials. A change in that file means the search itself behaves differently.

What is compared with the file: the hand recipes and the sampler's random start-up (the
first STARTUP trials), which are integer and hash arithmetic on every CPU. TPE's and
NSGA-II's later choices go through floating-point kernels whose last bits differ between
CPUs (NumPy's exp/log on AVX2 and on AVX-512): the same code asks a different trial 12 or
37 on an AMD EPYC than on the Intel Xeon the file was recorded on. Those are checked for
determinism instead: two runs on the same machine give the same 40 trials and front.

Regenerate (only for an intended change of behaviour): python -m tests.backends.test_trial_sequence
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import FIXTURES

GOLDEN = FIXTURES / "trial_sequence.json"
CASES = {
    "default-tpe": ("default", "tpe"),
    "global-tpe": ("global", "tpe"),
    "default-nsga2": ("default", "nsga2"),
    "rich-tpe": (str(FIXTURES / "space_rich.yaml"), "tpe"),
    "rich-random": (str(FIXTURES / "space_rich.yaml"), "random"),
}
BUDGET = 40
STARTUP = 10  # make_sampler's n_startup_trials (TPE) and what NSGA-II's first generation draws at random


def _unit(text: str) -> float:
    """A stable pseudo-random number in [0, 1) from a string."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) / 2**32


def fake_objectives(cfg: dict[str, Any]) -> tuple[float, float, float]:
    """(val accuracy, latency ratio, size bytes) as a fixed function of a config's dict:
    pruning and low rank make it faster, smaller and less accurate, quantization smaller,
    fine-tuning recovers accuracy; a little deterministic noise breaks ties."""
    prune, lowrank, quant = cfg["prune"], cfg["lowrank"], cfg["quantize"]
    p = float(np.mean(prune["segment_ratios"] or [prune["ratio"]]))
    r = float(np.mean(lowrank["segment_ratios"] or [lowrank["rank_ratio"]]))
    bits = quant["segment_bits"] or [quant["mode"]]
    width = float(np.mean([{"fp32": 32, "int8": 8, "int4": 4}[b] for b in bits]))
    blocks = len([name for _, name in cfg["blocks"]["choices"] if name != "keep"])
    steps = cfg["finetune"]["steps"]
    noise = _unit(json.dumps(cfg, sort_keys=True))
    acc = 0.97 - 0.35 * p**2 - 0.2 * (1 - r) ** 2 - 0.004 * (32 - width) / 4 - 0.03 * blocks + 0.02 * min(steps, 150) / 150 + 0.01 * noise
    latency = (1 - 0.7 * p) * (0.6 + 0.4 * r) * (1 - 0.1 * blocks) * (0.7 if width < 32 else 1.0) + 0.02 * noise
    size = 700_000 * (1 - p) ** 2 * r * width / 32 * (1 - 0.1 * blocks) + 1000 * noise
    return acc, latency, size


def _demo_binding():
    """The demo model's architecture (untrained: binding reads shapes only) and an input."""
    import torch

    from autocompress.tasks.demo import IMAGE_SIZE, DigitsResNet

    torch.manual_seed(0)
    return DigitsResNet().eval(), torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE)


def record(space_name: str, sampler: str, storage_dir: Path, *, budget: int = BUDGET) -> dict[str, Any]:
    """Run the local backend with the stand-in pipeline; the trials and the front."""
    from autocompress.backends.optuna import OptunaBackend
    from autocompress.pareto import pareto_mask
    from autocompress.pipeline import Outcome
    from autocompress.space import load_space

    model, x = _demo_binding()
    space, _ = load_space(space_name).bind(model, x)
    from autocompress.climb import CLIMB_LIMIT
    from autocompress.driver import DEFAULT_DROP_LIMIT

    backend = OptunaBackend(f"sqlite:///{storage_dir / f'{Path(space_name).stem}-{sampler}.db'}", space, sampler=sampler, seed=0,
                            max_acc_drop=DEFAULT_DROP_LIMIT, climb_limit=None if sampler == "random" else CLIMB_LIMIT)
    backend.open(new=True)

    def evaluate(cfg, number, **kw):
        values = fake_objectives(cfg.to_dict())
        return Outcome(values, {"metric_drop": (0.97 - values[0]) * 100})

    backend.optimize(evaluate, budget=budget)
    trials = []
    for rec in backend.records():
        trials.append({
            "number": rec["number"], "state": rec["state"], "description": rec.get("description"),
            "candidate_id": rec.get("candidate_id"), "recipe": rec.get("recipe"), "duplicate_of": rec.get("duplicate_of"),
            "climb": rec.get("climb_what"),
            "params": {k[len("param."):]: v for k, v in sorted(rec.items()) if k.startswith("param.")},
        })
    done = [t for t in backend.study.trials if t.state.name == "COMPLETE"]
    values = np.array([[-t.values[0], t.values[1], t.values[2]] for t in done])
    front = sorted(t.number for t, keep in zip(done, pareto_mask(values)) if keep)
    return {"trials": trials, "front": front}


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("case", list(CASES))
def test_same_seed_same_space_gives_the_recorded_start_and_the_same_trials_every_time(case, golden, tmp_path):
    space_name, sampler = CASES[case]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    got = record(space_name, sampler, tmp_path / "a")
    want = golden[case]
    assert len(got["trials"]) == len(want["trials"]) == BUDGET
    for g, w in zip(got["trials"][:STARTUP], want["trials"][:STARTUP]):
        assert g == w, f"trial {w['number']} differs"
    assert sum(1 for t in got["trials"] if t["recipe"]) == sum(1 for t in want["trials"] if t["recipe"]) == 3
    again = record(space_name, sampler, tmp_path / "b")
    for g, a in zip(got["trials"], again["trials"]):
        assert g == a, f"trial {g['number']} differs between two runs on this machine"
    assert got["front"] == again["front"] and got["front"]


if __name__ == "__main__":
    import tempfile

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as d:
        out = {case: record(*CASES[case], Path(d)) for case in CASES}
    GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}: " + ", ".join(f"{c}: {len(v['trials'])} trials, front {len(v['front'])}" for c, v in out.items()))
