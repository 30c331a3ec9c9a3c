"""Paired comparison of two samplers or models scored on the same seeds, and the shipping rule.

Generation is noisy: one seed's chroma agreement moves by more than most levers change it. Two
arms generated with the same seeds on the same songs share that noise, so the per-seed
difference has a far smaller spread than either arm: the decisions in ``docs/listening.md``
compare arms by the mean of the per-seed differences and its standard error.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence


@dataclass(frozen=True)
class Paired:
    """Arm A against arm B over ``n`` shared seeds: means, mean difference A - B, its standard
    error (sample standard deviation of the differences / sqrt(n)), seeds where A is higher."""
    mean_a: float
    mean_b: float
    diff: float
    se: float
    n: int
    n_up: int


def paired_difference(a: Mapping[str, float], b: Mapping[str, float]) -> Paired:
    """Compare ``a`` and ``b``, each ``{seed: score}``, over the seeds both have (at least two)."""
    seeds = sorted(set(a) & set(b), key=str)
    if len(seeds) < 2:
        raise ValueError(f"a paired comparison needs at least two seeds scored in both arms, got {len(seeds)} "
                         f"(arm A: {sorted(a)}, arm B: {sorted(b)}); generate both with the same --seeds.")
    d = [float(a[s]) - float(b[s]) for s in seeds]
    return _paired(d, [float(a[s]) for s in seeds], [float(b[s]) for s in seeds], f"scores at seeds {seeds}")


def _paired(d: Sequence[float], a: Sequence[float], b: Sequence[float], what: str) -> Paired:
    """:class:`Paired` from the differences ``d`` (one per unit compared: a seed, or a song) and every
    score of each arm (for the means); ``what`` names the scores in the error for non-finite ones."""
    if not all(math.isfinite(x) for x in d):
        raise ValueError(f"non-finite {what} in the compared arms: {list(d)}")
    n = len(d)
    return Paired(mean_a=statistics.fmean(a), mean_b=statistics.fmean(b), diff=statistics.fmean(d),
                  se=statistics.stdev(d) / math.sqrt(n), n=n, n_up=sum(x > 0 for x in d))


def song_paired_difference(a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]]) -> Paired:
    """Compare ``a`` and ``b``, each ``{seed: [score of each song]}`` (the same songs in the same
    order), over the songs: each song's difference A - B averaged over the seeds both arms have,
    then the mean over the songs and its standard error over them; ``n`` counts songs, ``n_up`` the
    songs where A is higher.

    :func:`paired_difference`'s error is over seeds with the songs fixed: how far another seed
    would move the result on *these* songs. This one is over songs: how far other pieces of the
    same kind would, which is what a verdict has to carry to (a comparison that passed by five
    seed errors on 16 validation chorales has failed on the 16 test chorales).
    """
    seeds = sorted(set(a) & set(b), key=str)
    if not seeds:
        raise ValueError(f"no seed scored in both arms (arm A: {sorted(a)}, arm B: {sorted(b)}); generate both "
                         f"with the same --seeds.")
    lengths = {len(a[s]) for s in seeds} | {len(b[s]) for s in seeds}
    if len(lengths) != 1 or lengths.pop() < 2:
        raise ValueError(f"a comparison over songs needs the same two or more songs in every seed of both arms, got "
                         f"{sorted({len(a[s]) for s in seeds} | {len(b[s]) for s in seeds})} songs.")
    d = [statistics.fmean(float(a[s][j]) - float(b[s][j]) for s in seeds) for j in range(len(a[seeds[0]]))]
    return _paired(d, [float(x) for s in seeds for x in a[s]], [float(x) for s in seeds for x in b[s]],
                   "per-song scores")


@dataclass(frozen=True)
class Rule:
    """The shipping rule of ``docs/listening.md``, fixed before each run: the candidate (A) goes on
    to the paper protocol only if its heard own-context agreement is higher than the shipped
    model's (B) by more than ``z`` standard errors, and its gap and pitch match are not lower by
    more than ``gap_margin`` and ``pitch_margin``."""
    z: float = 2.0
    gap_margin: float = 0.01
    pitch_margin: float = 0.02


def passes(compared: Mapping[str, Paired], rule: Rule = Rule()) -> tuple[bool, list[str]]:
    """Whether A passes ``rule`` against B; ``compared`` holds the :class:`Paired` of
    ``chroma_heard_own``, ``chroma_heard_gap`` and ``pitch_match``. Returns (verdict, reasons it fails)."""
    missing = [k for k in ("chroma_heard_own", "chroma_heard_gap", "pitch_match") if k not in compared]
    if missing:
        raise ValueError(f"the rule needs {missing} compared (listening.py runs from 2026-12-02 on have them)")
    own, gap, pitch = compared["chroma_heard_own"], compared["chroma_heard_gap"], compared["pitch_match"]
    reasons = []
    if not own.diff > rule.z * own.se:
        reasons.append(f"heard own {own.diff:+.4f} is not above {rule.z:g} standard errors ({rule.z * own.se:.4f})")
    if gap.diff < -rule.gap_margin:
        reasons.append(f"gap {gap.diff:+.4f} is lower by more than {rule.gap_margin:g}")
    if pitch.diff < -rule.pitch_margin:
        reasons.append(f"pitch match {pitch.diff:+.4f} is lower by more than {rule.pitch_margin:g}")
    return not reasons, reasons
