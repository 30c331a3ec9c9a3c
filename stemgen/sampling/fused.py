"""The per-step work after the forward pass as custom torch ops (namespace ``stemgen``).

* ``torch.ops.stemgen.candidates(logits, current, noise, lambda_context, lambda_instrument,
  temperature, mask_id, silence_code, silence_temperature) -> (tokens, confidence)``:
  ``logits (G*B, T, V)`` of G = 1 (naive) or 3 (guidance branches p(t|a), p(t|i), p(t)),
  ``current (B, T)`` tokens of the level (``mask_id`` where undecoded), ``noise (B, T, V)``
  uniform noise in [0, 1) (made into Gumbel noise inside), ``silence_code`` the level's silence
  code whose temperature is gated (:func:`~stemgen.sampling.steps.silence_gated`; -1: none) and
  ``silence_temperature`` the gate's own temperature (negative: ``temperature``). Returns the
  candidate ``tokens (B, T)`` and their probability ``confidence (B, T)`` under the guided,
  tempered distribution at masked positions (``current`` and 0 elsewhere).
* ``torch.ops.stemgen.hashed_uniform(seeds, frames, codes) -> noise``: the uniform noise
  ``(B, T, V)`` of :func:`~stemgen.sampling.steps.hashed_uniform` from one 32-bit seed per example
  (integer arithmetic: the same bits as the reference).
* ``torch.ops.stemgen.rank_commit(current, candidates, confidence, uniform, remain, w_confidence,
  w_position, w_random, mask_id) -> tokens``: the causal-bias ranking and commit, leaving
  ``remain (B,)`` positions masked.

:func:`sample_step` chains the two. Kernels: CPU, a C++ extension (``csrc/fused_step.cpp``)
built at first use with the CPU's vector instructions; CUDA, Triton (:mod:`.fused_triton`).
Where neither is available the eager reference (:func:`reference_candidates`,
:func:`reference_rank_commit`, built from :mod:`.steps`) runs instead, so the ops exist on every
machine. Fake (meta) implementations make the ops traceable by ``torch.compile`` and usable
inside CUDA graphs. ``STEMGEN_FUSED=0`` turns the compiled kernels off.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import torch

from ..cpu_kernels import enabled, load_extension
from .steps import (branch_log_probs, causal_bias_scores, commit, gumbel_from_uniform, hashed_uniform,
                    sample_candidates)

log = logging.getLogger(__name__)

CSRC = Path(__file__).parent / "csrc" / "fused_step.cpp"


# ---------------------------------------------------------------------------------------------
# the eager reference, op by op (the readable definition the kernels are tested against)

def reference_candidates(logits: torch.Tensor, current: torch.Tensor, noise: torch.Tensor, lambda_context: float,
                         lambda_instrument: float, temperature: float, mask_id: int, silence_code: int = -1,
                         silence_temperature: float = -1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager ``stemgen::candidates``: see the module docstring for shapes."""
    logp = branch_log_probs(logits, current.shape[0], lambda_context, lambda_instrument)
    tokens, conf = sample_candidates(logp, temperature, gumbel_from_uniform(noise), silence_code,
                                     silence_temperature if silence_temperature >= 0 else None)
    masked = current == mask_id
    return torch.where(masked, tokens, current), torch.where(masked, conf, torch.zeros_like(conf))


def reference_rank_commit(current: torch.Tensor, candidates: torch.Tensor, confidence: torch.Tensor,
                          uniform: torch.Tensor, remain: torch.Tensor, w_confidence: float, w_position: float,
                          w_random: float, mask_id: int) -> torch.Tensor:
    """Eager ``stemgen::rank_commit``."""
    scores = causal_bias_scores(confidence.float(), uniform.float(), w_confidence, w_position, w_random)
    return commit(current, candidates, scores, mask_id, remain)


def reference_step(logits, current, noise, uniform, remain, lambda_context, lambda_instrument, temperature,
                   w_confidence, w_position, w_random, mask_id, silence_code=-1,
                   silence_temperature=-1.0) -> torch.Tensor:
    """The eager reference of one whole step after the forward pass; new ``current (B, T)``."""
    cand, conf = reference_candidates(logits, current, noise, lambda_context, lambda_instrument, temperature, mask_id,
                                      silence_code, silence_temperature)
    return reference_rank_commit(current, cand, conf, uniform, remain, w_confidence, w_position, w_random, mask_id)


# ---------------------------------------------------------------------------------------------
# kernels

@lru_cache(maxsize=None)
def cpu_extension():
    """The compiled CPU kernels (built once per machine and torch version, then cached in
    :func:`stemgen.cpu_kernels.build_directory`), or None with a warning when they cannot be built."""
    return load_extension("stemgen_fused", CSRC, "fused CPU sampling kernels")


