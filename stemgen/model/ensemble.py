"""Several trained models of one token contract used as one: an ensemble.

Two training runs of one recipe differ in what they make of a context by more than any recipe
change measured on the demo model (docs/listening.md); the members of an ensemble err
differently, and their combined distribution keeps what they agree on. A member can also serve one
role alone: an instrument (``routes``) or the instrument-free guidance branches (``null_members``).
Shapes: B batch, Q levels, T frames, V codes, K members.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..instruments import NULL_ID
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
                 routes: dict[int, Sequence[int]] | None = None, null_members: Sequence[int] | None = None):
        """``routes``: instrument class id -> the indices (from 0) of the members that answer for
        that instrument alone (e.g. the drums from one member, where combining sharpens their
        silence); instruments not named are answered by all. See :meth:`for_instrument`.

        ``null_members``: the indices of the members that answer the rows whose instrument is
        ``NULL_ID`` (the guidance branches p(t|a) and p(t)), and only those rows; every other row
        is answered by the other members. A network trained for the instrument-free branch can so
        serve it without touching what the conditioned model generates (docs/listening.md)."""
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member model.")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}.")
        check_contract([m.cfg for m in members])
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.null_members = tuple(int(k) for k in (null_members or ()))
        if (any(not 0 <= k < len(members) for k in self.null_members)
                or len(set(self.null_members)) != len(self.null_members) or len(self.null_members) >= len(members)):
            raise ValueError(f"null-instrument members {list(self.null_members)}: give distinct member indices from 0 "
                             f"to {len(members) - 1}, leaving at least one member for the conditioned rows.")
        #: the members answering every row with an instrument (all but the null-instrument ones)
        self.main_members = tuple(k for k in range(len(members)) if k not in self.null_members)
        self.routes = {int(i): tuple(int(k) for k in ks) for i, ks in (routes or {}).items()}
        for inst, ks in self.routes.items():
            if not ks or any(k not in self.main_members for k in ks) or len(set(ks)) != len(ks):
                raise ValueError(f"instrument {inst} is routed to members {list(ks)}: give distinct member "
                                 f"indices from {list(self.main_members)} (not the null-instrument members).")

    def for_instrument(self, instrument: int) -> "EnsembleModel":
        """The ensemble that generates ``instrument`` (a class id): the members :attr:`routes` names
        for it (with the null-instrument members, if any), sharing their weights with this one, or
        this ensemble where it names none. One stem's guidance branches must all come from the same
        members, so the choice is made per instrument before decoding, not per row of a batch (a
        null-instrument branch names none)."""
        ks = self.routes.get(int(instrument))
        if ks is None or ks == self.main_members:
            return self
        keep = list(ks) + list(self.null_members)
        return EnsembleModel([self.members[k] for k in keep], self.combine,
                             null_members=range(len(ks), len(keep)))

    def conditioned(self) -> "EnsembleModel":
        """This ensemble without its null-instrument members (itself where it has none), sharing
        their weights: for a sampler that runs no null-instrument row, so that nothing, a compiled
        step included, runs the members it would never ask."""
        if not self.null_members:
            return self
        return EnsembleModel([self.members[k] for k in self.main_members], self.combine)

    def _combined(self, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """A set of members' combined answer from their ``outputs``: one member's logits as they
        are (so a one-member set is exactly that member), several members' log-probabilities."""
        return outputs[0] if len(outputs) == 1 else combine_log_probs(outputs, self.combine)

    def _answer(self, ks: Sequence[int], *args) -> torch.Tensor:
        return self._combined([self.members[k](*args) for k in ks])

    def _one_set(self, null: torch.Tensor) -> tuple[int, ...] | None:
        """The members that answer every row of a batch whose null-instrument rows are ``null (B,)``
        where one set does (no null members, or every row or none a null-instrument one, outside a
        compiled graph, which cannot branch on values); None where each set answers its own rows."""
        if not self.null_members:
            return self.main_members
        if torch.compiler.is_compiling():
            return None
        if bool(null.all()):
            return self.null_members
        return None if bool(null.any()) else self.main_members

    @property
    def cfg(self) -> ModelConfig:
        """The first member's config: the token contract (levels, codes, mask id) all share."""
        return self.members[0].cfg

    def forward(self, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor,
                drop_context: torch.Tensor | None = None, level: int | torch.Tensor | None = None,
                fused: bool = False) -> torch.Tensor:
        """Log-probabilities ``(B, Q, T, V)``, or ``(B, T, V)`` for one ``level``, float32 (a
        one-member answer: that member's logits); the arguments are :meth:`StemGenModel.forward`'s.
        With :attr:`null_members`, each row is answered by its own members: a batch with no
        null-instrument row never runs the null-instrument members."""
        args = (context, target, instrument, drop_context, level, fused)
        null = instrument == NULL_ID  # (B,)
        one = self._one_set(null)
        if one is not None:
            return self._answer(one, *args)
        # static shapes: both sets on every row, each row taking its own (a sampler that runs no
        # null-instrument row is given :meth:`conditioned` instead, which runs the main members alone)
        if torch.compiler.is_compiling():
            return _pick(null, self._answer(self.main_members, *args), self._answer(self.null_members, *args))
        out = None
        rows = null.nonzero().flatten(), (~null).nonzero().flatten()
        for ks, r in zip((self.null_members, self.main_members), rows):
            part = self._answer(ks, context[r], target[r], instrument[r],
                                None if drop_context is None else drop_context[r], level, fused)
            if out is None:
                out = part.new_empty((len(null), *part.shape[1:]), dtype=torch.float32)
            out[r] = part.float()
        return out

    def hidden(self, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor,
               drop_context: torch.Tensor | None = None, fused: bool = False) -> tuple:
        """Which rows are null-instrument ones (``(B,)`` bool) and each member's hidden states
        ``(B, T, D_k)``, for :meth:`level_logits`: every member on every row, or None for the
        members of a set that answers no row of this batch."""
        null = instrument == NULL_ID
        needed = self._one_set(null) or range(len(self.members))
        return null, tuple(m.hidden(context, target, instrument, drop_context, fused) if k in needed else None
                           for k, m in enumerate(self.members))

    def level_logits(self, h: tuple, level: torch.Tensor) -> torch.Tensor:
        """Combined log-probabilities ``(B, T, V)`` (as :meth:`forward`), each example under its own ``level (B,)``."""
        null, hs = h

        def answer(ks):
            return self._combined([self.members[k].level_logits(hs[k], level) for k in ks])

        main = None if hs[self.main_members[0]] is None else answer(self.main_members)
        branch = None if not self.null_members or hs[self.null_members[0]] is None else answer(self.null_members)
        if main is None or branch is None:  # one set answered every row
            return branch if main is None else main
        return _pick(null, main, branch)

    def cast_matmul_weights(self, dtype: torch.dtype) -> "EnsembleModel":
        for m in self.members:
            m.cast_matmul_weights(dtype)
        return self

    def num_parameters(self) -> int:
        return sum(m.num_parameters() for m in self.members)


def _pick(null: torch.Tensor, main: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """Each row's answer, float32: ``branch`` where ``null (B,)`` is set, else ``main``."""
    return torch.where(null.view(-1, *[1] * (main.dim() - 1)), branch.float(), main.float())
