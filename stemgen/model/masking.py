"""SoundStorm-style hierarchical masking (paper Fig. 4) and condition dropout for guidance.

For each example a level q is drawn uniformly; target levels coarser than q are given, level q
is masked at a cosine-scheduled ratio (at least one position), finer levels are fully masked.
The context is never masked. Shapes: B batch, Q levels, T frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..instruments import NULL_ID


@dataclass
class MaskedTarget:
    """``inputs (B, Q, T)``: target tokens with MASK ids; ``level (B,)``: the trained level;
    ``loss_mask (B, T)``: the masked positions of that level (where the loss is taken)."""

    inputs: torch.Tensor
    level: torch.Tensor
    loss_mask: torch.Tensor


def cosine_mask_count(u: torch.Tensor, t: int) -> torch.Tensor:
    """Positions to mask for u ~ U(0, 1): floor(T * cos(u * pi / 2)), at least 1. ``(B,) -> (B,)``."""
    return torch.floor(t * torch.cos(u * math.pi / 2)).long().clamp(1, t)


#: the share of the window given as a continuation's prefix is drawn uniformly from this range: generation
#: in overlapping windows (1 s of a 4 s window) continues from 25% and from up to 75% of a window
PREFIX_FRACTION = (0.1, 0.9)


def level_probability(p_level: float | Sequence[float], num_levels: int, name: str) -> torch.Tensor:
    """A masking option's probability (one, or one per level: ``p_full_mask``, ``p_prefix``) as a
    ``(Q,)`` tensor; a clear error naming the option ``name`` for a wrong length or a value outside
    [0, 1]."""
    p = torch.as_tensor(p_level, dtype=torch.float)
    if p.ndim == 0:
        p = p.expand(num_levels)
    if p.shape != (num_levels,) or not bool(((p >= 0) & (p <= 1)).all()):
        raise ValueError(f"{name} needs one probability in [0, 1], or one per level ({num_levels}); "
                         f"got {p_level}.")
    return p


def level_weight_tensor(level_weights: Sequence[float], num_levels: int) -> torch.Tensor:
    """``level_weights`` as a ``(Q,)`` tensor; a clear error unless there is one non-negative weight
    per level, not all zero."""
    weights = torch.as_tensor(level_weights, dtype=torch.float)
    if weights.shape != (num_levels,) or not bool((weights >= 0).all()) or not float(weights.sum()) > 0:
        raise ValueError(f"level_weights needs {num_levels} non-negative weights, not all zero; got {list(level_weights)}.")
    return weights


def prefix_frames(fraction: float, t: int) -> int:
    """Frames given at the start of a ``t``-frame continuation that gives ``fraction`` of it: at
    least one given and one masked where ``t >= 2``."""
    return min(max(round(fraction * t), 1), t - 1)


def soundstorm_mask(target: torch.Tensor, mask_id: int, generator: torch.Generator | None = None,
                    level: int | None = None, p_full_mask: float | Sequence[float] = 0.0,
                    level_weights: Sequence[float] | None = None,
                    p_prefix: float | Sequence[float] = 0.0) -> MaskedTarget:
    """Mask ``target (B, Q, T)`` for training (see module docstring); ``level`` fixes q for every
    example instead of drawing it (validation scores each level in turn).

    ``p_full_mask``: the probability that an example's level is masked entirely instead of at the
    cosine ratio (which masks 64% on average and all of it rarely): the case where nothing of the
    stem is given and only the context can say what to play, as at the start of sampling. One
    probability for every level, or one per level ``(Q,)``: level 0 is where the context must say
    which notes to play; a fully masked finer level still has the coarser levels to read.

    ``level_weights``: relative frequencies ``(Q,)`` of the trained levels (None: uniform, as in
    SoundStorm). Level 0 is where the stem's notes are decided; the finer levels are timbre.

    ``p_prefix``: the probability (one, or one per level) that an example is a continuation: its
    level is given up to a frame drawn in ``PREFIX_FRACTION`` of the window and masked entirely
    after it, as when generation continues the overlap of the window before. Random positions
    leave a masked token's neighbours given (copying them is the easy guess); a masked run of
    seconds has to be read from the context. Decided after ``p_full_mask`` (a continuation
    overrides a full masking). With every probability 0 the draws are those of plain masking.
    """
    b, q, t = target.shape
    dev = target.device
    if level is not None:
        level = torch.full((b,), level, dtype=torch.long, device=dev)
    elif level_weights is None:
        level = torch.randint(q, (b,), generator=generator, device=dev)
    else:
        weights = level_weight_tensor(level_weights, q).to(dev)
        level = torch.multinomial(weights, b, replacement=True, generator=generator)
    count = cosine_mask_count(torch.rand(b, generator=generator, device=dev), t)  # (B,)
    p_full = level_probability(p_full_mask, q, "p_full_mask").to(dev)[level]  # (B,)
    if bool((p_full > 0).any()):
        full = torch.rand(b, generator=generator, device=dev) < p_full
        count = torch.where(full, torch.full_like(count, t), count)
    ranks = torch.rand(b, t, generator=generator, device=dev).argsort(1).argsort(1)  # random order
    masked = ranks < count[:, None]  # (B, T): exactly count positions
    p_pre = level_probability(p_prefix, q, "p_prefix").to(dev)[level]  # (B,)
    if bool((p_pre > 0).any()):
        lo, hi = (prefix_frames(f, t) for f in PREFIX_FRACTION)
        given = torch.randint(lo, hi + 1, (b,), generator=generator, device=dev)  # (B,) frames given
        cont = torch.rand(b, generator=generator, device=dev) < p_pre
        suffix = torch.arange(t, device=dev)[None, :] >= given[:, None]  # (B, T)
        masked = torch.where(cont[:, None], suffix, masked)
    lv = torch.arange(q, device=dev)[None, :, None]  # (1, Q, 1)
    hide = (lv > level[:, None, None]) | ((lv == level[:, None, None]) & masked[:, None, :])
    return MaskedTarget(target.masked_fill(hide, mask_id), level, masked)


def drop_conditions(instrument: torch.Tensor, p_context: float, p_instrument: float,
                    generator: torch.Generator | None = None,
                    instrument_free: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent condition dropout. Returns ``(drop_context (B,) bool, instrument (B,))`` with
    dropped instruments replaced by the null entry. ``instrument_free`` ``(B,)`` bool: examples whose
    instrument is always dropped (they train the instrument-free branch p(t|a) alone); the draws are
    the same with or without it."""
    b = instrument.shape[0]
    drop_ctx = torch.rand(b, generator=generator, device=instrument.device) < p_context
    drop_inst = torch.rand(b, generator=generator, device=instrument.device) < p_instrument
    if instrument_free is not None:
        drop_inst = drop_inst | instrument_free.to(drop_inst.device, torch.bool)
    return drop_ctx, torch.where(drop_inst, torch.full_like(instrument, NULL_ID), instrument)
