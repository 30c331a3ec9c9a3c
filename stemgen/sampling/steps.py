"""The per-step pieces of causally biased iterative decoding (paper section 2.1.1-2.1.2).

Each is a small pure function over one token level; randomness comes in as explicit tensors
or generators so that a seed reproduces a generation. Shapes: B batch, T frames, V codes.
"""

from __future__ import annotations

import math

import torch


def masked_counts(num_frames: int, steps: int) -> list[int]:
    """Positions still masked after each of ``steps`` steps: floor(T cos(pi/2 (s+1)/S)); 0 after the last."""
    if steps < 1:
        raise ValueError(f"a level needs at least one decoding step, got {steps}")
    counts = [int(math.floor(num_frames * math.cos(math.pi / 2 * (s + 1) / steps))) for s in range(steps)]
    counts[-1] = 0
    return counts


def level_schedule(totals: list[int], num_frames: int, steps: int) -> tuple[list[list[int]], list[int], list[bool]]:
    """The cosine schedule of one level for a batch whose examples have ``totals`` (B) masked
    positions out of ``num_frames``. Returns ``remain`` (S x B: positions left masked after each
    step, scaled to each example's own count), ``own_steps`` (B: the steps until each example is
    fully decoded, 0 if it has nothing to decode) and ``commits`` (S: whether any example commits
    a token at that step; a step where none does changes nothing)."""
    remain = [[(n * count) // num_frames for n in totals] for count in masked_counts(num_frames, steps)]
    own_steps = [0 if n == 0 else next(s for s, row in enumerate(remain) if row[i] == 0) + 1
                 for i, n in enumerate(totals)]
    commits = [any(now < before for now, before in zip(row, prev)) for row, prev in zip(remain, [totals] + remain)]
    return remain, own_steps, commits


def guided_log_probs(cond_context: torch.Tensor, cond_instrument: torch.Tensor, uncond: torch.Tensor,
                     lambda_context: float, lambda_instrument: float) -> torch.Tensor:
    """Multi-source classifier-free guidance (paper eq. 3) over normalised log-probabilities.

    ``lambda_a log p(t|a) + lambda_i log p(t|i) + (1 - lambda_a - lambda_i) log p(t)`` from the
    three branches' logits ``(..., V)``, renormalised to a distribution.
    """
    la, li = lambda_context, lambda_instrument
    combined = (la * cond_context.float().log_softmax(-1) + li * cond_instrument.float().log_softmax(-1)
                + (1.0 - la - li) * uncond.float().log_softmax(-1))
    return combined.log_softmax(-1)


def branch_log_probs(logits: torch.Tensor, batch: int, lambda_context: float, lambda_instrument: float) -> torch.Tensor:
    """Log-probabilities ``(B, T, V)`` from the logits of one pass ``(B, T, V)`` (p(t|a,i), naive)
    or of the three guidance branches stacked as ``(3B, T, V)`` (combined by :func:`guided_log_probs`)."""
    if logits.shape[0] == 3 * batch:
        return guided_log_probs(*logits.split(batch), lambda_context, lambda_instrument)
    return logits.float().log_softmax(-1)


def sample_candidates(log_probs: torch.Tensor, temperature: float, gumbel: torch.Tensor, silence_code: int = -1,
                      silence_temperature: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One candidate per position and its probability under the tempered distribution.

    ``log_probs (B, T, V)``; ``gumbel (B, T, V)`` standard Gumbel noise (see :func:`gumbel_noise`);
    temperature 0 picks the most likely token. Returns ``(tokens (B, T), prob (B, T))``.

    ``silence_code`` (the codec's code for silence at this level; -1: none) gates the temperature
    (:func:`silence_gated`): it then sharpens *whether* the stem sounds (at ``silence_temperature``,
    by default ``temperature``) and *what* it plays (at ``temperature``) as two decisions, instead
    of letting one code (silence) compete with every single pitched code. With both temperatures
    1 the gate changes nothing; at temperature 0 the stem is silent where silence is more likely
    than sound, and plays the most likely sounding code elsewhere (whatever the silence
    temperature); the probability returned at temperature 0 is the untempered one, as without
    the gate.
    """
    gate_t = temperature if silence_temperature is None else silence_temperature
    if temperature <= 0:
        tempered = log_probs.log_softmax(-1)
        tokens = tempered.argmax(-1)
        if silence_code >= 0:
            ls = tempered[..., silence_code]
            sounding = tempered.index_fill(-1, _index(silence_code, tempered), float("-inf")).argmax(-1)
            tokens = torch.where(ls > _log1mexp(ls), torch.full_like(sounding, silence_code), sounding)
    else:
        if silence_code >= 0 and (temperature != 1 or gate_t != 1):
            tempered = silence_gated(log_probs, temperature, silence_code, gate_t)
        else:
            tempered = (log_probs / temperature).log_softmax(-1)
        tokens = (tempered + gumbel).argmax(-1)
    return tokens, tempered.gather(-1, tokens[..., None])[..., 0].exp()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate at both ends (Maechler's two branches)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def silence_gated(log_probs: torch.Tensor, temperature: float, silence_code: int,
                  silence_temperature: float | None = None) -> torch.Tensor:
    """The tempered log-distribution ``(..., V)`` with temperature acting on two decisions.

    With p = softmax(log_probs) and s the silence code: whether the stem sounds, tempered as a
    two-way choice at ``g = silence_temperature`` (default: ``temperature``), ``P(silent) ∝
    p_s^(1/g)`` against ``(1 - p_s)^(1/g)``; and what it plays, ``∝ p_v^(1/t)`` over the other
    codes at ``t = temperature``. Plain tempering compares p_s^(1/t) with each sounding
    code's own p_v^(1/t): a bass silent with probability 0.07 and spread over many pitched codes
    becomes silence at temperature 0.5, which iterative decoding then copies over the whole
    window (measured on the demo model: docs/listening.md).
    """
    lp = log_probs.log_softmax(-1)
    ls = lp[..., silence_code]  # (...) log p_s
    g = temperature if silence_temperature is None else silence_temperature
    gate = (torch.stack([ls, _log1mexp(ls)], -1) / g).log_softmax(-1)  # (..., 2) silent, sounding
    rest = lp.index_fill(-1, _index(silence_code, lp), float("-inf"))
    tempered = (rest / temperature).log_softmax(-1) + gate[..., 1:]
    return tempered.index_copy(-1, _index(silence_code, lp), gate[..., :1])


def _index(code: int, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([code], device=like.device)


def gumbel_from_uniform(uniform: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log U)`` from uniform noise in [0, 1) (clamped away from 0 and 1)."""
    u = uniform.float().clamp(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


_M32 = 0xFFFFFFFF


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser (a bijection with full avalanche) on uint32 values held in int64."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _M32  # int64 products wrap; their low 32 bits are exact
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


def hashed_uniform(seeds: torch.Tensor, frames: int, codes: int) -> torch.Tensor:
    """Uniform noise ``(B, T, V)`` in [0, 1) from one 32-bit seed per example ``seeds (B,)`` (int64
    in [0, 2^32)): a counter-based generator, ``u = (h >> 8) / 2^24`` with
    ``h = fmix32(fmix32(t V + v) XOR seed)``.

    Integer arithmetic and an exact conversion, so every implementation (this one, the C++ op
    ``stemgen::hashed_uniform``, a compiled graph) and every machine gives the same bits. Drawing
    ``B x T x V`` numbers from a torch generator cost 1.5 ms of a ~20 ms decoding step of the demo
    model on 2 CPU cores; the hash, computed where it is needed, a fraction of that.
    """
    if frames * codes > 2**32:
        raise ValueError(f"hashed_uniform: {frames} x {codes} positions exceed the 32-bit counter.")
    counter = torch.arange(frames * codes, device=seeds.device, dtype=torch.int64).view(frames, codes)
    h = _fmix32(_fmix32(counter)[None] ^ (seeds.to(torch.int64) & _M32)[:, None, None])
    return (h >> 8).to(torch.float32) * 2.0**-24


def gumbel_noise(shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Standard Gumbel noise of ``shape`` drawn from ``generator``."""
    return gumbel_from_uniform(torch.rand(shape, generator=generator, device=device))


def causal_bias_scores(confidence: torch.Tensor, uniform: torch.Tensor, w_confidence: float = 0.1,
                       w_position: float = 0.1, w_random: float = 1.0) -> torch.Tensor:
    """Ranking rho = w_c c + w_s (1 - n/T) + w_r U for candidates ``(B, T)`` (earlier frames score higher)."""
    t = confidence.shape[-1]
    position = 1.0 - torch.arange(t, device=confidence.device, dtype=confidence.dtype) / t
    return w_confidence * confidence + w_position * position + w_random * uniform


def commit(current: torch.Tensor, candidates: torch.Tensor, scores: torch.Tensor, mask_id: int,
           remain_masked: "int | torch.Tensor") -> torch.Tensor:
    """Commit the top-scored candidates at masked positions so that ``remain_masked`` (an int, or
    ``(B,)`` per example) stay masked.

    ``current (B, T)`` tokens of the level being decoded (``mask_id`` where undecoded). Decoded
    positions never compete and never change.
    """
    masked = current == mask_id
    n_masked = masked.sum(-1)  # (B,)
    n_commit = (n_masked - remain_masked).clamp_min(0)  # (B,)
    ranked = scores.masked_fill(~masked, float("-inf")).argsort(-1, descending=True)  # (B, T)
    rank_of = ranked.argsort(-1)  # position -> its rank
    chosen = masked & (rank_of < n_commit[:, None])
    return torch.where(chosen, candidates, current)
