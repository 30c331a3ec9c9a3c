"""The training objective: cross-entropy on the masked positions of the trained level."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .masking import drop_conditions, soundstorm_mask
from .transformer import StemGenModel


@dataclass
class LossOutput:
    """``loss``: mean cross-entropy over masked tokens; ``correct``/``count`` ``(Q,)``: argmax hits
    and masked tokens per level (for masked-token accuracy)."""

    loss: torch.Tensor
    correct: torch.Tensor
    count: torch.Tensor


def masked_token_loss(model: StemGenModel, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor,
                      p_drop_context: float = 0.1, p_drop_instrument: float = 0.1,
                      generator: torch.Generator | None = None, level: int | None = None) -> LossOutput:
    """Mask ``target (B, Q, T)``, drop conditions, and score the masked tokens of each example's
    level (drawn per example, or ``level`` for all)."""
    q = model.cfg.num_levels
    masked = soundstorm_mask(target, model.cfg.mask_id, generator, level)
    drop_ctx, inst = drop_conditions(instrument, p_drop_context, p_drop_instrument, generator)
    h = model.hidden(context, masked.inputs, inst, drop_ctx)  # (B, T, D)
    b_idx, t_idx = masked.loss_mask.nonzero(as_tuple=True)  # masked positions
    levels = masked.level[b_idx]  # (N,)
    labels = target[b_idx, levels, t_idx]  # (N,)
    logits = model.level_logits(h[b_idx, t_idx], levels)  # (N, V)
    loss = F.cross_entropy(logits.float(), labels)
    with torch.no_grad():
        hit = (logits.argmax(-1) == labels).long()
        correct = torch.zeros(q, dtype=torch.long, device=hit.device).index_add_(0, levels, hit)
        count = torch.bincount(levels, minlength=q)
    return LossOutput(loss, correct, count)
