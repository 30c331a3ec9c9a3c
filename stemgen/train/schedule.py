"""The tri-stage learning-rate schedule of the paper (SPEC section 5)."""

from __future__ import annotations

import math


def tri_stage_lr_scale(step: int, warmup_steps: int = 10_000, hold_steps: int = 50_000,
                       decay_steps: int = 300_000, final_scale: float = 0.01) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Linear warm-up from 0 to 1 over ``warmup_steps``; 1 for ``hold_steps``; then exponential
    decay from 1 to ``final_scale`` over ``decay_steps``; ``final_scale`` afterwards.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    step -= warmup_steps
    if step < hold_steps:
        return 1.0
    step -= hold_steps
    if step < decay_steps:
        return math.exp(math.log(final_scale) * step / decay_steps)
    return final_scale
