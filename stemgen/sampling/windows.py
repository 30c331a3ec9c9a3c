"""Generation longer than the model's training window: overlapping windows.

Level by level, each window is decoded with everything already decoded in it (the overlap with
the previous window, and any tokens the caller fixed) given as prefix, so the stem continues
across window boundaries instead of restarting. Shapes: B batch, Q levels, T frames.
"""

from __future__ import annotations

from typing import Optional

import torch

from .decode import Generators, Silence, StepCallback, decode_level
from .settings import SamplingSettings


def window_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """First frame of each window: stride ``window - overlap``, the last window ending at
    ``num_frames`` (so every window is full length when ``num_frames >= window``)."""
    if window < 1:
        raise ValueError(f"window must be at least one frame, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window) frames, got {overlap} for a window of {window}")
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window, window - overlap))
    return starts + [num_frames - window]


@torch.no_grad()
def decode_windows(model, context: torch.Tensor, instrument: torch.Tensor, window: int, overlap: int,
                   settings: SamplingSettings | None = None, generator: Generators = None,
                   prefix: torch.Tensor | None = None, callback: Optional[StepCallback] = None,
                   silence: Silence = None) -> torch.Tensor:
    """Generate target tokens ``(B, Q, T)`` for a context of any length ``T``.

    ``prefix`` ``(B, Q, T)`` fixes target tokens (the model's MASK id where free): a stem to
    continue, or a stem with a span masked to regenerate (inpainting). Windows with nothing to
    decode are skipped. ``callback(level, step, steps)`` counts steps over all windows of a level.
    ``silence``: the codec's silence code per level, for the silence gate (see ``decode_level``).
    """
    levels = model.cfg.num_levels  # the context may carry its chroma row after them
    settings = (settings or SamplingSettings()).check(levels)
    mask_id = model.cfg.mask_id
    target = torch.full_like(context[:, :levels], mask_id) if prefix is None else prefix.clone()
    starts = window_starts(context.shape[-1], window, overlap)
    for q in range(levels):
        steps = int(settings.steps[q])
        for k, start in enumerate(starts):
            span = slice(start, start + window)

            def window_callback(level, step, _steps, done=k * steps):
                if callback is not None:
                    callback(level, done + step, steps * len(starts))

            if (target[:, q, span] == mask_id).any():
                target[..., span] = decode_level(model, context[..., span], target[..., span], instrument, q,
                                                 settings, generator, window_callback, silence)
            else:
                window_callback(q, steps, steps)
    return target
