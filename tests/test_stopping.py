"""A search that stops early because its trials keep failing (autocompress.stopping): the
rules on records, and real tiny searches through the command line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from autocompress.stopping import SAME_ERROR_TRIALS, FailureWatch, error_shape
from tests.helpers import FAST_PROFILE_YAML, search_args


def _failed(n: int, reason: str, **extra) -> dict:
    return {"number": n, "state": "FAIL", "failure_reason": reason, **extra}


def _complete(n: int, **extra) -> dict:
    return {"number": n, "state": "COMPLETE", **extra}


def test_error_shape_leaves_out_numbers_only():
    assert error_shape("prune: RuntimeError: shape [3, 48] vs [3, 24] at 0x7f3a12") == "prune: RuntimeError: shape [#, #] vs [#, #] at #"
    assert error_shape("export: ratio 0.25 gave 1e-05") == error_shape("export: ratio 0.5 gave 3.2e-07")
    assert error_shape("export: ratio 0.25") != error_shape("prune: ratio 0.25")


def test_the_first_five_non_recipe_trials_failing_alike_stop_the_search():
    watch = FailureWatch()
    assert SAME_ERROR_TRIALS == 5
    watch.see(_failed(0, "prune: boom", recipe="prune 50% + KD"))  # hand recipes are not counted by this rule ...
    watch.see(_complete(1, recipe="int8 teacher"))  # ... whatever their outcome
    for n in range(2, 6):
        assert watch.see(_failed(n, f"prune: shape {n} does not fit {n * 16}")) is None
    watch.see(_failed(6, "x", state="FAIL", interrupted=True))  # Ctrl-C: neither a failure nor an outcome
    stop = watch.see(_failed(7, "prune: shape 7 does not fit 112"))
    assert stop is not None and stop.rule == "same_error" and stop.error == "prune: shape 7 does not fit 112"
    assert stop.message == ("Stopped early: the first 5 trials other than the hand recipes all failed with the same error: "
                            "prune: shape 7 does not fit 112")
    assert watch.see(_complete(8)) is stop  # it stays


@pytest.mark.parametrize("outcomes", [
    ["a 1", "a 2", "a 3", "a 4", "b 5"],  # one different error
    ["a 1", "a 2", None, "a 4", "a 5"],  # one finished
    ["a 1", "a 2", "a 3", "a 4"],  # only four so far
])
def test_the_same_error_rule_needs_all_five_failing_alike(outcomes):
    watch = FailureWatch()
    for n, reason in enumerate(outcomes):
        watch.see(_complete(n) if reason is None else _failed(n, reason))
    assert watch.stop is None


def test_the_same_error_rule_looks_at_the_first_five_only():
    watch = FailureWatch()
    watch.see(_complete(0))
    for n in range(1, 10):
        watch.see(_failed(n, "export: boom"))
    assert watch.stop is None and watch.failures == 9  # trials 1-5 were not the first five
    pruned = FailureWatch()  # stopped at a rung: an outcome, not a failure
    for n in range(5):
        pruned.see({"number": n, "state": "PRUNED"} if n == 2 else _failed(n, "boom"))
    assert pruned.stop is None


def test_max_failures_counts_every_failed_trial_recipes_too():
    watch = FailureWatch(3)
    watch.see(_failed(0, "prune: a", recipe="prune 50% + KD"))
    watch.see(_complete(1))
    watch.see(_failed(2, "export: b"))
    watch.see(_failed(3, "x", interrupted=True))
    assert watch.stop is None and watch.failures == 2
    stop = watch.see(_failed(4, "latency: c"))
    assert stop.rule == "max_failures" and stop.message == "Stopped early: 3 trials failed (--max-failures 3); the last: latency: c"
    one = FailureWatch(1)
    assert one.see(_failed(0, "boom")).message == "Stopped early: 1 trial failed (--max-failures 1); the last: boom"
    with pytest.raises(ValueError, match="max_failures must be >= 1, got 0"):
        FailureWatch(0)


def test_max_failures_and_the_trial_timeout_are_checked_before_any_work():
    from autocompress.driver import SearchOptions, validate
    from autocompress.errors import ConfigError

    for options, message in ((dict(max_failures=0), "--max-failures must be an integer >= 1, got 0"),
                             (dict(max_failures=2.5), "--max-failures must be an integer >= 1, got 2.5"),
                             (dict(trial_timeout=-5), "--trial-timeout must be a number of seconds > 0, got -5"),
                             (dict(trial_timeout=float("inf")), "--trial-timeout must be a number of seconds > 0, got inf"),
                             (dict(trial_timeout=60, backend="ray"), "--trial-timeout is for the local backend")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            validate(SearchOptions(**options))
    with pytest.raises(ConfigError, match="trial_timeout=60: .*a Task built in Python runs in this process"):
        validate(SearchOptions(trial_timeout=60), python_task=True)


# --------------------------------------------------------------------------- real searches

# Every candidate of this space prunes (no ratio 0), and only one hand recipe fits it.
PRUNING_SPACE = """\
prune:
  ratio: {low: 0.25, high: 0.5, step: 0.25}
finetune:
  steps: [0]
quantize:
  mode: [fp32]
"""


@pytest.fixture
def pruning_inputs(tmp_path):
    (tmp_path / "space.yaml").write_text(PRUNING_SPACE)
    (tmp_path / "profile.yaml").write_text(FAST_PROFILE_YAML)
    return SimpleNamespace(space=tmp_path / "space.yaml", profile=tmp_path / "profile.yaml")


def test_a_search_stops_after_max_failures_writes_its_outputs_and_exits_3(pruning_inputs, tmp_path, capsys, failing_prune):
    from autocompress.api import load_run
    from autocompress.cli import EXIT_STOPPED, main

    out = tmp_path / "run"
    assert main(search_args(pruning_inputs, "--budget", 4, "--max-failures", 2, "--out", out)) == EXIT_STOPPED == 3
    lines = capsys.readouterr().out.splitlines()
    said = [line for line in lines if line.startswith("Stopped early")]
    assert said == ["Stopped early: 2 trials failed (--max-failures 2); the last: prune: RuntimeError: no pruning today "
                    "(2 of 4 trials finished; --resume RUN_DIR continues once the cause is fixed)"]
    assert lines[-1].startswith(f"Results in {out}")
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and (trials["state"] == "FAIL").all()  # the budget was 4
    assert (out / "summary.txt").is_file()
    stopped = json.loads((out / "run.json").read_text())["timing"][-1]["stopped"]
    assert stopped["rule"] == "max_failures" and stopped["error"] == "prune: RuntimeError: no pruning today"
    assert load_run(out).stopped.startswith("Stopped early: 2 trials failed")


def test_a_search_whose_first_trials_fail_alike_stops_and_says_why(pruning_inputs, tmp_path, capsys, failing_prune, monkeypatch):
    """The rule's wiring, with its count lowered to 2 to keep the search tiny (the count of 5
    is checked on records above)."""
    from autocompress import stopping
    from autocompress.cli import main

    monkeypatch.setattr(stopping, "SAME_ERROR_TRIALS", 2)
    out = tmp_path / "run"
    assert main(search_args(pruning_inputs, "--budget", 4, "--out", out, "--quiet")) == 3
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2] == ("Stopped early: the first 2 trials other than the hand recipes all failed with the same error: "
                         "prune: RuntimeError: no pruning today (3 of 4 trials finished; --resume RUN_DIR continues once the cause is fixed)")
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 3 and trials["recipe"].notna().sum() == 1  # the hand recipe, then two others
