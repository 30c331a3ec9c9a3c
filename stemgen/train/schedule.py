"""The tri-stage learning-rate schedule of the paper (section 3.1: linear warm-up, hold, exponential decay)."""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)


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


def fit_schedule(warmup_steps: int, hold_steps: int, decay_steps: int, max_steps: int | None) -> tuple[int, int, int]:
    """The phases to train with for a run of ``max_steps`` optimizer steps (-1/None: unbounded).

    A warm-up longer than half the run would leave it at a tiny learning rate (the paper's 10k
    steps of warm-up in a 20-step run: the loss never moves), so then all three phases are scaled
    by ``max_steps / (warmup + hold + decay)`` (at least one step each), with a warning that says
    so. Otherwise the phases are returned unchanged.
    """
    if not max_steps or max_steps < 0 or warmup_steps <= max_steps // 2:
        return warmup_steps, hold_steps, decay_steps
    scale = max_steps / (warmup_steps + hold_steps + decay_steps)
    fitted = tuple(max(1, round(n * scale)) for n in (warmup_steps, hold_steps, decay_steps))
    log.warning("the learning-rate warm-up (%d steps) is longer than half of max_steps=%d: the schedule "
                "(warm-up, hold, decay) is scaled from (%d, %d, %d) to (%d, %d, %d) steps. Set "
                "--model.warmup_steps/--model.hold_steps/--model.decay_steps to choose it yourself.",
                warmup_steps, max_steps, warmup_steps, hold_steps, decay_steps, *fitted)
    return fitted
