"""Iterative decoding, level by level and step by step (paper section 2.1.1).

A step is one forward pass and the step ops after it (:mod:`stemgen.sampling.fused`: the fused
kernels, or the reference functions of :mod:`stemgen.sampling.steps`). Guidance runs the three
branches of paper eq. 3 as one batch: p(t|a) (instrument dropped), p(t|i) (context dropped) and
p(t) (both dropped). ``guidance=False`` is the naive setting: one fully conditioned pass
p(t|a,i). Shapes: B batch, Q levels, T frames, V codes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence, Union

import torch

from ..instruments import NULL_ID
from . import fused
from .settings import SamplingSettings
from .steps import branch_log_probs, hashed_uniform, level_schedule

# callback(level, step, steps_of_level) after every committed step
StepCallback = Callable[[int, int, int], None]
#: where the noise comes from: one generator for the whole batch, or one per example (each
#: example's stem then depends only on its own generator, whatever else is in the batch)
Generators = Union[torch.Generator, Sequence[torch.Generator], None]
#: the codec's silence code per level (``Codec.silence_codes()``), or None: no silence gate
Silence = Optional[Sequence[int]]


def level_logits(model, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor,
                 level: "int | torch.Tensor", guidance: bool, form: str = "paper",
                 unconditional: bool = True, fused: bool = False, shift: int = 0) -> torch.Tensor:
    """Logits of level ``level``: ``(B, T, V)`` for p(t|a,i), or with guidance the three branches
    stacked as ``(3B, T, V)`` and run as one batch: p(t|a), p(t|i), p(t) for the paper's eq. 3
    (``form="paper"``), p(t|a,i), p(t|i), p(t) for nested guidance (``form="nested"``),
    p(t|a,i), p(t|a',i), p(t) with ``a'`` the context rolled by ``shift`` frames along time
    (``form="shifted"``).

    ``unconditional=False``: the p(t) branch is not run (a third less work) and its logits are
    zeros, for when the step ops weight it 0 (``SamplingSettings.unconditional_weight()``: nested
    guidance with lambda_i = 1); zeros keep its log-probabilities finite, so 0 times them is 0.
    ``fused``: the model's fused inference attention (the "fused" sampler)."""
    if not guidance:
        return model(context, target, instrument, level=level, fused=fused)
    b, n = context.shape[0], 3 if unconditional else 2
    null_inst = torch.full_like(instrument, NULL_ID)
    tgt_n = target.repeat(n, 1, 1)
    first = null_inst if form == "paper" else instrument
    inst_n = torch.cat([first, instrument, null_inst][:n])
    keep = torch.zeros(b, dtype=torch.bool, device=context.device)
    if form == "shifted":  # the reference branch hears the same music, misaligned in time
        ctx_n = torch.cat([context, context.roll(shift, -1), context][:n])
        drop_n = torch.cat([keep, keep, ~keep][:n])
    else:
        ctx_n = context.repeat(n, 1, 1)
        drop_n = torch.cat([keep, ~keep, ~keep][:n])
    logits = model(ctx_n, tgt_n, inst_n, drop_context=drop_n, level=level, fused=fused)  # (nB, T, V)
    if not unconditional:
        logits = torch.cat([logits, torch.zeros_like(logits[:b])])
    return logits  # (3B, T, V)


def context_shift_frames(settings: SamplingSettings, frames: int) -> int:
    """How many frames the "shifted" guidance form rolls the context by in a window of ``frames``
    (``settings.context_shift`` of it, rounded); 0 for the other forms."""
    return int(round(settings.context_shift * frames)) if settings.guidance_form == "shifted" else 0


@torch.no_grad()
def level_log_probs(model, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor, level: int,
                    settings: SamplingSettings) -> torch.Tensor:
    """Log-probabilities ``(B, T, V)`` of level ``level`` given the current target tokens."""
    logits = level_logits(model, context, target, instrument, level, settings.guidance, settings.guidance_form,
                          settings.unconditional_weight() != 0.0, settings.sampler == "fused",
                          context_shift_frames(settings, context.shape[-1]))
    return branch_log_probs(logits, context.shape[0], *settings.branch_weights())


def decode_step(model, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor, seeds: torch.Tensor,
                uniform: torch.Tensor, remain: torch.Tensor, level: torch.Tensor, temperature: float,
                settings: SamplingSettings, silence_code: int = -1) -> torch.Tensor:
    """One decoding step of level ``level`` (a 0-dim long tensor on the device, so that one
    compiled graph serves every level): forward pass, then candidates, ranking and commit.

    ``seeds (B,)`` (int64 in [0, 2^32)) give the candidates' uniform noise ``(B, T, V)``
    (:func:`~stemgen.sampling.steps.hashed_uniform`, made inside the step, where it is used);
    ``uniform (B, T)`` in [0, 1) is the ranking's noise; ``remain (B,)`` positions stay masked;
    ``temperature`` is the level's, ``silence_code`` its gated code (-1: none). Returns the
    level's tokens ``(B, T)``. Shapes are static and
    nothing waits on the device, so the step can be compiled and captured.
    """
    logits = level_logits(model, context, target, instrument, level, settings.guidance, settings.guidance_form,
                          settings.unconditional_weight() != 0.0, settings.sampler == "fused",
                          context_shift_frames(settings, context.shape[-1]))
    t, v = logits.shape[1], logits.shape[2]
    if settings.sampler == "fused":
        step, noise = fused.sample_step, torch.ops.stemgen.hashed_uniform(seeds, t, v)
    else:
        step, noise = fused.reference_step, hashed_uniform(seeds, t, v)
    la, li = settings.branch_weights() if settings.guidance else (1.0, 1.0)
    current = target.index_select(1, level.reshape(1))[:, 0]  # (B, T) the level's tokens so far
    gate_t = -1.0 if settings.silence_temperature is None else float(settings.silence_temperature)
    return step(logits, current, noise, uniform, remain, la, li, temperature,
                settings.w_confidence, settings.w_position, settings.w_random, model.cfg.mask_id, silence_code, gate_t)


_COMPILED: dict = {}


def _step_function(settings: SamplingSettings, device: torch.device):
    if not settings.compile:
        return decode_step
    mode = "reduce-overhead" if device.type == "cuda" else None  # CUDA graphs where launches dominate
    if mode not in _COMPILED:
        # one graph per (model, settings, temperature, shape), every level sharing it: more than
        # dynamo's default limit of 8 in a session that samples with several models, which would
        # silently fall back to eager
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        # dynamic=None: only what decode_level marks (the batch dimension) is symbolic
        _COMPILED[mode] = torch.compile(decode_step, mode=mode, fullgraph=True, dynamic=None)
    return _COMPILED[mode]


@torch.no_grad()
def decode_level(model, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor, level: int,
                 settings: SamplingSettings, generator: Generators = None,
                 callback: Optional[StepCallback] = None, silence: Silence = None) -> torch.Tensor:
    """Decode the masked positions of one level; returns new target tokens ``(B, Q, T)``.

    Levels coarser than ``level`` must be decoded; positions of ``level`` already decoded are
    kept. Each example follows the cosine schedule over its own masked positions. The number of
    steps is fixed once per level (the schedule's steps until every example is fully decoded), so
    inside a level nothing waits on the device. Steps that commit nothing are skipped. With one
    generator per example (a sequence of B), an example draws noise only for the steps it needs
    itself, so its tokens do not depend on the other examples of the batch (up to the
    floating-point rounding of batched matrix products). ``silence``: the codec's silence code
    per level (``Codec.silence_codes()``), for ``settings.silence_gate``; without it the
    temperature is not gated. With ``settings.refine`` the level then gets its corrector pass
    (:func:`refine_level`).
    """
    mask_id = model.cfg.mask_id
    b, _, t = context.shape
    target = target.clone()
    free = target[:, level] == mask_id  # (B, T) positions this level decodes
    total = free.sum(-1)  # (B,)
    steps = int(settings.steps[level])
    totals = total.tolist()  # the level's one host synchronisation
    rows, own_steps, commits = level_schedule(totals, t, steps)  # rows: (S, B) left masked
    # steps after the one where every example is fully decoded would change nothing; so would a
    # step where no example commits a token (the schedule's count did not fall: frequent when a
    # window has fewer masked positions than the level has steps): its forward pass is skipped,
    # its noise still drawn so that later steps read the same stream
    n_steps = max(own_steps)
    remains = torch.tensor(rows, device=context.device)
    level_t = torch.tensor(level, device=context.device)
    temperature = float(settings.temperature[level])
    silence_code = int(silence[level]) if settings.silence_gate and silence is not None else -1
    step_fn = _step_function(settings, context.device)
    for step in range(n_steps):
        seeds, uniform = _step_noise(generator, (b, t), step, own_steps, context.device)
        if commits[step]:
            args = (context, target, instrument, seeds, uniform, remains[step])
            if settings.compile:  # the batch dimension symbolic: a new batch size reuses the graph
                for x in args:
                    torch._dynamo.maybe_mark_dynamic(x, 0)
            target[:, level] = step_fn(model, *args, level_t, temperature, settings, silence_code)
        if callback is not None:
            callback(level, step + 1, steps)
    if n_steps < steps and callback is not None:
        callback(level, steps, steps)
    return refine_level(model, context, target, instrument, level, free, settings, generator, silence)


@torch.no_grad()
def refine_level(model, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor, level: int,
                 free: torch.Tensor, settings: SamplingSettings, generator: Generators = None,
                 silence: Silence = None) -> torch.Tensor:
    """One corrector pass over a decoded level (``settings.refine[level]``, see
    :class:`SamplingSettings`); returns new target tokens ``(B, Q, T)``.

    ``free (B, T)`` marks the positions the level decoded (the others, a prefix, are kept and never
    scored). Blocks of ``settings.refine_block`` frames are scored in two passes, the even blocks
    masked and then the odd ones, so a block is judged by the context and its neighbours, not by
    itself: its score is the mean guided log-probability of its tokens. The worst
    ``ceil(fraction x blocks)`` blocks with a free position are masked again and decoded with
    ``ceil(fraction x steps)`` steps.
    """
    fraction = float(settings.refine[level]) if settings.refine else 0.0
    if fraction <= 0 or not bool(free.any()):
        return target
    mask_id = model.cfg.mask_id
    b, _, t = target.shape
    block = torch.arange(t, device=target.device) // int(settings.refine_block)  # (T,)
    n_blocks = int(block[-1]) + 1
    tokens = target[:, level]  # (B, T)
    score = torch.zeros(b, t, device=target.device)
    for parity in (0, 1):
        hide = free & (block % 2 == parity)  # (B, T)
        probe = target.clone()
        probe[:, level] = tokens.masked_fill(hide, mask_id)
        log_probs = level_log_probs(model, context, probe, instrument, level, settings)  # (B, T, V)
        score = torch.where(hide, log_probs.gather(-1, tokens.unsqueeze(-1))[..., 0], score)
    counts = torch.zeros(b, n_blocks, device=target.device).index_add_(1, block, free.float())
    sums = torch.zeros(b, n_blocks, device=target.device).index_add_(1, block, score * free)
    mean = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, math.inf))  # (B, n_blocks)
    k = ((counts > 0).sum(1).double() * fraction).ceil()  # (B,) blocks to decode again (as math.ceil)
    worst = mean.argsort(1).argsort(1) < k[:, None]  # (B, n_blocks): a block's rank below k
    remask = free & worst.gather(1, block.expand(b, t))
    target = target.clone()
    target[:, level] = tokens.masked_fill(remask, mask_id)
    steps = tuple(math.ceil(fraction * s) if q == level else s for q, s in enumerate(settings.steps))
    # once: the second decoding is not refined again
    return decode_level(model, context, target, instrument, level,
                        dataclasses.replace(settings, steps=steps, refine=()), generator, None, silence)


