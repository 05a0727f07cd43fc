"""Pareto set and hypervolume, checked against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from autocompress.pareto import REFERENCE, hypervolume, normalized_objectives, pareto_mask, reference_point


def brute_force_front(points: np.ndarray) -> np.ndarray:
    n = len(points)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if i != j and all(points[j] <= points[i]) and any(points[j] < points[i]):
                keep[i] = False
                break
    return keep


def brute_force_hypervolume(points: np.ndarray, reference: tuple[int, ...]) -> int:
    """Count the unit cells [c, c+1) inside [0, reference) dominated by some point. Exact
    for integer coordinates in [0, reference + something)."""
    count = 0
    for cell in itertools.product(*(range(r) for r in reference)):
        if any(all(p[k] <= cell[k] for k in range(len(reference))) for p in points):
            count += 1
    return count


# --------------------------------------------------------------------------- front


@pytest.mark.parametrize("seed", range(60))
def test_pareto_mask_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    dims = 2 + seed % 2
    n = int(rng.integers(1, 40))
    pts = rng.integers(0, 5, size=(n, dims)).astype(float)  # small range: many ties and duplicates
    if n > 2:
        pts[-1] = pts[0]  # an explicit duplicate
    assert pareto_mask(pts).tolist() == brute_force_front(pts).tolist()


def test_pareto_mask_known_cases():
    assert pareto_mask([[1, 1], [1, 1]]).tolist() == [True, True]  # identical rows both kept
    assert pareto_mask([[1, 2], [1, 3]]).tolist() == [True, False]  # tie in one, worse in other
    assert pareto_mask([[1, 3], [2, 2], [3, 1], [3, 3]]).tolist() == [True, True, True, False]
    assert pareto_mask([[0, 0, 0], [0, 0, 1], [5, 5, -1]]).tolist() == [True, False, True]
    assert pareto_mask(np.zeros((0, 3))).tolist() == []
    with pytest.raises(ValueError, match="2-D"):
        pareto_mask([1.0, 2.0, 3.0])


# --------------------------------------------------------------------------- hypervolume


@pytest.mark.parametrize("seed", range(40))
def test_hypervolume_2d_matches_grid_count(seed):
    rng = np.random.default_rng(1000 + seed)
    ref = (8, 7)
    pts = rng.integers(0, 10, size=(int(rng.integers(1, 15)), 2))  # some beyond the reference
    assert hypervolume(pts, ref) == pytest.approx(brute_force_hypervolume(pts, ref))


@pytest.mark.parametrize("seed", range(25))
def test_hypervolume_3d_matches_grid_count(seed):
    rng = np.random.default_rng(2000 + seed)
    ref = (6, 5, 7)
    pts = rng.integers(0, 8, size=(int(rng.integers(1, 12)), 3))
    pts = np.vstack([pts, pts[:2]])  # duplicates
    assert hypervolume(pts, ref) == pytest.approx(brute_force_hypervolume(pts, ref))


def test_hypervolume_known_cases():
    assert hypervolume([[0, 0]], (1, 1)) == pytest.approx(1.0)
    assert hypervolume([[1, 3], [2, 2], [3, 1]], (4, 4)) == pytest.approx(6.0)  # 3 + 2 + 1 staircase
    assert hypervolume([[0, 0, 0]], (2, 3, 4)) == pytest.approx(24.0)
    assert hypervolume([[1, 0, 0], [0, 1, 0]], (2, 2, 2)) == pytest.approx(6.0)  # 4 + 4 - 2 overlap
    assert hypervolume([[0.0, 0.5, 0.5]]) == pytest.approx(10 * 0.5 * 0.5)  # default REFERENCE
    assert REFERENCE == (10.0, 1.0, 1.0)
    assert hypervolume(np.zeros((0, 3))) == 0.0


def test_points_not_better_than_the_reference_add_nothing():
    base = [[2.0, 0.5, 0.5]]
    hv = hypervolume(base)
    for extra in ([10.0, 0.1, 0.1], [0.0, 1.0, 0.1], [0.0, 0.1, 1.0], [12.0, 2.0, 2.0], list(REFERENCE)):
        assert hypervolume(base + [extra]) == pytest.approx(hv)
        assert hypervolume([extra]) == 0.0
    # a dominated point adds nothing either; a better one does
    assert hypervolume(base + [[3.0, 0.6, 0.5]]) == pytest.approx(hv)
    assert hypervolume(base + [[1.0, 0.5, 0.5]]) > hv


def test_hypervolume_does_not_depend_on_point_order():
    rng = np.random.default_rng(7)
    pts = rng.random((20, 3)) * np.array(REFERENCE)
    hv = hypervolume(pts)
    assert hv > 0
    for _ in range(3):
        assert hypervolume(rng.permutation(pts)) == pytest.approx(hv)


def test_hypervolume_rejects_points_of_the_wrong_dimension():
    with pytest.raises(ValueError):
        hypervolume([[1, 2], [3, 4], [5, 6]], (10, 10, 10))


def test_normalized_objectives():
    out = normalized_objectives([0.9, 0.85, 0.95], [1.0, 0.5, 2.0], [1000, 250, 4000], teacher_accuracy=0.9, teacher_size_bytes=1000)
    assert out.shape == (3, 3)
    np.testing.assert_allclose(out[:, 0], [0.0, 5.0, -5.0], atol=1e-9)
    np.testing.assert_allclose(out[:, 1], [1.0, 0.5, 2.0])
    np.testing.assert_allclose(out[:, 2], [1.0, 0.25, 4.0])


def test_nondominated_ranks_peel_fronts_in_order():
    from autocompress.pareto import nondominated_ranks

    pts = [[1, 5], [2, 2], [5, 1], [3, 3], [4, 4], [2, 2], [6, 6]]
    assert nondominated_ranks(pts).tolist() == [0, 0, 0, 1, 2, 0, 3]  # equal rows share a front
    assert nondominated_ranks(np.zeros((0, 2))).tolist() == []


def test_the_reference_point_follows_the_metric():
    from autocompress.evaluation.metrics import BUILTIN

    assert reference_point() == REFERENCE == reference_point(BUILTIN["accuracy"], 0.9)
    assert reference_point(BUILTIN["mse"], -0.5) == pytest.approx((0.05, 1.0, 1.0))  # 10% of the teacher's magnitude
