"""MIRDD over descriptor populations: the functions and the torchmetrics Metric."""

import numpy as np
import pytest
import torch

from stemgen.eval.descriptors import KEY_LABELS, NAMES, TRIAD_LABELS, Descriptors
from stemgen.eval.distances import population_kl
from stemgen.eval.mirdd import MIRDD, mirdd, mirdd_report, population


def random_descriptors(rng, keys=KEY_LABELS, pitch_lo=36, pitch_hi=84, n=40):
    out = []
    for _ in range(n):
        pitches = [int(p) for p in rng.integers(pitch_lo, pitch_hi, size=12)]
        triads = [str(t) for t in rng.choice(TRIAD_LABELS[1:7], size=4)]
        out.append(Descriptors(str(rng.choice(keys)), max(pitches) - min(pitches), len({p % 12 for p in pitches}),
                               int(rng.integers(1, 5)), int(rng.choice([3, 4])), len(set(triads)),
                               float(rng.integers(0, 4)) / 3, pitches, [p % 12 for p in pitches], triads,
                               [int(v) for v in rng.integers(0, 3, size=8)]))
    return out


def test_madmom_key_vocabulary_matches():
    from stemgen.eval.madmom_import import import_madmom

    import_madmom()
    from madmom.features.key import KEY_LABELS as MADMOM_KEYS

    assert tuple(MADMOM_KEYS) == KEY_LABELS


def test_mirdd_is_small_for_the_same_distribution_and_large_for_another():
    rng = np.random.default_rng(0)
    real, same = random_descriptors(rng), random_descriptors(rng)
    other = random_descriptors(rng, keys=KEY_LABELS[:2], pitch_lo=60, pitch_hi=64)
    close, far = mirdd(population(real), population(same)), mirdd(population(real), population(other))
    assert set(close) == set(NAMES) | {"mirdd"}
    assert far["key"] > 2 * close["key"] and far["note_pitches"] > 5 * close["note_pitches"]
    assert far["mirdd"] > close["mirdd"] > 0
    assert close["mirdd"] == pytest.approx(sum(close[n] for n in NAMES) / 11)
    report = mirdd_report(real, other, rounds=30)
    assert report["n_real"] == 40 and report["mirdd"] == pytest.approx(far["mirdd"])
    lo, hi = report["interval"]
    assert lo < report["mirdd"] < hi and report["noise_floor"] < report["mirdd"]
    assert set(report["descriptors"]) == set(NAMES)
    with pytest.raises(ValueError, match="at least 2 real"):
        mirdd_report(real[:1], other)


def test_metric_accumulates_batches_like_the_function():
    rng = np.random.default_rng(1)
    real, gen = random_descriptors(rng, n=20), random_descriptors(rng, keys=KEY_LABELS[:5], n=20)
    metric = MIRDD()
    for i in range(0, 20, 7):
        metric.update(real[i: i + 7], gen[i: i + 7])
    out = metric.compute()
    expected = mirdd(population(real), population(gen))
    assert out["mirdd"].item() == pytest.approx(expected["mirdd"])
    assert out["kl/key"].item() == pytest.approx(population_kl([d.codes("key") for d in real],
                                                                [d.codes("key") for d in gen]))
    metric.reset()
    metric.update(real, real)
    assert metric.compute()["mirdd"].item() == pytest.approx(0.0)
    assert isinstance(out["mirdd"], torch.Tensor)
