"""Validation metrics as torchmetrics Metrics (synced across processes): masked-token accuracy per
level, and listening (how much the context lowers the cross-entropy)."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from ..model.loss import LISTENING_CONDITIONS


class MaskedTokenAccuracy(Metric):
    """Accumulates argmax hits and masked-token counts per level; ``compute()`` -> ``(Q,)``."""

    full_state_update = False

    def __init__(self, num_levels: int, **kwargs):
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.zeros(num_levels, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(num_levels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, correct: torch.Tensor, count: torch.Tensor) -> None:
        self.correct += correct.to(self.correct)
        self.total += count.to(self.total)

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total.clamp_min(1).float()


class Listening(Metric):
    """Accumulates :func:`stemgen.model.loss.listening_losses` over batches.

    ``compute()`` returns a dict of nats per token: ``ce/CONDITION`` for each of
    :data:`~stemgen.model.loss.LISTENING_CONDITIONS`, ``context_gain`` (level 0, every target token
    masked: mismatched minus true context; what the context alone tells the model) and
    ``context_gain_train_mask`` (the same at the training masking) and ``context_gain_continuation``
    (the same for level 0 given its first quarter: what the context adds to a prefix the model
    could continue) and ``alignment_gain`` (level 0, every target token masked: the example's own
    context rolled half a window along time minus the aligned one; what *when* the context plays
    tells the model, beyond which music it is). NaN where nothing was scored.
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        k = len(LISTENING_CONDITIONS)
        self.add_state("nll", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, nll: torch.Tensor, count: torch.Tensor) -> None:
        self.nll += nll.to(self.nll)
        self.count += count.to(self.count)

    def compute(self) -> dict[str, torch.Tensor]:
        ce = self.nll / self.count.double()  # NaN for 0 / 0
        out = {f"ce/{name}": ce[i].float() for i, name in enumerate(LISTENING_CONDITIONS)}
        out["context_gain"] = out["ce/mismatched"] - out["ce/true"]
        out["context_gain_train_mask"] = out["ce/train_mismatched"] - out["ce/train_true"]
        out["context_gain_continuation"] = out["ce/continuation_mismatched"] - out["ce/continuation_true"]
        out["alignment_gain"] = out["ce/shifted"] - out["ce/true"]
        return out
