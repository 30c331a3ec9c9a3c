"""Masked-token accuracy per level, as a torchmetrics Metric (synced across processes)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


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
