"""The eager reference decoder: level by level, step by step (paper section 2.1.1).

Built from the pure functions in :mod:`stemgen.sampling.steps`. Guidance runs the three branches
of paper eq. 3 as one batch: p(t|a) (instrument dropped), p(t|i) (context dropped) and p(t)
(both dropped). ``guidance=False`` is the naive setting: one fully conditioned pass p(t|a,i).
Shapes: B batch, Q levels, T frames, V codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..instruments import NULL_ID
from .steps import causal_bias_scores, commit, guided_log_probs, gumbel_noise, masked_counts, sample_candidates


@dataclass
class SamplingSettings:
    """Decoding settings; defaults are the paper's best (section 3.2.1)."""

    steps: tuple[int, ...] = (128, 64, 32, 32)
    guidance: bool = True
    lambda_context: float = 3.0
    lambda_instrument: float = 3.0
    temperature: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    w_confidence: float = 0.1
    w_position: float = 0.1
    w_random: float = 1.0


@torch.no_grad()
def level_log_probs(model, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor, level: int,
                    settings: SamplingSettings) -> torch.Tensor:
    """Log-probabilities ``(B, T, V)`` of level ``level`` given the current target tokens."""
    b = context.shape[0]
    if not settings.guidance:
        return model(context, target, instrument, level=level).float().log_softmax(-1)
    null_inst = torch.full_like(instrument, NULL_ID)
    ctx3, tgt3 = context.repeat(3, 1, 1), target.repeat(3, 1, 1)
    inst3 = torch.cat([null_inst, instrument, null_inst])
    drop3 = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(2 * b, dtype=torch.bool)]).to(context.device)
    logits = model(ctx3, tgt3, inst3, drop_context=drop3, level=level)  # (3B, T, V)
    a, i, u = logits.split(b)
    return guided_log_probs(a, i, u, settings.lambda_context, settings.lambda_instrument)


@torch.no_grad()
def decode_tokens(model, context: torch.Tensor, instrument: torch.Tensor, settings: SamplingSettings | None = None,
                  generator: torch.Generator | None = None, prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Generate target tokens ``(B, Q, T)`` for ``context (B, Q, T)`` and ``instrument (B,)``.

    ``prefix`` (``(B, Q, T)`` with the model's MASK id where free) fixes known target tokens
    (continuation, inpainting); they are never changed.
    """
    settings = settings or SamplingSettings()
    cfg = model.cfg
    b, q_levels, t = context.shape
    if len(settings.steps) != q_levels or len(settings.temperature) != q_levels:
        raise ValueError(f"steps and temperature need one value per level ({q_levels}); got "
                         f"{len(settings.steps)} and {len(settings.temperature)}.")
    target = (torch.full_like(context, cfg.mask_id) if prefix is None else prefix.clone())
    for q in range(q_levels):
        total = (target[:, q] == cfg.mask_id).sum(-1)  # (B,) positions this level decodes
        for remain_count in masked_counts(t, settings.steps[q]):
            still = target[:, q] == cfg.mask_id
            if not still.any():
                break
            remain = (total * remain_count) // t  # (B,): the schedule over this example's free positions
            logp = level_log_probs(model, context, target, instrument, q, settings)
            cand, conf = sample_candidates(logp, settings.temperature[q], gumbel_noise(logp.shape, generator, logp.device))
            u = torch.rand(b, t, generator=generator, device=logp.device)
            scores = causal_bias_scores(conf, u, settings.w_confidence, settings.w_position, settings.w_random)
            target[:, q] = commit(target[:, q], cand, scores, cfg.mask_id, remain)
    return target
