"""Training pairs (paper sections 2-3): a context mix of N random stems and one other stem.

A song with M stems yields ``M/2 * (2**M - 2)`` (context, target) pairs: every non-empty
proper subset of the stems as context, with each stem outside it as target. Pairs are drawn
as the paper describes: N uniform in 1..M-1, N stems at random for the context, the target at
random among the rest. Songs are cut into segments (1 minute by default); an example is a
random crop (20 s in the paper) of a segment; a pair whose context or target is silent is
rejected and drawn again.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import is_silent, resample, silent_fraction
from ..instruments import DRUMS_ID
from .songs import DatasetError, Song


def pair_count(m: int) -> int:
    """Number of (context, target) pairs of a song with ``m`` stems: m/2 * (2^m - 2)."""
    return m * (2 ** (m - 1) - 1)


def enumerate_pairs(m: int) -> list[tuple[tuple[int, ...], int]]:
    """Every (context stem indices, target index) pair of a song with ``m`` stems."""
    pairs = []
    for target in range(m):
        others = [i for i in range(m) if i != target]
        for n in range(1, m):
            pairs += [(ctx, target) for ctx in itertools.combinations(others, n)]
    return pairs


def draw_pair(m: int, rng: np.random.Generator) -> tuple[tuple[int, ...], int]:
    """One pair as the paper draws it: N ~ U{1..m-1} context stems, the target among the rest."""
    if m < 2:
        raise DatasetError(f"a training pair needs at least 2 stems, the song has {m}")
    order = rng.permutation(m)
    n = int(rng.integers(1, m))
    return tuple(sorted(int(i) for i in order[:n])), int(order[int(rng.integers(n, m))])


def segments(song: Song, segment_seconds: float = 60.0, min_seconds: float = 1.0) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges (native rate) of the song's segments; a last piece
    shorter than ``min_seconds`` is dropped."""
    seg = int(round(segment_seconds * song.sample_rate))
    out = []
    for start in range(0, song.num_samples, seg):
        end = min(start + seg, song.num_samples)
        if end - start >= min_seconds * song.sample_rate:
            out.append((start, end))
    return out


def read_crop(path: Path, start: int, frames: int, sr_in: int, sr_out: int, length: int) -> np.ndarray:
    """Mono float32 ``(length,)`` at ``sr_out`` from ``frames`` samples at ``start`` (native rate);
    zero-padded at the end if the file or the resampler gives fewer samples."""
    import soundfile as sf

    try:
        data, _ = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except Exception as err:
        raise DatasetError(f"cannot read {path} ({err})") from err
    mono = resample(data.mean(axis=1), sr_in, sr_out)[:length]
    if len(mono) < length:
        mono = np.pad(mono, (0, length - len(mono)))
    return mono


@dataclass
class Pair:
    """A training example: context mix and target stem, ``(L,)`` float32 each at the target rate."""

    context: np.ndarray
    target: np.ndarray
    instrument: int
    song: str
    segment: int
    start_seconds: float
    context_stems: tuple[str, ...]
    target_stem: str


def with_harmony(song: Song, context: tuple[int, ...], target: int, rng: np.random.Generator) -> tuple[int, ...]:
    """``context`` with one random pitched stem added when the target is pitched and every
    context stem is drums (a drums-only context says nothing about the harmony to follow)."""
    drums = [song.stems[i].instrument == DRUMS_ID for i in range(len(song.stems))]
    if drums[target] or not all(drums[i] for i in context):
        return context
    pitched = [i for i in range(len(song.stems)) if not drums[i] and i != target and i not in context]
    return tuple(sorted(context + (pitched[int(rng.integers(len(pitched)))],))) if pitched else context


def without_drums(song: Song, context: tuple[int, ...], target: int) -> tuple[int, ...]:
    """``context`` without its drum stems when the target is pitched (a mix without a kit, e.g. a
    choir or a string quartet); unchanged for a drums target or when only drums would be left."""
    if song.stems[target].instrument == DRUMS_ID:
        return context
    pitched = tuple(i for i in context if song.stems[i].instrument != DRUMS_ID)
    return pitched or context


def sample_pair(song: Song, segment: tuple[int, int], segment_index: int, rng: np.random.Generator, *,
                sample_rate: int, crop_seconds: float, silence_db: float = -50.0,
                max_tries: int = 8, harmonic_context: bool = False, full_context: float = 0.0,
                min_target_active: float = 0.0, pitched_context: float = 0.0) -> Pair | None:
    """Draw a non-silent pair from a random crop of one segment; ``None`` after ``max_tries``
    silent draws (the caller moves to another segment).

    The crop is ``crop_seconds`` long (shorter segments are zero-padded); the context is the sum
    of its stems as stored, peak-normalised only if it would clip. ``harmonic_context``: a
    pitched target never gets a drums-only context (see :func:`with_harmony`). ``full_context``:
    the probability that the context is every other stem of the song (the whole mix but the
    target, as a user's context is) instead of the paper's random subset. ``pitched_context``: the
    probability that a pitched target's context then leaves out the drums (:func:`without_drums`: a
    context without a kit, as a choir's or a quartet's; at 1 no random number is drawn for it, so the
    crops and targets are those drawn at 0). ``min_target_active``: the
    least fraction of the crop's 100 ms blocks in which the target must sound (above ``silence_db``);
    0, the paper's rule, rejects only a target silent over the whole crop, so a stem that enters after
    6 of 8 s is kept and teaches the model to stay silent while the music plays.
    """
    length = int(round(crop_seconds * sample_rate))
    crop_native = int(round(crop_seconds * song.sample_rate))
    seg_start, seg_end = segment
    for _ in range(max_tries):
        latest = max(seg_start, seg_end - crop_native)
        start = int(rng.integers(seg_start, latest + 1))
        frames = min(crop_native, seg_end - start)
        ctx_idx, tgt_idx = draw_pair(len(song.stems), rng)
        if full_context > 0 and rng.random() < full_context:
            ctx_idx = tuple(i for i in range(len(song.stems)) if i != tgt_idx)
        if pitched_context >= 1.0 or (pitched_context > 0 and rng.random() < pitched_context):
            ctx_idx = without_drums(song, ctx_idx, tgt_idx)
        if harmonic_context:
            ctx_idx = with_harmony(song, ctx_idx, tgt_idx, rng)

        def load(i: int) -> np.ndarray:
            return read_crop(song.stems[i].path, start, frames, song.sample_rate, sample_rate, length)

        target = load(tgt_idx)
        if is_silent(target, silence_db):
            continue
        if min_target_active > 0 and 1.0 - silent_fraction(target, sample_rate, silence_db) < min_target_active:
            continue
        context = np.sum([load(i) for i in ctx_idx], axis=0).astype(np.float32)
        if is_silent(context, silence_db):
            continue
        peak = float(np.abs(context).max())
        if peak > 1.0:
            context *= 0.99 / peak
        return Pair(context, target, song.stems[tgt_idx].instrument, song.id, segment_index,
                    start / song.sample_rate, tuple(song.stems[i].name for i in ctx_idx),
                    song.stems[tgt_idx].name)
    return None
