"""Several trained models of one token contract used as one: an ensemble.

Two training runs of one recipe differ in what they make of a context by more than any recipe
change measured on the demo model (docs/listening.md); the members of an ensemble err
differently, and their combined distribution keeps what they agree on. Shapes: B batch, Q levels,
T frames, V codes, K members.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .transformer import ModelConfig, StemGenModel

#: how the members' distributions at a position are combined
COMBINES = ("mixture", "product")
#: the config fields every member must share: they define the tokens and conditions a model reads
CONTRACT = ("num_levels", "cardinality", "num_instruments", "context_chroma")


def combine_log_probs(logits: Sequence[torch.Tensor], combine: str) -> torch.Tensor:
    """The ensemble's log-probabilities ``(..., V)`` (float32, normalised) from the members'
    logits, each ``(..., V)``.

    ``"mixture"``: the mean of the members' probabilities, ``log(1/K sum_k p_k)``; it keeps every
    member's modes. ``"product"``: the normalised geometric mean, ``softmax(1/K sum_k log p_k)``;
    it is sharper where the members agree and flatter where they do not.
    """
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}.")
    log_probs = torch.stack([lg.float().log_softmax(-1) for lg in logits])  # (K, ..., V)
    if combine == "mixture":
        return torch.logsumexp(log_probs, 0) - math.log(len(logits))
    return log_probs.mean(0).log_softmax(-1)


def check_contract(configs: Sequence[ModelConfig]) -> None:
    """Raise ``ValueError`` unless every config reads the tokens and instruments the first one reads
    (:data:`CONTRACT`): members of one ensemble must be trained on one codec with one instrument table."""
    first = configs[0]
    for k, cfg in enumerate(configs[1:], 2):
        differ = [f for f in CONTRACT if getattr(cfg, f) != getattr(first, f)]
        if differ:
            raise ValueError(
                f"ensemble member {k} reads other tokens than member 1: "
                + ", ".join(f"{f} {getattr(cfg, f)} vs {getattr(first, f)}" for f in differ)
                + "; members must be trained on one codec's tokens with one instrument table.")


class EnsembleModel(nn.Module):
    """``members`` (at least one :class:`StemGenModel`, any shapes, one token contract) answering
    as one model: :meth:`forward` gives the combined log-probabilities where a single model gives
    logits (every consumer takes a log-softmax of them, which leaves log-probabilities as they
    are), so the sampler, the guidance branches and the listening metrics use it unchanged, at K
    forward passes per call.
    """

    def __init__(self, members: Sequence[StemGenModel], combine: str = "mixture",
                 routes: dict[int, Sequence[int]] | None = None):
        """``routes``: instrument class id -> the indices (from 0) of the members that answer for
        that instrument alone (e.g. the drums from one member, where combining sharpens their
        silence); instruments not named are answered by all. See :meth:`for_instrument`."""
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member model.")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}.")
        check_contract([m.cfg for m in members])
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.routes = {int(i): tuple(int(k) for k in ks) for i, ks in (routes or {}).items()}
        for inst, ks in self.routes.items():
            if not ks or any(not 0 <= k < len(members) for k in ks) or len(set(ks)) != len(ks):
                raise ValueError(f"instrument {inst} is routed to members {list(ks)}: give distinct member "
                                 f"indices from 0 to {len(members) - 1}.")

    def for_instrument(self, instrument: int) -> "EnsembleModel":
        """The ensemble that generates ``instrument`` (a class id): the members :attr:`routes` names
        for it, sharing their weights with this one, or this ensemble where it names none. One
        stem's guidance branches must all come from the same members, so the choice is made per
        instrument before decoding, not per row of a batch (a null-instrument branch names none)."""
        ks = self.routes.get(int(instrument))
        if ks is None or ks == tuple(range(len(self.members))):
            return self
        return EnsembleModel([self.members[k] for k in ks], self.combine)

    @property
    def cfg(self) -> ModelConfig:
        """The first member's config: the token contract (levels, codes, mask id) all share."""
        return self.members[0].cfg

    def forward(self, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor,
                drop_context: torch.Tensor | None = None, level: int | torch.Tensor | None = None,
                fused: bool = False) -> torch.Tensor:
        """Log-probabilities ``(B, Q, T, V)``, or ``(B, T, V)`` for one ``level``, float32; the
        arguments are :meth:`StemGenModel.forward`'s."""
        return combine_log_probs([m(context, target, instrument, drop_context, level, fused)
                                  for m in self.members], self.combine)

    def hidden(self, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor,
               drop_context: torch.Tensor | None = None, fused: bool = False) -> tuple[torch.Tensor, ...]:
        """Each member's hidden states ``(B, T, D_k)``, for :meth:`level_logits`."""
        return tuple(m.hidden(context, target, instrument, drop_context, fused) for m in self.members)

    def level_logits(self, h: tuple[torch.Tensor, ...], level: torch.Tensor) -> torch.Tensor:
        """Combined log-probabilities ``(B, T, V)``, each example under its own ``level (B,)``."""
        return combine_log_probs([m.level_logits(hk, level) for m, hk in zip(self.members, h)], self.combine)

    def cast_matmul_weights(self, dtype: torch.dtype) -> "EnsembleModel":
        for m in self.members:
            m.cast_matmul_weights(dtype)
        return self

    def num_parameters(self) -> int:
        return sum(m.num_parameters() for m in self.members)
