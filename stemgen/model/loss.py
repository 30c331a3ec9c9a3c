"""The training objective (cross-entropy on the masked positions of the trained level) and the
listening measurement (how much the context lowers that cross-entropy)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..instruments import NULL_ID
from .masking import drop_conditions, prefix_frames, soundstorm_mask
from .transformer import StemGenModel


@dataclass
class LossOutput:
    """``loss``: mean cross-entropy over masked tokens; ``correct``/``count`` ``(Q,)``: argmax hits
    and masked tokens per level (for masked-token accuracy)."""

    loss: torch.Tensor
    correct: torch.Tensor
    count: torch.Tensor


def scored_cross_entropy(model: StemGenModel, context: torch.Tensor, inputs: torch.Tensor, instrument: torch.Tensor,
                         drop_context: torch.Tensor, level: torch.Tensor,
                         target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (nats, float32) and argmax hit (bool), both ``(B, T)``, of every position of
    each example's ``level (B,)`` against ``target (B, Q, T)``, for the model given target
    ``inputs (B, Q, T)`` (MASK ids where hidden). Callers weight by the positions they score.

    Nothing depends on values (no boolean indexing, no host synchronisation): the function
    compiles into one graph, the head and the log-softmax fused by the compiler.
    """
    t = target.shape[-1]
    h = model.hidden(context, inputs, instrument, drop_context)  # (B, T, D)
    logits = model.level_logits(h, level)  # (B, T, V)
    labels = target.gather(1, level[:, None, None].expand(-1, 1, t)).squeeze(1)  # (B, T)
    ce = F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")  # (B, T)
    return ce, logits.argmax(-1) == labels


def masked_loss(model: StemGenModel, context: torch.Tensor, inputs: torch.Tensor, instrument: torch.Tensor,
                drop_context: torch.Tensor, level: torch.Tensor, loss_mask: torch.Tensor,
                target: torch.Tensor) -> LossOutput:
    """The training step's model work: mean cross-entropy over the ``loss_mask (B, T)`` positions
    of each example's ``level (B,)``, and hits/counts per level. Pure tensor code with static
    shapes, so ``torch.compile(masked_loss, fullgraph=True)`` compiles it whole (the random masks
    and dropouts are drawn outside, by :func:`masked_token_loss`)."""
    ce, hit = scored_cross_entropy(model, context, inputs, instrument, drop_context, level, target)
    weight = loss_mask.to(ce.dtype)
    loss = (ce * weight).sum() / weight.sum().clamp_min(1.0)
    q = model.cfg.num_levels
    with torch.no_grad():
        per_level = torch.zeros(q, dtype=torch.long, device=level.device)
        correct = per_level.index_add(0, level, (hit & loss_mask).sum(1))
        count = per_level.index_add(0, level, loss_mask.sum(1))
    return LossOutput(loss, correct, count)


def masked_token_loss(model: StemGenModel, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor,
                      p_drop_context: float = 0.1, p_drop_instrument: float = 0.1,
                      generator: torch.Generator | None = None, level: int | None = None,
                      p_full_mask: float | Sequence[float] = 0.0, loss_fn=masked_loss, level_weights=None,
                      p_prefix: float | Sequence[float] = 0.0, instrument_free: torch.Tensor | None = None) -> LossOutput:
    """Mask ``target (B, Q, T)``, drop conditions, and score the masked tokens of each example's
    level (drawn per example, or ``level`` for all; see :func:`soundstorm_mask` for
    ``p_full_mask``, ``level_weights`` and ``p_prefix``; :func:`drop_conditions` for ``instrument_free``
    ``(B,)`` bool). ``loss_fn``: :func:`masked_loss` or a compiled copy of it."""
    masked = soundstorm_mask(target, model.cfg.mask_id, generator, level, p_full_mask, level_weights, p_prefix)
    drop_ctx, inst = drop_conditions(instrument, p_drop_context, p_drop_instrument, generator, instrument_free)
    return loss_fn(model, context, masked.inputs, inst, drop_ctx, masked.level, masked.loss_mask, target)


