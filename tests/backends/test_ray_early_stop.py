"""The Ray backend's side of an early stop (autocompress.stopping), without starting Ray:
the stopper ends the whole experiment once the search says so, and a trial Tune ends
then is enqueued again (built on --resume), not failed."""

from __future__ import annotations

from autocompress.backends.ray_tune import _StopAll
from tests.backends.test_ray_guard import FULL, searcher, states


def test_the_stopper_ends_every_trial_once_the_search_says_so_and_stays_stopped():
    s = searcher()
    said = [False]
    stopper = _StopAll(lambda: said[0], s)
    assert not stopper.stop_all() and not stopper("a", {}) and not s.stopping
    said[0] = True
    assert stopper.stop_all() and s.stopping
    said[0] = False
    assert stopper.stop_all()  # once stopped, stopped
    assert not stopper("a", FULL)  # never one trial alone


def test_a_trial_ended_by_the_early_stop_is_enqueued_again_while_finished_ones_are_kept():
    s = searcher()
    s.suggest("a")
    s.suggest("b")
    s.suggest("c")
    s.on_trial_complete("a", result=FULL)
    s.stopping = True
    s.on_trial_complete("b", result={"val_metric": 0.5})  # ended while it ran
    s.on_trial_complete("c", result={"final": False, "failure_reason": "export: boom"})  # it failed on its own
    trials = s._study().trials
    assert states(s)[:3] == ["COMPLETE", "FAIL", "FAIL"]
    assert trials[1].user_attrs["interrupted"] is True and "stopped early" in trials[1].user_attrs["failure_reason"]
    assert trials[2].user_attrs["failure_reason"] == "export: boom" and "interrupted" not in trials[2].user_attrs
    assert states(s)[3:] == ["WAITING"] and trials[3].user_attrs["retry_of"] == 1
