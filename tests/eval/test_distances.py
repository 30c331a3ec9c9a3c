"""Histogram KL with smoothing, bootstrap / split-half helpers and the Fréchet distance."""

import numpy as np
import pytest

from stemgen.eval.distances import (bootstrap_interval, frechet_distance, gaussian_fit, population_kl,
                                    shared_histograms, smoothed_kl, split_half)


def test_shared_histograms_use_the_union_of_values():
    p, q, bins = shared_histograms(["C", "G", "C"], ["G", "D"])
    assert bins == ["C", "D", "G"] and p.tolist() == [2, 0, 1] and q.tolist() == [0, 1, 1]
    p, q, bins = shared_histograms([3, 1], [2])
    assert bins == [1, 2, 3] and p.tolist() == [1, 0, 1]


def test_smoothed_kl_matches_a_hand_computation():
    # P = (2+1, 0+1)/(2+2) = (3/4, 1/4); Q = (1+1, 1+1)/(2+2) = (1/2, 1/2)
    expected = 0.75 * np.log(0.75 / 0.5) + 0.25 * np.log(0.25 / 0.5)
    assert smoothed_kl([2, 0], [1, 1], alpha=1.0) == pytest.approx(expected)
    assert smoothed_kl([5, 3, 2], [5, 3, 2]) == 0.0
    assert smoothed_kl([10, 0], [0, 10]) > smoothed_kl([10, 0], [5, 5]) > 0  # finite, ordered
    # a larger alpha pulls both towards uniform: the KL shrinks
    assert smoothed_kl([10, 0], [0, 10], alpha=5.0) < smoothed_kl([10, 0], [0, 10], alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        smoothed_kl([1], [1], alpha=0)
    with pytest.raises(ValueError, match="same bins"):
        smoothed_kl([1, 2], [1])


def test_population_kl_bootstrap_and_split_half():
    rng = np.random.default_rng(0)
    real = [list(rng.integers(0, 12, size=5)) for _ in range(60)]
    same = [list(rng.integers(0, 12, size=5)) for _ in range(60)]
    narrow = [list(rng.integers(0, 3, size=5)) for _ in range(60)]
    assert population_kl(real, narrow) > 5 * population_kl(real, same)
    lo, hi = bootstrap_interval(population_kl, real, narrow, rounds=50)
    assert lo < population_kl(real, narrow) < hi
    floor = split_half(population_kl, real)
    assert 0 <= floor < population_kl(real, narrow)


def test_frechet_distance_closed_forms():
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == pytest.approx(4 + 1)
    # diagonal: sum over dimensions of the same
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(1 + 0 + 4 + 1 + 0 + 4)
    # identical Gaussians: 0; rotation-invariant
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 4))
    s = a @ a.T + np.eye(4)
    assert frechet_distance(mu1[:1].repeat(4), s, mu1[:1].repeat(4), s) == pytest.approx(0, abs=1e-6)
    r, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    m1, m2 = rng.normal(size=4), rng.normal(size=4)
    s2 = np.diag([1.0, 2.0, 3.0, 4.0])
    assert frechet_distance(r @ m1, r @ s @ r.T, r @ m2, r @ s2 @ r.T) == pytest.approx(frechet_distance(m1, s, m2, s2))
    # from samples: close to the analytic value
    x = rng.normal(0.0, 1.0, size=(20000, 2))
    y = rng.normal(2.0, 3.0, size=(20000, 2))
    d = frechet_distance(*gaussian_fit(x), *gaussian_fit(y))
    assert d == pytest.approx(2 * (4 + 4), rel=0.05)
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_fit(np.zeros((1, 3)))
