"""Sampling settings: the public configuration of decoding (:class:`SamplingSettings`), and the
short arguments of ``generate`` that override it (:func:`override`)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from numbers import Real
from typing import Optional, Sequence, Union

import torch


@dataclass
class SamplingSettings:
    """Decoding settings; the defaults are the paper's *best* setting (section 3.2.1).

    Attributes:
        steps: decoding steps per level (paper: 128, 64, 32, 32).
        guidance: multi-source classifier-free guidance; False runs one fully conditioned pass
            p(t|a,i) per step (the paper's *naive* setting).
        guidance_form: how the guidance branches combine. "paper" (eq. 3): ``lambda_a log p(t|a)
            + lambda_i log p(t|i) + (1 - lambda_a - lambda_i) log p(t)``, the branches each
            dropping one condition. "nested": ``log p(t) + lambda_i (log p(t|i) - log p(t)) +
            lambda_a (log p(t|a,i) - log p(t|i))``, the context's guidance measured with the
            instrument given (as in InstructPix2Pix's two-condition guidance); scales of 1 give
            the naive p(t|a,i), lambda_a > 1 pushes towards what the context, not the instrument
            alone, makes likely. "shifted": nested guidance whose reference for the context is
            the same context shifted in time (by ``context_shift`` of the window, wrapping round)
            instead of no context: ``log p(t) + lambda_i (log p(t|a',i) - log p(t)) + lambda_a
            (log p(t|a,i) - log p(t|a',i))``. The misaligned copy is the same music (key,
            texture, instruments), so lambda_a > 1 pushes towards what fits this moment of the
            context rather than the piece as a whole; the same cost as "nested".
        lambda_context: guidance scale of the audio context, lambda_a (paper: 3).
        lambda_instrument: guidance scale of the instrument, lambda_i (paper: 3).
        temperature: per level; 0 picks the most likely token.
        silence_gate: temperature acts on two decisions, whether the stem sounds (the codec's
            silence code against all the others together) and what it plays (among the others),
            instead of on each code alone, where one silence code outweighs every single pitched
            code once sharpened and the silence is then copied over the whole window. Changes
            nothing where the temperature and ``silence_temperature`` are both 1
            (:func:`~stemgen.sampling.steps.silence_gated`).
        silence_temperature: the temperature of the gate's decision (whether the stem sounds),
            > 0; None: the level's temperature. Below 1 a stem falls silent only where the model
            is sure of it: one silent token committed early makes a trained model expect silence
            over the whole window, which decoding then copies (docs/listening.md).
        w_confidence: ranking weight of the candidate's probability, w_c (paper: 0.1).
        w_position: causal-bias weight, w_s (paper: 0.1; 0 is VampNet-like).
        w_random: ranking weight of the uniform noise, w_r (paper: 1.0).
        refine: per level (or empty: none), the fraction of a window's decoded blocks that are
            decoded once more after the level is complete: each block of ``refine_block`` frames is
            scored by the guided log-probability of its tokens with the block masked and its
            neighbours given, and the worst-fitting fraction is masked again and re-decoded with
            that fraction of the level's steps (a corrector pass: tokens committed early, with
            little of the stem known, are revisited once the rest is there).
        refine_block: frames per block of ``refine`` (25: half a second at 50 Hz).
        context_shift: for ``guidance_form="shifted"``, how far the reference context is shifted,
            as a fraction of the window (0.5: half a window, 2 s of a 4 s window), in (0, 1).
        sampler: how the per-step work after the forward pass runs: "fused" (the
            ``torch.ops.stemgen`` ops: compiled C++ on CPU, Triton on CUDA, the eager reference where
            neither builds), with the model's fused attention kernel where it applies (CPU: bf16
            with AVX512-BF16, float32 with AVX2; :mod:`stemgen.model.attention`), or "eager" (the
            reference functions of :mod:`.steps` and the reference attention). Both commit the same
            tokens from the same noise, except where the fused attention's rounding tips a near-tie.
        compile: run each decoding step (forward pass of all branches + the step ops) through
            ``torch.compile``; on CUDA with CUDA graphs ("reduce-overhead"). The first level pays the
            compilation.
    """

    steps: tuple[int, ...] = (128, 64, 32, 32)
    guidance: bool = True
    guidance_form: str = "paper"
    lambda_context: float = 3.0
    lambda_instrument: float = 3.0
    temperature: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    silence_gate: bool = True
    silence_temperature: Optional[float] = None
    w_confidence: float = 0.1
    w_position: float = 0.1
    w_random: float = 1.0
    refine: tuple[float, ...] = ()
    refine_block: int = 25
    context_shift: float = 0.5
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
        if len(self.refine) not in (0, num_levels) or any(not 0.0 <= r <= 1.0 for r in self.refine):
            raise ValueError(f"refine needs one fraction in [0, 1] per level ({num_levels}) or none; got {self.refine}.")
        if int(self.refine_block) < 1:
            raise ValueError(f"refine_block must be at least one frame, got {self.refine_block}.")
        if not 0.0 < self.context_shift < 1.0:
            raise ValueError(f"context_shift is a fraction of the window in (0, 1), got {self.context_shift}.")
        if self.silence_temperature is not None and not self.silence_temperature > 0:
            raise ValueError(f"silence_temperature must be > 0 (or None: the level's temperature), got "
                             f"{self.silence_temperature}.")
        weights = (self.lambda_context, self.lambda_instrument, self.w_confidence, self.w_position, self.w_random)
        if any(not torch.isfinite(torch.tensor(float(w))) for w in weights):
            raise ValueError(f"guidance scales and ranking weights must be finite numbers, got {weights}.")
        if self.guidance_form not in GUIDANCE_FORMS:
            raise ValueError(f"guidance_form must be one of {GUIDANCE_FORMS}, got {self.guidance_form!r}.")
        if self.sampler not in ("fused", "eager"):
            raise ValueError(f"sampler must be 'fused' or 'eager', got {self.sampler!r}.")
        return self

    def branch_weights(self) -> tuple[float, float]:
        """The weights ``(w0, w1)`` of the first two guidance branches' log-probabilities as the
        step ops combine them, ``w0 b0 + w1 b1 + (1 - w0 - w1) b2`` (:func:`~.steps.guided_log_probs`):
        for "paper" the branches are p(t|a), p(t|i), p(t) and the weights the scales; for
        "nested" they are p(t|a,i), p(t|i), p(t) and the weights ``(lambda_a, lambda_i - lambda_a)``;
        "shifted" as "nested" with p(t|a',i) (the shifted context) in place of p(t|i).
        """
        if self.guidance_form in NESTED_FORMS:
            return self.lambda_context, self.lambda_instrument - self.lambda_context
        return self.lambda_context, self.lambda_instrument

    def unconditional_weight(self) -> float:
        """The weight of the p(t) branch, ``1 - w0 - w1`` of :meth:`branch_weights`: ``1 - lambda_i``
        for "nested" and "shifted", ``1 - lambda_a - lambda_i`` for "paper". Where it is 0 the branch
        need not be run."""
        if self.guidance_form in NESTED_FORMS:
            return 1.0 - self.lambda_instrument
        return 1.0 - self.lambda_context - self.lambda_instrument

    def runs_null_instrument(self) -> bool:
        """Whether sampling runs a branch with the instrument left out: p(t|a) of the "paper" form,
        or p(t) where :meth:`unconditional_weight` is not 0 (``decode.level_logits`` builds them)."""
        return self.guidance and (self.guidance_form == "paper" or self.unconditional_weight() != 0.0)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def updated(self, fields: dict, num_levels: int, source: str = "the settings") -> "SamplingSettings":
        """A copy with ``fields`` (``{name: value}`` as JSON gives them: lists for the per-level
        tuples) replaced, validated for ``num_levels`` levels. Raises ValueError naming an
        unknown field (and ``source``) or a bad value."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise ValueError(f"{source}: unknown sampling setting(s) {unknown}; the settings are {sorted(names)}.")
        kw = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in fields.items()}
        return dataclasses.replace(self, **kw).check(num_levels)

    @classmethod
    def paper(cls, num_levels: int = 4) -> "SamplingSettings":
        """The paper's best setting for a codec of ``num_levels`` levels (its per-level steps
        128, 64, 32, 32, the last one repeated beyond four levels)."""
        steps = tuple(PAPER_STEPS[min(i, len(PAPER_STEPS) - 1)] for i in range(num_levels))
        return cls(steps=steps, temperature=(1.0,) * num_levels)


#: how the guidance branches combine (:attr:`SamplingSettings.guidance_form`)
GUIDANCE_FORMS = ("paper", "nested", "shifted")
#: the forms weighted as nested guidance (:meth:`SamplingSettings.branch_weights`)
NESTED_FORMS = ("nested", "shifted")

#: the paper's decoding steps per level (section 3.2.1)
PAPER_STEPS = (128, 64, 32, 32)

PerLevel = Union[float, Sequence[float], None]


def override(settings: SamplingSettings, num_levels: int, *, steps: PerLevel = None, guidance=None,
             causal_bias: Optional[float] = None, temperature: PerLevel = None, sampler: Optional[str] = None,
             compile: Optional[bool] = None, silence_gate: Optional[bool] = None,
             silence_temperature: Optional[float] = None) -> SamplingSettings:
    """``settings`` with the short arguments of ``generate`` that were given (not None) applied,
    validated for ``num_levels`` levels. Arguments left at None leave ``settings`` as it is.

    Args:
        steps: one int for every level, or one per level.
        guidance: ``True`` (on, with the scales of ``settings``), a number (both scales),
            ``(lambda_a, lambda_i)``, or ``False`` (off: the naive single pass).
        causal_bias: the ranking's position weight w_s.
        temperature: one for every level, or one per level.
        sampler: "fused" or "eager".
        compile: compile each decoding step.
        silence_gate: temper whether the stem sounds apart from what it plays (see
            :func:`~stemgen.sampling.steps.silence_gated`).
        silence_temperature: the gate's own temperature (> 0); also turns the gate on.
    """
    def per_level(value, cast):
        return tuple(cast(x) for x in ([value] * num_levels if isinstance(value, Real) else value))

    kw = {}
    if steps is not None:
        kw["steps"] = per_level(steps, int)
    if temperature is not None:
        kw["temperature"] = per_level(temperature, float)
    if causal_bias is not None:
        kw["w_position"] = float(causal_bias)
    if guidance is False:
        kw["guidance"] = False
    elif guidance is True:
        kw["guidance"] = True
    elif guidance is not None:
        scales = [guidance] * 2 if isinstance(guidance, Real) else list(guidance)
        if len(scales) != 2:
            raise ValueError(f"guidance must be True, False, one scale or (lambda_a, lambda_i); got {guidance!r}.")
        kw.update(guidance=True, lambda_context=float(scales[0]), lambda_instrument=float(scales[1]))
    if sampler is not None:
        kw["sampler"] = sampler
    if compile is not None:
        kw["compile"] = bool(compile)
    if silence_gate is not None:
        kw["silence_gate"] = bool(silence_gate)
    if silence_temperature is not None:
        if silence_gate is False:
            raise ValueError("silence_temperature is the silence gate's temperature: drop it, or leave the gate on.")
        kw.update(silence_gate=True, silence_temperature=float(silence_temperature))
    return dataclasses.replace(settings, **kw).check(num_levels)