@lru_cache(maxsize=None)
def triton_kernels():
    """The Triton kernels for CUDA (:mod:`.fused_triton`), or None without Triton."""
    if not enabled():
        return None
    try:
        from . import fused_triton
    except ImportError as err:
        log.warning("stemgen: Triton is not available (%s); CUDA sampling uses the eager reference.", err)
        return None
    return fused_triton


def backend(device: torch.device | str) -> str:
    """Which implementation ``stemgen::candidates`` runs on ``device``: "cpp", "triton" or "eager"."""
    device = torch.device(device)
    if device.type == "cpu" and cpu_extension() is not None:
        return "cpp"
    if device.type == "cuda" and triton_kernels() is not None:
        return "triton"
    return "eager"


# ---------------------------------------------------------------------------------------------
# the ops

@torch.library.custom_op("stemgen::candidates", mutates_args=())
def candidates(logits: torch.Tensor, current: torch.Tensor, noise: torch.Tensor, lambda_context: float,
               lambda_instrument: float, temperature: float, mask_id: int, silence_code: int = -1,
               silence_temperature: float = -1.0) -> tuple[torch.Tensor, torch.Tensor]:
    kind = backend(logits.device)
    if kind == "cpp":
        return tuple(cpu_extension().candidates(logits, current, noise, lambda_context, lambda_instrument,
                                                temperature, mask_id, silence_code, silence_temperature))
    if kind == "triton":
        return triton_kernels().candidates(logits, current, noise, lambda_context, lambda_instrument, temperature,
                                           mask_id, silence_code, silence_temperature)
    return reference_candidates(logits, current, noise, lambda_context, lambda_instrument, temperature, mask_id,
                                silence_code, silence_temperature)


@candidates.register_fake
def _(logits, current, noise, lambda_context, lambda_instrument, temperature, mask_id, silence_code=-1,
      silence_temperature=-1.0):
    torch._check(logits.shape[0] == current.shape[0] or logits.shape[0] == 3 * current.shape[0])
    return torch.empty_like(current), torch.empty(current.shape, dtype=torch.float32, device=current.device)


@torch.library.custom_op("stemgen::hashed_uniform", mutates_args=())
def hashed_uniform_op(seeds: torch.Tensor, frames: int, codes: int) -> torch.Tensor:
    if seeds.device.type == "cpu" and cpu_extension() is not None:
        return cpu_extension().hashed_uniform(seeds, frames, codes)
    # on CUDA a handful of elementwise kernels (one, compiled), no host synchronisation
    return hashed_uniform(seeds, frames, codes)


@hashed_uniform_op.register_fake
def _(seeds, frames, codes):
    return torch.empty((seeds.shape[0], frames, codes), dtype=torch.float32, device=seeds.device)


@torch.library.custom_op("stemgen::rank_commit", mutates_args=())
def rank_commit(current: torch.Tensor, candidates: torch.Tensor, confidence: torch.Tensor, uniform: torch.Tensor,
                remain: torch.Tensor, w_confidence: float, w_position: float, w_random: float,
                mask_id: int) -> torch.Tensor:
    if current.device.type == "cpu" and cpu_extension() is not None:
        return cpu_extension().rank_commit(current, candidates, confidence, uniform, remain, w_confidence, w_position,
                                           w_random, mask_id)
    # on CUDA the eager ranking is a handful of (B, T) kernels with no host synchronisation
    return reference_rank_commit(current, candidates, confidence, uniform, remain, w_confidence, w_position,
                                 w_random, mask_id)


@rank_commit.register_fake
def _(current, candidates, confidence, uniform, remain, w_confidence, w_position, w_random, mask_id):
    return torch.empty_like(current)


def sample_step(logits: torch.Tensor, current: torch.Tensor, noise: torch.Tensor, uniform: torch.Tensor,
                remain: torch.Tensor, lambda_context: float, lambda_instrument: float, temperature: float,
                w_confidence: float, w_position: float, w_random: float, mask_id: int,
                silence_code: int = -1, silence_temperature: float = -1.0) -> torch.Tensor:
    """One whole step after the forward pass through the fused ops; new ``current (B, T)``.

    Same arguments and result as :func:`reference_step`.
    """
    cand, conf = torch.ops.stemgen.candidates(logits, current, noise, lambda_context, lambda_instrument, temperature,
                                              mask_id, silence_code, silence_temperature)
    return torch.ops.stemgen.rank_commit(current, cand, conf, uniform, remain, w_confidence, w_position, w_random,
                                         mask_id)