#: the conditions of :func:`listening_losses`. At level 0 with every target token masked (the
#: context is the only source of what to play): ``true`` p(t|a,i), ``mismatched`` (another song's
#: context, the true instrument), and the guidance branches ``null_instrument`` p(t|a),
#: ``null_context`` p(t|i), ``null_both`` p(t). At the training masking (a level and a cosine
#: masking ratio drawn per example): ``train_true`` and ``train_mismatched``. As a continuation (level 0
#: given its first quarter, scored on the rest, as generation continues a window's overlap):
#: ``continuation_true`` and ``continuation_mismatched``. And ``shifted``: level 0 all masked with
#: the example's own context rolled half a window along time (the same music, out of line).
LISTENING_CONDITIONS = ("true", "mismatched", "null_instrument", "null_context", "null_both",
                        "train_true", "train_mismatched", "continuation_true", "continuation_mismatched", "shifted")

#: the share of the window a continuation condition is given (1 s of a 4 s window: the default overlap)
CONTINUATION_GIVEN = 0.25


def mismatched_order(song_index: torch.Tensor | None, batch: int, device=None) -> torch.Tensor:
    """For each example, the index of another example whose context it borrows: the next one
    (cyclically) from a different song, ``-1`` where the whole batch is one song. Without song
    indices every example is taken to be its own song (the next example)."""
    if song_index is None:
        return torch.roll(torch.arange(batch, device=device), -1) if batch > 1 else torch.full((1,), -1, device=device)
    songs = song_index.tolist()
    order = []
    for i in range(batch):
        j = next((j % batch for j in range(i + 1, i + batch) if songs[j % batch] != songs[i]), -1)
        order.append(j)
    return torch.tensor(order, device=song_index.device)


@torch.no_grad()
def listening_losses(model: StemGenModel, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor,
                     song_index: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy (nats) and token counts under each of :data:`LISTENING_CONDITIONS`.

    ``context``/``target`` ``(B, Q, T)``, ``instrument`` ``(B,)``, ``song_index`` ``(B,)`` (which
    song each example comes from: a mismatched context is always another song's). Returns two
    ``(K,)`` tensors (float64 sums, int64 counts), in the order of the conditions. The mean of a
    condition is ``sums / counts``; the *context gain* is mismatched minus true: how many nats the
    right context saves on each token.
    """
    b, q, t = target.shape
    dev = target.device
    mask_id = model.cfg.mask_id
    partner = mismatched_order(song_index, b, dev)
    # examples without a partner from another song are left out of every condition, so that all
    # conditions score the same tokens
    paired = (partner >= 0)[:, None]  # (B, 1)
    other = context[partner.clamp_min(0)]  # (B, Q, T) another song's context where paired
    null_inst = torch.full_like(instrument, NULL_ID)
    no_drop, drop = torch.zeros(b, dtype=torch.bool, device=dev), torch.ones(b, dtype=torch.bool, device=dev)

    def nll(ctx, inputs, inst, drop_ctx, level, loss_mask):
        ce, _ = scored_cross_entropy(model, ctx, inputs, inst, drop_ctx, level, target)
        return (ce.double() * loss_mask).sum(), int(loss_mask.sum())

    all_masked = torch.full_like(target, mask_id)
    level0 = torch.zeros(b, dtype=torch.long, device=dev)
    every = paired.expand(b, t)
    masked = soundstorm_mask(target, mask_id, generator)
    trained = masked.loss_mask & paired
    given = prefix_frames(CONTINUATION_GIVEN, t)
    rest = torch.arange(t, device=dev)[None, :] >= given  # (1, T)
    cont_inputs = all_masked.clone()
    cont_inputs[:, 0] = target[:, 0].masked_fill(rest, mask_id)
    cont = rest & paired  # (B, T)
    runs = {
        "true": (context, all_masked, instrument, no_drop, level0, every),
        "mismatched": (other, all_masked, instrument, no_drop, level0, every),
        "null_instrument": (context, all_masked, null_inst, no_drop, level0, every),
        "null_context": (context, all_masked, instrument, drop, level0, every),
        "null_both": (context, all_masked, null_inst, drop, level0, every),
        "train_true": (context, masked.inputs, instrument, no_drop, masked.level, trained),
        "train_mismatched": (other, masked.inputs, instrument, no_drop, masked.level, trained),
        "continuation_true": (context, cont_inputs, instrument, no_drop, level0, cont),
        "continuation_mismatched": (other, cont_inputs, instrument, no_drop, level0, cont),
        # the example's own context rolled half a window along time: the same music, misaligned
        "shifted": (context.roll(t // 2, -1), all_masked, instrument, no_drop, level0, every),
    }
    sums, counts = zip(*(nll(*runs[name]) for name in LISTENING_CONDITIONS))
    return torch.stack(sums), torch.tensor(counts, dtype=torch.long, device=dev)