def _step_noise(generator: Generators, shape: tuple[int, int], step: int, own_steps: list[int],
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The randomness of one step: ``seeds (B,)`` int64 in [0, 2^32) for the candidates' noise
    (:func:`~stemgen.sampling.steps.hashed_uniform`) and ``uniform (B, T)`` for the ranking.

    Per-example generators draw for the examples that still decode at ``step``; the others
    (fully decoded: the noise is not read) get zeros without advancing their generator.
    """
    b, t = shape
    if generator is None or isinstance(generator, torch.Generator):
        return (torch.randint(0, 2**32, (b,), generator=generator, device=device),
                torch.rand(b, t, generator=generator, device=device))
    if len(generator) != b:
        raise ValueError(f"{len(generator)} generators for a batch of {b}: give one, or one per example.")
    seeds, uniform = torch.zeros(b, dtype=torch.int64, device=device), torch.zeros(b, t, device=device)
    for i, g in enumerate(generator):
        if step < own_steps[i]:
            seeds[i] = torch.randint(0, 2**32, (1,), generator=g, device=device)[0]
            uniform[i] = torch.rand(t, generator=g, device=device)
    return seeds, uniform


@torch.no_grad()
def decode_tokens(model, context: torch.Tensor, instrument: torch.Tensor, settings: SamplingSettings | None = None,
                  generator: Generators = None, prefix: torch.Tensor | None = None,
                  callback: Optional[StepCallback] = None, silence: Silence = None) -> torch.Tensor:
    """Generate target tokens ``(B, Q, T)`` for ``context (B, Q, T)`` and ``instrument (B,)``.

    ``prefix`` (``(B, Q, T)`` with the model's MASK id where free) fixes known target tokens
    (continuation, inpainting); they are never changed. ``silence``: see :func:`decode_level`.
    """
    levels = model.cfg.num_levels  # the context may carry its chroma row after them
    settings = (settings or SamplingSettings()).check(levels)
    target = torch.full_like(context[:, :levels], model.cfg.mask_id) if prefix is None else prefix.clone()
    for q in range(levels):
        target = decode_level(model, context, target, instrument, q, settings, generator, callback, silence)
    return target
