"""Multi-fidelity decisions as pure functions: option parsing, the NSGA-II-style order at a
rung, and the asynchronous promotion rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from autocompress.fidelity import Fidelity, RungBoard, board_history, promotion_order
from autocompress.errors import ConfigError


def test_fidelity_parses_rungs_and_the_reduction_factor():
    f = Fidelity.parse("50,150", 3)
    assert f.rungs == (50, 150) and f.reduction_factor == 3 and f.full_steps == 150
    assert Fidelity.parse([10, 30, 90]).reduction_factor == 3  # the default
    assert f.to_dict() == {"rungs": [50, 150], "reduction_factor": 3}


@pytest.mark.parametrize(
    "rungs, eta, needle",
    [
        ("50", None, "--fidelity needs at least two rungs"),
        ("150,50", None, "--fidelity rungs must be increasing"),
        ("50,50", None, "--fidelity rungs must be increasing"),
        ("0,50", None, "--fidelity rungs must be increasing step counts >= 1"),
        ("fifty,150", None, "--fidelity must be fine-tune steps per rung"),
        ("50,150", 1, "--reduction-factor must be an integer >= 2, got 1"),
    ],
)
def test_bad_fidelity_options_are_refused_naming_the_option_and_value(rungs, eta, needle):
    with pytest.raises(ConfigError) as err:
        Fidelity.parse(rungs, eta)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert (repr(rungs) in str(err.value)) or (str(eta) in str(err.value))


def test_promotion_order_puts_dominated_candidates_after_the_front():
    # accuracy (max), latency ratio (min): 0 and 1 are non-dominated, 2 is dominated by 0, 3 by everyone
    acc, lat = [0.9, 0.7, 0.8, 0.5], [0.5, 0.2, 0.6, 0.9]
    order = promotion_order(acc, lat)
    assert set(order[:2]) == {0, 1} and order[2:] == [2, 3]


def test_promotion_order_within_a_front_prefers_the_extremes_and_is_not_a_weighted_sum():
    # all four on one front; the two ends have infinite crowding distance
    acc, lat = [0.99, 0.90, 0.80, 0.30], [0.90, 0.50, 0.45, 0.05]
    order = promotion_order(acc, lat)
    assert set(order[:2]) == {0, 3}  # the most accurate and the fastest, however poor its accuracy
    assert order[2:] == [2, 1]  # 2 sits in the wide gap between 1 and 3: larger crowding distance
    assert promotion_order([], []) == []


def test_the_board_promotes_the_top_ceil_n_over_eta_so_far():
    board = RungBoard(Fidelity((10, 30), 2))
    first = board.decide(0, "a", 0.5, 0.5)
    assert first.promote and (first.position, first.n, first.keep) == (0, 1, 1)  # alone at the rung: promoted
    worse = board.decide(0, "b", 0.4, 0.6)  # dominated by a: place 2 of 2, top 1 go on
    assert not worse.promote and (worse.position, worse.n, worse.keep) == (1, 2, 1)
    assert "stopped at rung 0 (10 steps): place 2 of 2" in worse.reason
    better = board.decide(0, "c", 0.9, 0.3)  # dominates both; 3 results, top 2
    assert better.promote and better.position == 0 and better.keep == 2
    assert set(board.results(0)) == {"a", "b", "c"}


def test_a_new_result_for_the_same_key_replaces_the_old_one():
    board = RungBoard(Fidelity((10, 30), 3))
    board.decide(0, 7, 0.1, 0.9)
    board.decide(0, 7, 0.9, 0.1)
    assert board.results(0) == {7: (0.9, 0.1)}


def test_the_board_ranks_against_its_history_and_only_rungs_with_a_promotion():
    history = [(0, n, 0.9 - 0.01 * n, 0.3) for n in range(6)]
    board = RungBoard(Fidelity((10, 30, 90), 3), history)
    d = board.decide(0, 99, 0.5, 0.5)  # dominated by all six earlier candidates
    assert not d.promote and (d.position, d.n, d.keep) == (6, 7, 3)
    assert board.decide(1, 99, 0.5, 0.5).promote  # first at rung 1
    with pytest.raises(ValueError):
        board.decide(2, 99, 0.5, 0.5)  # the last rung is the full fine-tune: no decision there


def test_board_history_reads_rung_results_and_skips_duplicates():
    def trial(number, rungs, **attrs):
        return SimpleNamespace(number=number, user_attrs={"rung_results": rungs, **attrs})

    r = [{"rung": 0, "steps": 10, "val_metric": 0.8, "latency_ratio": 0.4, "promoted": True}]
    trials = [trial(0, r), trial(1, r, duplicate_of=0), SimpleNamespace(number=2, user_attrs={})]
    assert board_history(trials) == [(0, 0, 0.8, 0.4)]
