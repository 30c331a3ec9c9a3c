"""Distances between two populations: smoothed histogram KL (MIRDD) and the Fréchet distance (FAD).

Pure numpy/scipy functions, each checked against closed forms in the tests.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def shared_histograms(real: Sequence, generated: Sequence) -> tuple[np.ndarray, np.ndarray, list]:
    """Counts of each distinct value over the union of both populations' values.

    ``real`` and ``generated`` are flat sequences of hashable values (labels or integers).
    Returns ``(real_counts (K,), generated_counts (K,), bins)`` with bins sorted.
    """
    bins = sorted(set(real) | set(generated), key=lambda v: (str(type(v)), v))
    index = {b: i for i, b in enumerate(bins)}
    p, q = np.zeros(len(bins)), np.zeros(len(bins))
    for v in real:
        p[index[v]] += 1
    for v in generated:
        q[index[v]] += 1
    return p, q, bins


def smoothed_kl(p_counts: np.ndarray, q_counts: np.ndarray, alpha: float = 1.0) -> float:
    """KL(P || Q) in nats of two histograms over the same bins, each smoothed additively.

    ``(c + alpha) / (sum(c) + alpha K)``: empty bins get a small probability so the KL stays
    finite when the generated population misses a value the real one has.
    """
    p_counts, q_counts = np.asarray(p_counts, float), np.asarray(q_counts, float)
    if p_counts.shape != q_counts.shape or p_counts.ndim != 1:
        raise ValueError(f"histograms must be 1-D over the same bins, got {p_counts.shape} and {q_counts.shape}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0 (it keeps the KL finite), got {alpha}")
    k = len(p_counts)
    if k == 0:
        return 0.0
    p = (p_counts + alpha) / (p_counts.sum() + alpha * k)
    q = (q_counts + alpha) / (q_counts.sum() + alpha * k)
    return float(np.sum(p * np.log(p / q)))


def population_kl(real: Sequence[Sequence], generated: Sequence[Sequence], alpha: float = 1.0) -> float:
    """KL(real || generated) of the pooled values of per-example value lists."""
    p, q, _ = shared_histograms([v for ex in real for v in ex], [v for ex in generated for v in ex])
    return smoothed_kl(p, q, alpha)


def bootstrap_interval(statistic: Callable[[list, list], float], real: list, generated: list,
                       rounds: int = 200, level: float = 0.9, seed: int = 0) -> tuple[float, float]:
    """Normal-approximation bootstrap interval of ``statistic(real, generated)``: the estimate
    plus/minus z times the spread of the statistic over resamples (examples of both populations
    drawn with replacement).

    Not the percentile interval: resampling with replacement repeats examples, which biases a
    histogram KL upwards, so percentiles can miss the estimate itself; the spread is still a
    fair measure of its sampling noise.
    """
    from scipy.stats import norm

    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        r = [real[i] for i in rng.integers(len(real), size=len(real))]
        g = [generated[i] for i in rng.integers(len(generated), size=len(generated))]
        values.append(statistic(r, g))
    estimate, half = statistic(real, generated), float(norm.ppf((1 + level) / 2)) * float(np.std(values))
    return estimate - half, estimate + half


def split_half(statistic: Callable[[list, list], float], real: list, seed: int = 0) -> float:
    """``statistic`` between two random halves of the real population: the noise floor."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(real))
    half = len(real) // 2
    return statistic([real[i] for i in order[:half]], [real[i] for i in order[half: 2 * half]])


def gaussian_fit(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` of embeddings ``(N, D)`` (N >= 2)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need embeddings of shape (N >= 2, D), got {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance of two Gaussians:
    ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # singular product: regularise as in the FAD/FID references
        eps = 1e-6 * np.eye(s1.shape[0])
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
