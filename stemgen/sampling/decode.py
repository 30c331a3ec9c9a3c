"""The eager reference decoder: level by level, step by step (paper section 2.1.1).

Built from the pure functions in :mod:`stemgen.sampling.steps`. Guidance runs the three branches
of paper eq. 3 as one batch: p(t|a) (instrument dropped), p(t|i) (context dropped) and p(t)
(both dropped). ``guidance=False`` is the naive setting: one fully conditioned pass p(t|a,i).
Shapes: B batch, Q levels, T frames, V codes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch

from ..instruments import NULL_ID
from . import fused
from .steps import branch_log_probs, masked_counts

# callback(level, step, steps_of_level) after every committed step
StepCallback = Callable[[int, int, int], None]


@dataclass
class SamplingSettings:
    """Decoding settings; the defaults are the paper's *best* setting (section 3.2.1).

    Attributes:
        steps: decoding steps per level (paper: 128, 64, 32, 32).
        guidance: multi-source classifier-free guidance (paper eq. 3); False runs one fully
            conditioned pass p(t|a,i) per step (the paper's *naive* setting).
        lambda_context: guidance scale of the audio context, lambda_a (paper: 3).
        lambda_instrument: guidance scale of the instrument, lambda_i (paper: 3).
        temperature: per level; 0 picks the most likely token.
        w_confidence: ranking weight of the candidate's probability, w_c (paper: 0.1).
        w_position: causal-bias weight, w_s (paper: 0.1; 0 is VampNet-like).
        w_random: ranking weight of the uniform noise, w_r (paper: 1.0).
        sampler: how the per-step work after the forward pass runs: "fused" (the
            ``torch.ops.stemgen`` ops: compiled C++ on CPU, Triton on CUDA, the eager reference where
            neither builds) or "eager" (the reference functions of :mod:`.steps`). Both commit the
            same tokens from the same noise.
        compile: run each decoding step (forward pass of all branches + the step ops) through
            ``torch.compile``; on CUDA with CUDA graphs ("reduce-overhead"). The first level pays the
            compilation.
    """

    steps: tuple[int, ...] = (128, 64, 32, 32)
    guidance: bool = True
    lambda_context: float = 3.0
    lambda_instrument: float = 3.0
    temperature: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    w_confidence: float = 0.1
    w_position: float = 0.1
    w_random: float = 1.0
    sampler: str = "fused"
    compile: bool = False

    @classmethod
    def naive(cls, **overrides) -> "SamplingSettings":
        """The paper's *naive* setting: no guidance, no causal bias."""
        return cls(**{"guidance": False, "w_position": 0.0, **overrides})

    def check(self, num_levels: int) -> "SamplingSettings":
        """Validate against a model with ``num_levels`` levels; returns ``self``.

        Raises ValueError naming the bad setting.
        """
        if len(self.steps) != num_levels or len(self.temperature) != num_levels:
            raise ValueError(f"steps and temperature need one value per level ({num_levels}); got "
                             f"{len(self.steps)} and {len(self.temperature)}.")
        if any(int(s) < 1 for s in self.steps):
            raise ValueError(f"every level needs at least one decoding step, got steps={self.steps}.")
        if any(not t >= 0 for t in self.temperature):
            raise ValueError(f"temperatures must be >= 0, got {self.temperature}.")
        weights = (self.lambda_context, self.lambda_instrument, self.w_confidence, self.w_position, self.w_random)
        if any(not torch.isfinite(torch.tensor(float(w))) for w in weights):
            raise ValueError(f"guidance scales and ranking weights must be finite numbers, got {weights}.")
        if self.sampler not in ("fused", "eager"):
            raise ValueError(f"sampler must be 'fused' or 'eager', got {self.sampler!r}.")
        return self

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def level_logits(model, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor, level: int,
                 guidance: bool) -> torch.Tensor:
    """Logits of level ``level``: ``(B, T, V)`` for p(t|a,i), or with guidance the three branches
    p(t|a), p(t|i), p(t) stacked as ``(3B, T, V)`` and run as one batch."""
    if not guidance:
        return model(context, target, instrument, level=level)
    b = context.shape[0]
    null_inst = torch.full_like(instrument, NULL_ID)
    ctx3, tgt3 = context.repeat(3, 1, 1), target.repeat(3, 1, 1)
    inst3 = torch.cat([null_inst, instrument, null_inst])
    drop3 = torch.cat([torch.zeros(b, dtype=torch.bool, device=context.device),
                       torch.ones(2 * b, dtype=torch.bool, device=context.device)])
    return model(ctx3, tgt3, inst3, drop_context=drop3, level=level)  # (3B, T, V)


@torch.no_grad()
def level_log_probs(model, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor, level: int,
                    settings: SamplingSettings) -> torch.Tensor:
    """Log-probabilities ``(B, T, V)`` of level ``level`` given the current target tokens."""
    logits = level_logits(model, context, target, instrument, level, settings.guidance)
    return branch_log_probs(logits, context.shape[0], settings.lambda_context, settings.lambda_instrument)


def decode_step(model, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor, noise: torch.Tensor,
                uniform: torch.Tensor, remain: torch.Tensor, level: int, settings: SamplingSettings) -> torch.Tensor:
    """One decoding step of level ``level``: forward pass, then candidates, ranking and commit.

    ``noise (B, T, V)`` and ``uniform (B, T)`` are uniform noise in [0, 1) for the candidates and
    the ranking; ``remain (B,)`` positions stay masked. Returns the level's tokens ``(B, T)``.
    Shapes are static and nothing waits on the device, so the step can be compiled and captured.
    """
    logits = level_logits(model, context, target, instrument, level, settings.guidance)
    step = fused.sample_step if settings.sampler == "fused" else fused.reference_step
    la, li = (settings.lambda_context, settings.lambda_instrument) if settings.guidance else (1.0, 1.0)
    return step(logits, target[:, level], noise, uniform, remain, la, li, float(settings.temperature[level]),
                settings.w_confidence, settings.w_position, settings.w_random, model.cfg.mask_id)


_COMPILED: dict = {}


def _step_function(settings: SamplingSettings, device: torch.device):
    if not settings.compile:
        return decode_step
    mode = "reduce-overhead" if device.type == "cuda" else None  # CUDA graphs where launches dominate
    if mode not in _COMPILED:
        # one graph per (model, level, settings, shape): more than dynamo's default limit of 8
        # in a session that samples with several models, which would silently fall back to eager
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        _COMPILED[mode] = torch.compile(decode_step, mode=mode, fullgraph=True, dynamic=False)
    return _COMPILED[mode]


@torch.no_grad()
def decode_level(model, context: torch.Tensor, target: torch.Tensor, instrument: torch.Tensor, level: int,
                 settings: SamplingSettings, generator: torch.Generator | None = None,
                 callback: Optional[StepCallback] = None) -> torch.Tensor:
    """Decode the masked positions of one level; returns new target tokens ``(B, Q, T)``.

    Levels coarser than ``level`` must be decoded; positions of ``level`` already decoded are
    kept. Each example follows the cosine schedule over its own masked positions. The number of
    steps is fixed once per level (the schedule's steps until every example is fully decoded), so
    inside a level nothing waits on the device and the noise drawn depends only on the shapes.
    """
    mask_id = model.cfg.mask_id
    b, _, t = context.shape
    v = model.cfg.cardinality
    target = target.clone()
    total = (target[:, level] == mask_id).sum(-1)  # (B,) positions this level decodes
    steps = int(settings.steps[level])
    totals = total.tolist()  # the level's one host synchronisation
    rows = [[(n * count) // t for n in totals] for count in masked_counts(t, steps)]  # (S, B) left masked
    # steps after the one where every example is fully decoded would change nothing
    n_steps = 0 if max(totals) == 0 else next(s for s, row in enumerate(rows) if max(row) == 0) + 1
    remains = torch.tensor(rows, device=context.device)
    step_fn = _step_function(settings, context.device)
    for step in range(n_steps):
        noise = torch.rand(b, t, v, generator=generator, device=context.device)
        uniform = torch.rand(b, t, generator=generator, device=context.device)
        tokens = step_fn(model, context, target, instrument, noise, uniform, remains[step], level, settings)
        target[:, level] = tokens
        if callback is not None:
            callback(level, step + 1, steps)
    if n_steps < steps and callback is not None:
        callback(level, steps, steps)
    return target


@torch.no_grad()
def decode_tokens(model, context: torch.Tensor, instrument: torch.Tensor, settings: SamplingSettings | None = None,
                  generator: torch.Generator | None = None, prefix: torch.Tensor | None = None,
                  callback: Optional[StepCallback] = None) -> torch.Tensor:
    """Generate target tokens ``(B, Q, T)`` for ``context (B, Q, T)`` and ``instrument (B,)``.

    ``prefix`` (``(B, Q, T)`` with the model's MASK id where free) fixes known target tokens
    (continuation, inpainting); they are never changed.
    """
    settings = (settings or SamplingSettings()).check(context.shape[1])
    target = torch.full_like(context, model.cfg.mask_id) if prefix is None else prefix.clone()
    for q in range(context.shape[1]):
        target = decode_level(model, context, target, instrument, q, settings, generator, callback)
    return target
